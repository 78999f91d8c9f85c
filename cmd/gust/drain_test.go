package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
)

// TestWorkerDrain_NoCallLost: with the roles apart and two workers on
// Docker, `gust worker drain` of the worker holding a function's warm
// instance, under a steady trickle of calls, loses none: the scheduler
// places the function on the other worker, the drained one stops its
// container once that one is ready, and the calls go on there.
func TestWorkerDrain_NoCallLost(t *testing.T) {
	MustImages(t)
	ctx := context.Background()
	r := mustRolesApart(t, "drain")
	r.scheduler(defaultSchedulerConfig(), "")
	workers := map[string]*WorkerMain{}
	for _, name := range []string{"a", "b"} {
		wk := r.worker(defaultWorkerConfig(), name)
		workers[wk.Config.ID] = wk
	}
	_, base := r.gateway()
	c := gateway.NewClient(base)
	if err := c.Deploy(ctx, gust.FunctionSpec{Service: "drained", Image: imageTag("echo"), Labels: map[string]string{gust.LabelScaleMin: "1"}}, false); err != nil {
		t.Fatal(err)
	}
	// The worker that holds the warm instance is the one drained.
	var from, to string
	check.For(t, 30*time.Second, 100*time.Millisecond, func() error {
		for id := range workers {
			if len(Containers(t, map[string]string{gust.LabelWorker: id, gust.LabelFunction: "drained"})) > 0 {
				from = id
			} else {
				to = id
			}
		}
		if from == "" || to == "" {
			return fmt.Errorf("no single worker holds the function yet")
		}
		return nil
	})

	var (
		mu       sync.Mutex
		calls    int
		failures []string
	)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			// Not call(): a failure is counted, not fatal, off the
			// test's goroutine.
			failure := ""
			resp, err := http.Post(base+"/function/drained", "text/plain", strings.NewReader("x"))
			if err != nil {
				failure = err.Error()
			} else {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failure = fmt.Sprintf("%d %s", resp.StatusCode, b)
				}
			}
			mu.Lock()
			calls++
			if failure != "" {
				failures = append(failures, failure)
			}
			mu.Unlock()
		}
	}()
	callsNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		return calls
	}
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if callsNow() < 20 {
			return fmt.Errorf("%d calls", callsNow())
		}
		return nil
	})

	ans, err := c.DrainWorker(ctx, from)
	if err != nil || ans.State != gateway.WorkerDraining || ans.Instances != 1 {
		t.Fatalf("drain %s: %+v, %v; want draining with 1 instance", from, ans, err)
	}
	t0 := time.Now()
	check.For(t, 60*time.Second, 100*time.Millisecond, func() error {
		if cs := Containers(t, map[string]string{gust.LabelWorker: from}); len(cs) > 0 {
			return fmt.Errorf("the drained worker still holds %d containers", len(cs))
		}
		if cs := Containers(t, map[string]string{gust.LabelWorker: to, gust.LabelFunction: "drained"}); len(cs) == 0 {
			return fmt.Errorf("the other worker holds no instance")
		}
		return nil
	})
	drained := time.Since(t0)
	after := callsNow()
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if callsNow() < after+20 {
			return fmt.Errorf("%d calls after the drain", callsNow()-after)
		}
		return nil
	})
	close(stop)
	<-done
	ws, err := c.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		want := gateway.WorkerReady
		if w.ID == from {
			want = gateway.WorkerDraining
		}
		if w.State != want {
			t.Errorf("worker %s is %s, want %s", w.ID, w.State, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls failed during the drain: %v", len(failures), calls, failures[:min(5, len(failures))])
	}
	t.Logf("drained in %v under %d calls, none failed", drained.Round(time.Millisecond), calls)
}
