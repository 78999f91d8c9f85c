package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/gustfaas/gust/scheduler"
	"go.uber.org/zap/zaptest"
)

// TestScheduler_Start_CanceledContext checks that Start uses its ctx: a
// start whose ctx has ended fails, and leaves nothing serving.
func TestScheduler_Start_CanceledContext(t *testing.T) {
	st, bus := natsbustest.MustOpenState(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := scheduler.New(scheduler.DefaultConfig(), st, bus, zaptest.NewLogger(t))
	err := s.Start(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start(canceled ctx) = %v, want an error wrapping context.Canceled", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after a failed Start: %v", err)
	}
	var rep gust.PlaceReply
	err = bus.Request(context.Background(), gust.SubjectPlace, gust.PlaceRequest{Namespace: gust.DefaultNamespace, Name: "f"}, &rep)
	if gust.ErrorCode(err) != gust.EUNAVAILABLE {
		t.Errorf("place request after a failed Start = %v, %+v; want EUNAVAILABLE (nothing serving)", err, rep)
	}
}

// TestScheduler_Start_ContextBoundsStartOnly checks that ending Start's ctx
// after Start returned does not stop the scheduler: Close does.
func TestScheduler_Start_ContextBoundsStartOnly(t *testing.T) {
	st, bus := natsbustest.MustOpenState(t)
	MustFakeWorker(t, st, bus, "w1", gust.Reply{})
	MustDeploy(t, st, "hello", 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	s := scheduler.New(scheduler.DefaultConfig(), st, bus, zaptest.NewLogger(t))
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	cancel()

	var rep gust.PlaceReply
	if err := bus.Request(context.Background(), gust.SubjectPlace, gust.PlaceRequest{Namespace: gust.DefaultNamespace, Name: "hello"}, &rep); err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatalf("place after Start's ctx ended: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestScheduler_Reconcile runs the reconcile loop: it places a function
// that has no placement, drops the placement of a deleted function, and
// Close waits for a re-placement still waiting for its worker.
func TestScheduler_Reconcile(t *testing.T) {
	ctx := context.Background()
	st, bus := natsbustest.MustOpenState(t)

	// w1 answers prepare requests only once released, so that a
	// re-placement is in flight when the scheduler closes.
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stop, err := bus.Handle(ctx, gust.SubjectPreparePrefix+"w1", "", func(context.Context, []byte) any {
		<-release
		return gust.Reply{}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	MustPut(t, st.Workers, "w1", gust.WorkerInfo{ID: "w1", Addr: "http://127.0.0.1:1", Seen: time.Now().Add(time.Hour)})

	key := MustDeploy(t, st, "hello", 1, nil) // UpdatedAt long ago: past the deploy grace
	MustPut(t, st.Placements, "openfaas-fn.gone", gust.Placement{Workers: []string{"w1"}, Version: 1})

	cfg := scheduler.DefaultConfig()
	cfg.ReconcileInterval = 10 * time.Millisecond
	s := scheduler.New(cfg, st, bus, zaptest.NewLogger(t))
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		pl, _, err := st.Placements.Get(ctx, key)
		if err != nil {
			return err
		}
		if got, want := fmt.Sprint(pl.Workers, pl.Version), "[w1] 1"; got != want {
			return fmt.Errorf("placement = %s, want %s", got, want)
		}
		return nil
	})
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if _, _, err := st.Placements.Get(ctx, "openfaas-fn.gone"); !errors.Is(err, gust.ErrNotFound) {
			return fmt.Errorf("placement of a deleted function: %v, want ErrNotFound", err)
		}
		return nil
	})

	// The re-placement still waits for w1's answer: Close ends it and
	// waits for it.
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s while a re-placement waited for its worker")
	}
}

// TestScheduler_PlaceNoWait: a place request with NoWait is answered with
// the placement as soon as it is written, while its worker is still
// getting ready; one without waits for the worker.
func TestScheduler_PlaceNoWait(t *testing.T) {
	ctx := context.Background()
	st, bus := natsbustest.MustOpenState(t)
	release := make(chan struct{})
	stop, err := bus.Handle(ctx, gust.SubjectPreparePrefix+"w1", "", func(context.Context, []byte) any {
		<-release
		return gust.Reply{}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	MustPut(t, st.Workers, "w1", gust.WorkerInfo{ID: "w1", Addr: "http://127.0.0.1:1"})
	MustDeploy(t, st, "hello", 1, nil)
	MustStartScheduler(t, st, bus)

	waited := make(chan error, 1)
	go func() {
		var rep gust.PlaceReply
		err := bus.Request(ctx, gust.SubjectPlace, gust.PlaceRequest{Namespace: gust.DefaultNamespace, Name: "hello"}, &rep)
		waited <- errors.Join(err, rep.Err())
	}()
	var rep gust.PlaceReply
	if err := bus.Request(ctx, gust.SubjectPlace, gust.PlaceRequest{Namespace: gust.DefaultNamespace, Name: "hello", NoWait: true}, &rep); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(rep.Placement.Workers, rep.Err()), "[w1] <nil>"; got != want {
		t.Errorf("NoWait answer = %s, want %s", got, want)
	}
	select {
	case err := <-waited:
		t.Fatalf("a place request without NoWait was answered (%v) before its worker was ready", err)
	default:
	}
	close(release)
	if err := <-waited; err != nil {
		t.Errorf("place request once the worker is ready: %v", err)
	}
}
