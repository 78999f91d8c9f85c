package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

// fnStatus reads GET /system/function/NAME.
func fnStatus(tb testing.TB, m *UpMain, name string) gust.FunctionStatus {
	tb.Helper()
	st, _, out := call(tb, "GET", gw(m)+"/system/function/"+name, "")
	if st != 200 {
		tb.Fatalf("status of %s: %d %s", name, st, out)
	}
	var fs gust.FunctionStatus
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		tb.Fatalf("status of %s: %v", name, err)
	}
	return fs
}

// TestScaleFunctionSetsReplicas (issue 14 point 3): scale-function sets the
// number of instances now, as OpenFaaS does: status shows it at once, the
// containers follow; 0 stops the idle instances at once while a call in
// flight finishes, and the next call starts the function from zero.
func TestScaleFunctionSetsReplicas(t *testing.T) {
	m := MustRunUp(t, "")
	// The default idle timeout (5 min): nothing here stops by it.
	mustDeploy(t, m, "scaled", imageTag("sleep"), nil)
	waitContainers(t, m, "scaled", 1, 10*time.Second)

	if st, _, out := call(t, "POST", gw(m)+"/system/scale-function/scaled", `{"serviceName":"scaled","replicas":3}`); st != 202 {
		t.Fatalf("scale to 3: %d %s", st, out)
	}
	if got := fnStatus(t, m, "scaled").Replicas; got != 3 {
		t.Errorf("replicas right after scale to 3: %d, want 3", got)
	}
	waitContainers(t, m, "scaled", 3, 20*time.Second)
	if got := fnStatus(t, m, "scaled").Replicas; got != 3 {
		t.Errorf("replicas with 3 containers: %d, want 3", got)
	}

	// A call in flight while the function is scaled to 0.
	type result struct {
		status int
		reply  sleepReply
	}
	done := make(chan result, 1)
	go func() {
		st, _, out := call(t, "GET", gw(m)+"/function/scaled?ms=4000", "")
		var r sleepReply
		_ = json.Unmarshal([]byte(out), &r)
		done <- result{st, r}
	}()
	time.Sleep(time.Second) // the call reaches its (warm) instance
	if st, _, out := call(t, "POST", gw(m)+"/system/scale-function/scaled", `{"serviceName":"scaled","replicas":0}`); st != 202 {
		t.Fatalf("scale to 0: %d %s", st, out)
	}
	// The idle instances go at once; the busy one stays for its call.
	waitContainers(t, m, "scaled", 1, 10*time.Second)
	r := <-done
	if r.status != 200 {
		t.Fatalf("call in flight during scale to 0: %d, want 200", r.status)
	}
	waitContainers(t, m, "scaled", 0, 10*time.Second)
	if got := fnStatus(t, m, "scaled").Replicas; got != 0 {
		t.Errorf("replicas after scale to 0: %d, want 0", got)
	}

	// The next call starts it from zero, and it stays up (awake at its
	// floor) afterwards.
	st, h, out := call(t, "GET", gw(m)+"/function/scaled", "")
	if st != 200 {
		t.Fatalf("call after scale to 0: %d %s", st, out)
	}
	if h.Get(gust.HeaderColdStart) != "true" {
		t.Errorf("call after scale to 0: X-Gust-Cold-Start %q, want true", h.Get(gust.HeaderColdStart))
	}
	waitContainers(t, m, "scaled", 1, 10*time.Second)

	// Up again from there.
	if st, _, out := call(t, "POST", gw(m)+"/system/scale-function/scaled", `{"replicas":2}`); st != 202 {
		t.Fatalf("scale to 2: %d %s", st, out)
	}
	waitContainers(t, m, "scaled", 2, 20*time.Second)
}
