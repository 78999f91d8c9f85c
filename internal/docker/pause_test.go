package docker

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

// TestPause: a paused container answers nothing (a connection may open,
// no answer comes), is listed as running with its address, answers again
// once unpaused, and stops and is removed while paused; unknown ids give
// ErrInstanceNotFound. Both ways: the cgroup freezer written directly
// (this test runs as root on the Engine's host, as CI does: the direct
// way must be the one taken) and the Engine's pause.
func TestPause(t *testing.T) {
	t.Run("freezer", func(t *testing.T) { testPause(t, MustRuntime(t), true) })
	t.Run("engine", func(t *testing.T) {
		r := MustRuntime(t)
		r.cfg.EnginePause = true
		testPause(t, r, false)
	})
}

func testPause(t *testing.T, r *Runtime, direct bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := r.Start(ctx, testSpec(t))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	MustHealthy(t, inst)
	if err := r.Pause(ctx, inst.ID); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	// The Engine knows of its own pause only; the freezer says frozen
	// either way.
	c, err := r.client.ContainerInspect(ctx, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.State.Paused == direct {
		t.Errorf("Engine's state paused: %v; want %v", c.State.Paused, !direct)
	}
	if f, err := freezerOf(c.ID, c.State.Pid); err != nil {
		t.Errorf("freezer of a running container: %v", err)
	} else if frozen, err := f.frozen(); err != nil || !frozen {
		t.Errorf("freezer state after Pause: frozen %v, %v", frozen, err)
	}
	if paused, err := r.Paused(ctx, inst.ID); err != nil || !paused {
		t.Errorf("Paused after Pause: %v, %v", paused, err)
	}
	if code, _, err := getWithin("http://"+inst.Addr+"/", 300*time.Millisecond); err == nil {
		t.Errorf("a paused container answered %d", code)
	}
	list, err := r.List(ctx, map[string]string{gust.LabelInstance: inst.Labels[gust.LabelInstance]})
	if err != nil || len(list) != 1 || !list[0].Running || list[0].Addr != inst.Addr {
		t.Errorf("List of a paused container: %+v, %v; want it running at %s", list, err, inst.Addr)
	}
	if err := r.Unpause(ctx, inst.ID); err != nil {
		t.Fatalf("Unpause: %v", err)
	}
	if code, _, err := getWithin("http://"+inst.Addr+"/", 5*time.Second); err != nil || code != 200 {
		t.Errorf("after Unpause: %d, %v; want 200", code, err)
	}
	if paused, err := r.Paused(ctx, inst.ID); err != nil || paused {
		t.Errorf("Paused after Unpause: %v, %v", paused, err)
	}
	if err := r.Pause(ctx, inst.ID); err != nil {
		t.Fatalf("Pause again: %v", err)
	}
	t0 := time.Now()
	if err := r.Stop(ctx, inst.ID, 5*time.Second); err != nil {
		t.Errorf("Stop of a paused container: %v", err)
	}
	t.Logf("stopped a paused container in %s", time.Since(t0))
	if err := r.Remove(ctx, inst.ID); err != nil {
		t.Errorf("Remove: %v", err)
	}
	// Removed while paused, without a stop first (a worker that comes
	// back after a crash removes its frozen leftovers so).
	spec := testSpec(t)
	spec.Name += "-removed"
	other, err := r.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	MustHealthy(t, other)
	if err := r.Pause(ctx, other.ID); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := r.Remove(ctx, other.ID); err != nil {
		t.Errorf("Remove of a paused container: %v", err)
	}
	if _, err := r.client.ContainerInspect(ctx, other.ID); err == nil {
		t.Errorf("a paused container is still there after Remove")
	}
	for _, op := range []func(context.Context, string) error{r.Pause, r.Unpause} {
		if err := op(ctx, "no-such-container"); !errors.Is(err, gust.ErrInstanceNotFound) {
			t.Errorf("unknown id: %v, want ErrInstanceNotFound", err)
		}
	}
}

// getWithin is get with a bound of d on the whole exchange.
func getWithin(url string, d time.Duration) (int, string, error) {
	c := &http.Client{Timeout: d}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
