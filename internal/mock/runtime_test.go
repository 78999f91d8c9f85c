package mock_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/mock"
)

// TestRuntime_Exit covers what the conformance suite cannot ask of every
// runtime: a container made to exit by the test, and the counters.
func TestRuntime_Exit(t *testing.T) {
	rt := mock.NewRuntime(nil)
	t.Cleanup(rt.Close)
	ctx := context.Background()
	inst, err := rt.Start(ctx, gust.ContainerSpec{Name: "a", Image: "img", Port: 8080, Labels: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+inst.Addr+"/x/y", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello" || resp.Header.Get(mock.HeaderPath) != "/x/y" || resp.Header.Get(mock.HeaderContainer) != inst.ID {
		t.Errorf("answer: got %q %v, want the body echoed with path and container", body, resp.Header)
	}
	if !rt.Exit(inst.ID, 7) {
		t.Fatal("Exit of a running container: got false")
	}
	exit, err := rt.Wait(ctx, inst.ID)
	if err != nil || exit.Code != 7 {
		t.Errorf("Wait: got %+v, %v, want code 7", exit, err)
	}
	if rt.Exit(inst.ID, 1) {
		t.Error("second Exit: got true, want false")
	}
	if _, err := http.Get("http://" + inst.Addr + "/"); err == nil {
		t.Error("call after exit: got an answer, want a connection error")
	}
	if err := rt.Remove(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Wait(ctx, inst.ID); !errors.Is(err, gust.ErrInstanceNotFound) {
		t.Errorf("Wait after Remove: got %v, want ErrInstanceNotFound", err)
	}
	if got, want := [2]int{rt.Starts(), rt.Removes()}, [2]int{1, 1}; got != want {
		t.Errorf("starts, removes: got %v, want %v", got, want)
	}
}

// TestRuntime_ExitQuery checks the default handler's exit=N: the caller
// gets no answer and Wait reports N.
func TestRuntime_ExitQuery(t *testing.T) {
	rt := mock.NewRuntime(nil)
	t.Cleanup(rt.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inst, err := rt.Start(ctx, gust.ContainerSpec{Name: "a", Image: "img", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get("http://" + inst.Addr + "/?exit=3"); err == nil {
		resp.Body.Close()
		t.Errorf("exit=3: got status %d, want no answer", resp.StatusCode)
	}
	exit, err := rt.Wait(ctx, inst.ID)
	if err != nil || exit.Code != 3 {
		t.Errorf("Wait: got %+v, %v, want code 3", exit, err)
	}
}

// TestRuntime_Secrets: a handler reads its container's secrets with
// mock.Secrets, and their directory goes with the container (Remove) or
// with the runtime (Close).
func TestRuntime_Secrets(t *testing.T) {
	got := make(chan map[string][]byte, 1)
	rt := mock.NewRuntime(func(gust.ContainerSpec) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got <- mock.Secrets(r)
		})
	})
	t.Cleanup(rt.Close)
	ctx := context.Background()
	secrets := map[string][]byte{"a": []byte("alpha"), "b": []byte("beta")}
	inst, err := rt.Start(ctx, gust.ContainerSpec{Name: "a", Image: "img", Port: 8080, Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := rt.Start(ctx, gust.ContainerSpec{Name: "b", Image: "img", Port: 8080, Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + inst.Addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if m := <-got; len(m) != 2 || string(m["a"]) != "alpha" || string(m["b"]) != "beta" {
		t.Errorf("Secrets: got %q, want a=alpha b=beta", m)
	}
	dirOf := func(id string) string {
		t.Helper()
		js, err := rt.Inspect(id)
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ Mounts []mock.Mount }
		if err := json.Unmarshal([]byte(js), &v); err != nil || len(v.Mounts) != 1 {
			t.Fatalf("inspect: got %s (%v), want one mount", js, err)
		}
		return v.Mounts[0].Source
	}
	dir, keptDir := dirOf(inst.ID), dirOf(kept.ID)
	if err := rt.Remove(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("secrets directory after Remove: got %v, want it gone", err)
	}
	rt.Close()
	if _, err := os.Stat(keptDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("secrets directory after Close: got %v, want it gone", err)
	}
}
