package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/mock"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/gustfaas/gust/internal/tasks"
	"github.com/gustfaas/gust/worker"
	"go.uber.org/zap/zaptest"
)

// drainWorker is a real worker on a fake runtime, behind its listener on
// "another host".
type drainWorker struct {
	w  *worker.Worker
	rt *mock.Runtime
}

func startDrainWorker(t *testing.T, id string, st *gust.State, reqs gust.Requests) *drainWorker {
	var h atomic.Pointer[http.Handler]
	ln := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*h.Load()).ServeHTTP(w, r) }))
	t.Cleanup(ln.Close)
	cfg := worker.DefaultConfig()
	cfg.ID, cfg.Addr = id, ln.URL
	cfg.StopGrace = 0
	cfg.Heartbeat = 50 * time.Millisecond
	cfg.ReapInterval = 10 * time.Millisecond
	rt := mock.NewRuntime(nil)
	t.Cleanup(rt.Close)
	w := worker.New(cfg, rt, st, reqs, zaptest.NewLogger(t).Named(id))
	handler := w.Handler(worker.ListenerConfig{Token: "token"})
	h.Store(&handler)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return &drainWorker{w: w, rt: rt}
}

// TestDrainWorker: POST /system/workers/{id}/drain under a steady
// trickle of calls loses none. The worker advertises draining, keeps
// serving on its instance until the function's placement (moved by the
// scheduler, simulated here) has a ready instance elsewhere, then stops
// its instance; GET /system/workers shows it draining.
func TestDrainWorker(t *testing.T) {
	ctx := context.Background()
	logger := zaptest.NewLogger(t)
	st, bus := natsbustest.MustOpenState(t)
	fn := gust.Function{Spec: gust.FunctionSpec{Service: "fn", Namespace: gust.DefaultNamespace, Image: "img:fn",
		Labels: map[string]string{gust.LabelScaleMin: "1"}}, Version: 1, CreatedAt: time.Now()}
	if _, err := st.Functions.Put(ctx, fn.Key(), fn); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Placements.Put(ctx, fn.Key(), gust.Placement{Workers: []string{"w1"}, Version: 1}); err != nil {
		t.Fatal(err)
	}
	// Started after the deploy, the workers load the function before its
	// placement.
	w1 := startDrainWorker(t, "w1", st, bus)
	w2 := startDrainWorker(t, "w2", st, bus)
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(w1.rt.Running()); n != 1 {
			return fmt.Errorf("w1 runs %d instances, want its minimum 1", n)
		}
		return nil
	})

	// The scheduler's part: a draining worker's functions are placed on
	// the others.
	sched := tasks.New(ctx)
	t.Cleanup(sched.Close)
	wctx, started := sched.During(ctx)
	var moved atomic.Bool
	if err := st.Workers.Watch(wctx, "w1", func(c gust.Change[gust.WorkerInfo]) {
		if c.Deleted || !c.Value.Draining || moved.Swap(true) {
			return
		}
		if _, err := st.Placements.Put(wctx, fn.Key(), gust.Placement{Workers: []string{"w2"}, Version: 1}); err != nil {
			t.Errorf("move placement: %v", err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := started(); err != nil {
		t.Fatal(err)
	}

	rt := gateway.NewRouter(st, bus, nil, "", logger)
	rt.WorkerToken = "token"
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Close)
	gw := gateway.New(gateway.DefaultConfig(), st, bus, rt, logger)
	t.Cleanup(func() { _ = gw.Close(context.Background()) })
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)

	// The trickle: one call at a time, until told to stop.
	var (
		mu       sync.Mutex
		failures []string
		calls    int
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			resp, err := http.Post(srv.URL+"/function/fn", "text/plain", nil)
			mu.Lock()
			calls++
			if err != nil {
				failures = append(failures, err.Error())
			} else {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failures = append(failures, fmt.Sprintf("%d %s", resp.StatusCode, b))
				}
			}
			mu.Unlock()
		}
	}()
	waitCalls := func(n int) {
		check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if calls < n {
				return fmt.Errorf("%d calls so far", calls)
			}
			return nil
		})
	}
	waitCalls(20)

	resp, err := http.Post(srv.URL+"/system/workers/w1/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var ans gateway.DrainAnswer
	_ = json.NewDecoder(resp.Body).Decode(&ans)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || ans.ID != "w1" || ans.State != gateway.WorkerDraining || ans.Instances != 1 {
		t.Fatalf("drain: %d %+v, want 202 w1 draining with 1 instance", resp.StatusCode, ans)
	}
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		resp, err := http.Get(srv.URL + "/system/workers")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var ws []gateway.WorkerStatus
		if err := json.NewDecoder(resp.Body).Decode(&ws); err != nil {
			return err
		}
		if len(ws) != 2 || ws[0].ID != "w1" || ws[0].State != gateway.WorkerDraining || ws[1].State != gateway.WorkerReady {
			return fmt.Errorf("workers %+v, want w1 draining and w2 ready", ws)
		}
		return nil
	})
	// w1 stops its instance once w2 has one ready.
	check.For(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := len(w1.rt.Running()); n != 0 {
			return fmt.Errorf("w1 still runs %d instances", n)
		}
		if n := len(w2.rt.Running()); n == 0 {
			return fmt.Errorf("w1 stopped before w2 runs an instance")
		}
		return nil
	})
	mu.Lock()
	n := calls
	mu.Unlock()
	waitCalls(n + 20) // calls go on, on w2
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls failed during the drain: %v", len(failures), calls, failures[:min(5, len(failures))])
	}
	t.Logf("%d calls, none failed", calls)
}
