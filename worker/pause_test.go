package worker

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
)

// recordedInstances keeps the instance records a worker makes.
type recordedInstances struct {
	mu   sync.Mutex
	recs []gust.InstanceRecord
}

func (m *recordedInstances) RecordCall(*gust.CallRecord) {}
func (m *recordedInstances) RecordInstance(r *gust.InstanceRecord) {
	m.mu.Lock()
	m.recs = append(m.recs, *r)
	m.mu.Unlock()
}

func (m *recordedInstances) all() []gust.InstanceRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]gust.InstanceRecord(nil), m.recs...)
}

// waitPaused polls until container id is paused.
func (e *testEnv) waitPaused(id string) {
	e.t.Helper()
	check.For(e.t, testWait, testPoll, func() error {
		if !e.rt.Paused(id) {
			return fmt.Errorf("container %s is not paused", id)
		}
		return nil
	})
}

// TestPool_PausesAboveMinimum: of two idle instances of a function with a
// warm minimum of one, the one used longest ago is paused after the
// pause-after, the other keeps running; a call goes to the running one,
// and a second call at once thaws the paused one instead of starting a
// third.
func TestPool_PausesAboveMinimum(t *testing.T) {
	h := newHold(t)
	e := newEnv(t, h.handler)
	t.Cleanup(h.releaseAll)
	fn := e.deploy("pause", map[string]string{
		gust.LabelScaleMin: "1", gust.LabelScaleMax: "2", gust.LabelConcurrency: "1",
		gust.LabelPauseAfter: "50ms", gust.LabelIdleTimeout: "1m",
	})
	e.place(fn)
	first, second := e.goCall(fn, "/hold"), e.goCall(fn, "/hold")
	ids := h.waitEntered(t, 2)
	if ids[0] == ids[1] {
		t.Fatalf("both calls on %s, want two instances", ids[0])
	}
	h.release(t)
	h.release(t)
	wantOK(t, recv(t, first))
	wantOK(t, recv(t, second))
	// Both are idle now; which one was used last is known from the
	// answers' order only loosely: wait until exactly one is paused.
	var pausedID, runningID string
	check.For(t, testWait, testPoll, func() error {
		a, b := e.rt.Paused(ids[0]), e.rt.Paused(ids[1])
		switch {
		case a && !b:
			pausedID, runningID = ids[0], ids[1]
		case b && !a:
			pausedID, runningID = ids[1], ids[0]
		default:
			return fmt.Errorf("paused: %s %v, %s %v; want exactly one", ids[0], a, ids[1], b)
		}
		return nil
	})
	// It stays so: the minimum is never paused.
	time.Sleep(200 * time.Millisecond)
	if !e.rt.Paused(pausedID) || e.rt.Paused(runningID) {
		t.Fatalf("after 200 ms: %s paused %v, %s paused %v", pausedID, e.rt.Paused(pausedID), runningID, e.rt.Paused(runningID))
	}
	starts := e.rt.Starts()

	held := e.goCall(fn, "/hold")
	if got := h.waitEntered(t, 1)[0]; got != runningID {
		t.Errorf("first call went to %s, want the running instance %s", got, runningID)
	}
	thawed := e.goCall(fn, "/hold")
	if got := h.waitEntered(t, 1)[0]; got != pausedID {
		t.Errorf("second call went to %s, want the paused instance %s, thawed", got, pausedID)
	}
	h.release(t)
	h.release(t)
	if r := recv(t, thawed); r.header.Get(gust.HeaderColdStart) != "" {
		t.Errorf("a call that thawed an instance says %s: %q", gust.HeaderColdStart, r.header.Get(gust.HeaderColdStart))
	}
	wantOK(t, recv(t, held))
	if got := e.rt.Starts(); got != starts {
		t.Errorf("starts: %d, want %d (the paused instance serves, no new start)", got, starts)
	}
}

// TestPool_PausedThenStopped: a function at zero pauses its idle instance
// after the pause-after, stops it after the idle timeout, and the
// instance's record counts the time it was paused.
func TestPool_PausedThenStopped(t *testing.T) {
	meter := &recordedInstances{}
	e := newEnv(t, nil)
	e.w.WithMetering(meter, nil)
	fn := e.deploy("pausestop", map[string]string{
		gust.LabelScaleMin: "0", gust.LabelPauseAfter: "20ms", gust.LabelIdleTimeout: "400ms",
	})
	r := e.call(fn, "/")
	wantOK(t, r)
	id := e.rt.Running()[0].ID
	e.waitPaused(id)
	e.running(0)
	check.For(t, testWait, testPoll, func() error {
		if len(meter.all()) != 1 {
			return fmt.Errorf("instance records: %d, want 1", len(meter.all()))
		}
		return nil
	})
	rec := meter.all()[0]
	held := rec.Stopped.Sub(rec.Ready)
	if paused := time.Duration(rec.PausedMs) * time.Millisecond; paused < 200*time.Millisecond || paused > held {
		t.Errorf("paused %s of %s held; want most of the 400 ms idle timeout past the 20 ms pause-after", paused, held)
	}
}

// TestPool_ThawsForCall: a call to a function whose only instance is
// paused thaws it and is answered by it: no cold start.
func TestPool_ThawsForCall(t *testing.T) {
	e := newEnv(t, nil)
	fn := e.deploy("thaw", map[string]string{gust.LabelScaleMin: "0", gust.LabelPauseAfter: "20ms"})
	wantOK(t, e.call(fn, "/"))
	id := e.rt.Running()[0].ID
	e.waitPaused(id)
	r := e.call(fn, "/")
	wantOK(t, r)
	if r.container != id || e.rt.Starts() != 1 {
		t.Errorf("answered by %q after %d starts; want the thawed %s, one start", r.container, e.rt.Starts(), id)
	}
	if r.header.Get(gust.HeaderColdStart) != "" {
		t.Errorf("%s: %q on a thawed instance", gust.HeaderColdStart, r.header.Get(gust.HeaderColdStart))
	}
}

// TestPool_StatusCountsPaused: the pool status says how many of its
// available instances are paused (the dashboard shows them).
func TestPool_StatusCountsPaused(t *testing.T) {
	e := newEnv(t, nil)
	fn := e.deploy("pstatus", map[string]string{gust.LabelScaleMin: "0", gust.LabelPauseAfter: "20ms"})
	wantOK(t, e.call(fn, "/"))
	e.waitPaused(e.rt.Running()[0].ID)
	if st := e.pool(fn).status(); st.Replicas != 1 || st.Available != 1 || st.Paused != 1 {
		t.Errorf("status of a pool whose one instance is paused: %+v, want 1 replica, 1 available, 1 paused", st)
	}
}

// TestPool_NoPause: pause-after 0, or at or past the idle timeout, never
// pauses.
func TestPool_NoPause(t *testing.T) {
	for _, labels := range []map[string]string{
		{gust.LabelPauseAfter: "0", gust.LabelIdleTimeout: "300ms"},
		{gust.LabelPauseAfter: "300ms", gust.LabelIdleTimeout: "300ms"},
	} {
		t.Run(labels[gust.LabelPauseAfter], func(t *testing.T) {
			e := newEnv(t, nil)
			labels[gust.LabelScaleMin] = "0"
			fn := e.deploy("nopause", labels)
			wantOK(t, e.call(fn, "/"))
			id := e.rt.Running()[0].ID
			deadline := time.Now().Add(testWait)
			for e.isRunning(id) && time.Now().Before(deadline) {
				if e.rt.Paused(id) {
					t.Fatalf("container %s was paused", id)
				}
				time.Sleep(testPoll)
			}
			e.running(0)
		})
	}
}
