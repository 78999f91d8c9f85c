package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
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
// deleting the function removes the instance paused again. The instance
// gauges (gust_instances) show it paused, then ready. (That a paused
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
	// The gauges say so too, from the pool as it is when scraped.
	instances := func(want map[string]float64) {
		t.Helper()
		for state, n := range want {
			if got, ok := evMetric(t, m, "gust_instances", map[string]string{"function": key, "state": state}); !ok || got != n {
				t.Errorf("gust_instances{state=%q} = %v (present %v), want %v", state, got, ok, n)
			}
		}
	}
	instances(map[string]float64{"paused": 1, "ready": 0, "starting": 0})
	if got, ok := evMetric(t, m, "gust_invocations_in_flight", map[string]string{"function": key}); !ok || got != 0 {
		t.Errorf("gust_invocations_in_flight = %v (present %v), want 0", got, ok)
	}

	// The call on the paused instance takes a while, so that the gauges
	// can be seen while it runs on the thawed instance.
	type answer struct {
		st  int
		h   http.Header
		out string
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := http.Get(gw(m) + "/function/" + name + "?ms=1500")
		if err != nil {
			done <- answer{out: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			b = []byte(err.Error())
		}
		done <- answer{resp.StatusCode, resp.Header, string(b)}
	}()
	var a answer
	seen := false
	for deadline := time.Now().Add(30 * time.Second); !seen && time.Now().Before(deadline); {
		select {
		case a = <-done:
			t.Fatalf("the call ended (%d %s) before the gauges showed it running on a ready instance", a.st, a.out)
		case <-time.After(20 * time.Millisecond):
		}
		inFlight, _ := evMetric(t, m, "gust_invocations_in_flight", map[string]string{"function": key})
		ready, _ := evMetric(t, m, "gust_instances", map[string]string{"function": key, "state": "ready"})
		seen = inFlight == 1 && ready == 1
	}
	if !seen {
		t.Fatal("gust_instances{state=\"ready\"} and gust_invocations_in_flight never showed the call")
	}
	instances(map[string]float64{"paused": 0, "ready": 1, "starting": 0})
	a = <-done
	st, h, out := a.st, a.h, a.out
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
