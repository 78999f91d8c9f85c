package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/docker"
	"go.uber.org/zap"
)

// TestPausedTierThaws (issue 11 point 2) on the Docker Engine: an
// instance idle for its function's pause-after is paused (frozen through
// its cgroup where the worker can reach it, by the Engine's pause
// otherwise); the next call thaws that very instance instead of starting
// another, is not a cold start, and the pause and the thaw are counted;
// deleting the function removes the instance paused again. (That a paused
// container answers nothing: internal/docker's TestPause.)
func TestPausedTierThaws(t *testing.T) {
	m := MustRunUp(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt, err := docker.New(docker.Config{Network: testNetwork}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	const name = "thaw"
	mustDeploy(t, m, name, imageTag("sleep"), map[string]string{
		gust.LabelScaleMin: "0", gust.LabelScaleMax: "1", gust.LabelPauseAfter: "300ms", gust.LabelIdleTimeout: "10m",
	})
	first := sleepCall(t, m, name)
	cs := fnContainers(t, m, name)
	if len(cs) != 1 {
		t.Fatalf("%d containers of %s after a call, want 1", len(cs), name)
	}
	id := cs[0].ID
	waitPaused := func() {
		t.Helper()
		check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
			paused, err := rt.Paused(ctx, id)
			if err != nil {
				return err
			}
			if !paused {
				return errors.New("instance not paused yet")
			}
			return nil
		})
	}
	waitPaused()

	key := gust.FunctionKey(gust.DefaultNamespace, name)
	st, h, out := call(t, "GET", gw(m)+"/function/"+name, "")
	if st != 200 {
		t.Fatalf("call on a paused instance: %d %s", st, out)
	}
	var second sleepReply
	if err := json.Unmarshal([]byte(out), &second); err != nil {
		t.Fatalf("answer %q: %v", out, err)
	}
	if second.Instance != first.Instance {
		t.Errorf("answered by %s, want the paused instance %s", second.Instance, first.Instance)
	}
	if h.Get(gust.HeaderColdStart) != "" {
		t.Errorf("a thaw reported %s: %q", gust.HeaderColdStart, h.Get(gust.HeaderColdStart))
	}
	if got := fnContainers(t, m, name); len(got) != 1 || got[0].ID != id {
		t.Errorf("containers after the thaw: %v, want only %s", containerIDs(got), id)
	}
	for _, event := range []string{"paused", "resumed"} {
		if n := bevCounter(m.Metrics.InstancePauses, "function", key, "event", event); n < 1 {
			t.Errorf("gust_instance_pauses_total{event=%q} = %v, want at least 1", event, n)
		}
	}

	// Paused again, then deleted: the frozen instance goes.
	waitPaused()
	if st, _, out := call(t, "DELETE", gw(m)+"/system/functions", fmt.Sprintf(`{"functionName":%q}`, name)); st/100 != 2 {
		t.Fatalf("delete %s: %d %s", name, st, out)
	}
	waitContainers(t, m, name, 0, 30*time.Second)
}

// sleepCall calls the sleep example's function name and returns its answer.
func sleepCall(tb testing.TB, m *UpMain, name string) sleepReply {
	tb.Helper()
	st, _, out := call(tb, "GET", gw(m)+"/function/"+name, "")
	if st != 200 {
		tb.Fatalf("call %s: %d %s", name, st, out)
	}
	var r sleepReply
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		tb.Fatalf("answer of %s %q: %v", name, out, err)
	}
	return r
}
