package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/mock"
)

// startContainer starts a container on rt as worker owner would.
func startContainer(t *testing.T, rt *mock.Runtime, owner, name string) string {
	t.Helper()
	in, err := rt.Start(context.Background(), gust.ContainerSpec{
		Name: name, Image: "img:" + name, Port: 8080,
		Labels: map[string]string{gust.LabelManaged: "true", gust.LabelWorker: owner, gust.LabelNamespace: gust.DefaultNamespace, gust.LabelFunction: name},
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return in.ID
}

// ownedBy lists the ids of the containers on rt that owner started.
func ownedBy(t *testing.T, rt *mock.Runtime, owner string) []string {
	t.Helper()
	cs, err := rt.List(context.Background(), map[string]string{gust.LabelWorker: owner})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

// TestWorker_RemovesOrphans: the containers of a worker of the cluster
// that is gone (its record deleted, as the scheduler does with a silent
// worker) are removed from the shared engine by a live worker once
// OrphanGrace has passed; those of a live worker, of a worker this
// cluster never had (another cluster's, on the same engine) and the
// worker's own stay.
func TestWorker_RemovesOrphans(t *testing.T) {
	ctx := context.Background()
	var rt *mock.Runtime
	e := newEnv(t, nil, func(r *mock.Runtime, cfg *Config) {
		rt = r
		cfg.OrphanGrace = 200 * time.Millisecond
	})
	fn := e.deploy("own", map[string]string{gust.LabelScaleMin: "1"})
	e.place(fn)
	e.running(1)

	// A live worker beats; the gone one beat once.
	beat := func(id string) {
		if _, err := e.state.Workers.Put(ctx, id, gust.WorkerInfo{ID: id, Addr: "http://127.0.0.1:1", Seen: time.Now()}); err != nil {
			t.Error(err)
		}
	}
	beat("wgone")
	stopBeats := make(chan struct{})
	beatsDone := make(chan struct{})
	go func() {
		defer close(beatsDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			beat("wlive")
			select {
			case <-stopBeats:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { close(stopBeats); <-beatsDone })
	startContainer(t, rt, "wgone", "g1")
	startContainer(t, rt, "wgone", "g2")
	startContainer(t, rt, "wlive", "l1")
	startContainer(t, rt, "wstranger", "s1")
	check.For(t, testWait, testPoll, func() error {
		e.w.others.mu.Lock()
		defer e.w.others.mu.Unlock()
		if !e.w.others.known["wgone"] || !e.w.others.known["wlive"] {
			return fmt.Errorf("the worker does not know the others yet")
		}
		return nil
	})
	// The gone worker's containers stay while it is known.
	if n := len(ownedBy(t, rt, "wgone")); n != 2 {
		t.Fatalf("%d containers of wgone before it was gone, want 2", n)
	}

	if err := e.state.Workers.Delete(ctx, "wgone"); err != nil {
		t.Fatal(err)
	}
	check.For(t, testWait, testPoll, func() error {
		if ids := ownedBy(t, rt, "wgone"); len(ids) != 0 {
			return fmt.Errorf("containers of the gone worker left: %v", ids)
		}
		return nil
	})
	for owner, want := range map[string]int{"wlive": 1, "wstranger": 1, e.w.cfg.ID: 1} {
		if n := len(ownedBy(t, rt, owner)); n != want {
			t.Errorf("%d containers of %s after the orphans' removal, want %d", n, owner, want)
		}
	}
}

// TestWorker_RemovesLeftoversAtStart: a worker that comes back with its
// id removes the containers its earlier run left.
func TestWorker_RemovesLeftoversAtStart(t *testing.T) {
	var rt *mock.Runtime
	var id string
	newEnv(t, nil, func(r *mock.Runtime, cfg *Config) {
		rt, id = r, cfg.ID
		startContainer(t, r, cfg.ID, "left1")
		startContainer(t, r, cfg.ID, "left2")
	})
	if ids := ownedBy(t, rt, id); len(ids) != 0 {
		t.Errorf("containers of the earlier run left after start: %v", ids)
	}
}
