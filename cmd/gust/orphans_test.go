package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
)

// TestSeparateWorker_RemovesOrphans: on Docker, a worker removes the
// containers of another worker of its cluster once that one is gone (the
// scheduler deleted its record) for its OrphanGrace, and leaves those of
// a worker its cluster never had (another cluster on the same engine).
func TestSeparateWorker_RemovesOrphans(t *testing.T) {
	MustImages(t)
	ctx := context.Background()
	r := mustRolesApart(t, "orphans")
	n, logger := r.NATS, r.logger
	// The scheduler's connection: it writes and deletes workers' records.
	bus, err := natsbus.ConnectWith(roleNATS(n, natsbus.UserScheduler), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	state, err := natsbus.OpenState(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	gone, stranger := "gone-"+fmt.Sprint(time.Now().UnixNano()), "stranger-"+fmt.Sprint(time.Now().UnixNano())
	if _, err := state.Workers.Put(ctx, gone, gust.WorkerInfo{ID: gone, Addr: "http://127.0.0.1:1", Seen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rt, err := openRuntime(ctx, testNetwork, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	for _, owner := range []string{gone, stranger} {
		c, err := rt.Start(ctx, gust.ContainerSpec{
			Name: "gust-orphan-" + owner, Image: imageTag("hello"), Port: 8080,
			Labels: map[string]string{gust.LabelWorker: owner, gust.LabelFunction: "orphan"},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rt.Remove(context.Background(), c.ID) })
	}

	cfg := defaultWorkerConfig()
	cfg.OrphanGrace = time.Second
	wk := r.worker(cfg, "")

	// The worker is up (it knows the gone one from the workers' table);
	// the gone one beats no more and the scheduler deletes its record.
	check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
		if _, _, err := state.Workers.Get(ctx, wk.Config.ID); err != nil {
			return fmt.Errorf("the worker has not beaten yet: %v", err)
		}
		return nil
	})
	if err := state.Workers.Delete(ctx, gone); err != nil {
		t.Fatal(err)
	}
	check.For(t, 20*time.Second, 100*time.Millisecond, func() error {
		if cs := Containers(t, map[string]string{gust.LabelWorker: gone}); len(cs) > 0 {
			return fmt.Errorf("the gone worker's container is still there")
		}
		return nil
	})
	if cs := Containers(t, map[string]string{gust.LabelWorker: stranger}); len(cs) != 1 {
		t.Errorf("%d containers of a worker the cluster never had, want 1 (left alone)", len(cs))
	}
}
