package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/mock"
)

// TestPool_ConcurrencyLimit: an instance takes at most its concurrency in
// calls; a call past it waits for a slot (the pool is at max) and takes
// the one a finished call releases.
func TestPool_ConcurrencyLimit(t *testing.T) {
	h := newHold(t)
	e := newEnv(t, h.handler)
	t.Cleanup(h.releaseAll)
	fn := e.deploy("conc", map[string]string{gust.LabelConcurrency: "2", gust.LabelScaleMax: "1"})

	first, second := e.goCall(fn, "/hold"), e.goCall(fn, "/hold")
	ids := h.waitEntered(t, 2)
	if ids[0] != ids[1] {
		t.Errorf("two calls within the concurrency: got containers %v, want one", ids)
	}
	third := e.goCall(fn, "/hold")
	check.For(t, testWait, testPoll, func() error {
		if got := e.waiting(fn); got != 1 {
			return fmt.Errorf("waiting calls: got %d, want 1", got)
		}
		return nil
	})
	if st := e.pool(fn).status(); st.InFlight != 2 || st.Replicas != 1 {
		t.Errorf("status: got %+v, want 2 in flight on 1 replica", st)
	}

	h.release(t)
	got := h.waitEntered(t, 1)
	if got[0] != ids[0] {
		t.Errorf("third call: got container %s, want the freed slot on %s", got[0], ids[0])
	}
	h.release(t)
	h.release(t)
	for _, ch := range []<-chan result{first, second, third} {
		wantOK(t, recv(t, ch))
	}
	if got := e.rt.Starts(); got != 1 {
		t.Errorf("starts: got %d, want 1", got)
	}
	if st := e.pool(fn).status(); st.InFlight != 0 || st.Invocations != 3 {
		t.Errorf("status after the calls: got %+v, want none in flight and 3 invocations", st)
	}
}

// TestPool_ScaleUpToMax: calls past the slots of the pool start instances
// up to max and no further; the rest wait and run once slots free.
func TestPool_ScaleUpToMax(t *testing.T) {
	h := newHold(t)
	e := newEnv(t, h.handler)
	t.Cleanup(h.releaseAll)
	fn := e.deploy("scale", map[string]string{gust.LabelConcurrency: "1", gust.LabelScaleMax: "3"})

	var calls []<-chan result
	for range 5 {
		calls = append(calls, e.goCall(fn, "/hold"))
	}
	ids := h.waitEntered(t, 3)
	if distinct(ids) != 3 {
		t.Errorf("first three calls: got containers %v, want three", ids)
	}
	check.For(t, testWait, testPoll, func() error {
		if got := e.waiting(fn); got != 2 {
			return fmt.Errorf("waiting calls: got %d, want 2", got)
		}
		return nil
	})
	if got := e.rt.Starts(); got != 3 {
		t.Errorf("starts at max: got %d, want 3", got)
	}
	h.releaseAll()
	for _, ch := range calls {
		wantOK(t, recv(t, ch))
	}
	if got := e.rt.Starts(); got != 3 {
		t.Errorf("starts after the calls: got %d, want 3 (max)", got)
	}
}

// TestPool_FillsOldestFirst: calls go to the oldest ready instance until
// it carries the pool's fill (gust.concurrency × 0.9, rounded up: 4 of 4
// here), and only then to the next; a pool scaled by CPU or by rate
// spreads them.
func TestPool_FillsOldestFirst(t *testing.T) {
	for _, tt := range []struct {
		name   string
		labels map[string]string
		calls  int
		want   int // distinct instances the calls reach
	}{
		{"fill", map[string]string{}, 4, 1},
		{"past the fill", map[string]string{}, 5, 2},
		{"capacity target", map[string]string{gust.LabelScaleType: gust.ScaleCapacity, gust.LabelScaleTarget: "2"}, 3, 2},
		{"cpu", map[string]string{gust.LabelScaleType: gust.ScaleCPU}, 2, 2},
		{"rps", map[string]string{gust.LabelScaleType: gust.ScaleRPS}, 2, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHold(t)
			e := newEnv(t, h.handler)
			t.Cleanup(h.releaseAll)
			fn := e.deployTwo("fill", tt.labels)
			var calls []<-chan result
			var ids []string
			for range tt.calls {
				// One at a time, so that each call finds the ones
				// before it in flight.
				calls = append(calls, e.goCall(fn, "/hold"))
				ids = append(ids, h.waitEntered(t, 1)...)
			}
			if got := distinct(ids); got != tt.want {
				t.Errorf("%d calls: got containers %v, want %d distinct", tt.calls, ids, tt.want)
			}
			h.releaseAll()
			for _, ch := range calls {
				wantOK(t, recv(t, ch))
			}
		})
	}
}

// TestPool_StalledInstanceIsNotFilled: an instance whose call in flight
// has not answered for fillStall gets the next call only if it is the
// least loaded, so an idle instance takes it.
func TestPool_StalledInstanceIsNotFilled(t *testing.T) {
	h := newHold(t)
	e := newEnv(t, h.handler)
	t.Cleanup(h.releaseAll)
	fn := e.deployTwo("stall", nil)
	first := e.goCall(fn, "/hold")
	a := h.waitEntered(t, 1)[0]
	time.Sleep(fillStall + 100*time.Millisecond)
	second := e.goCall(fn, "/hold")
	if b := h.waitEntered(t, 1)[0]; b == a {
		t.Errorf("call after %s without an answer from %s: got the same instance, want the idle one", fillStall, a)
	}
	h.releaseAll()
	wantOK(t, recv(t, first))
	wantOK(t, recv(t, second))
}

// TestPool_SpreadsLongCalls: once a pool's calls take fillCallTime or
// more, even the fastest of them, a call goes to the least-loaded
// instance, not to the one already busy.
func TestPool_SpreadsLongCalls(t *testing.T) {
	h := newHold(t)
	e := newEnv(t, func(spec gust.ContainerSpec) http.Handler {
		mux := http.NewServeMux()
		mux.Handle("/", h.handler(spec))
		mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(10 * fillCallTime)
			fmt.Fprintln(w, "slow")
		})
		return mux
	})
	t.Cleanup(h.releaseAll)
	fn := e.deployTwo("long", nil)
	for range 10 {
		wantOK(t, e.call(fn, "/slow"))
	}
	first := e.goCall(fn, "/hold")
	a := h.waitEntered(t, 1)[0]
	second := e.goCall(fn, "/hold")
	if b := h.waitEntered(t, 1)[0]; b == a {
		t.Errorf("second call while %s runs one, after calls of %s: got the same instance, want the idle one", a, 10*fillCallTime)
	}
	h.releaseAll()
	wantOK(t, recv(t, first))
	wantOK(t, recv(t, second))
}

// deployTwo deploys name with two instances of 4 slots each (and labels
// on top), places it here and waits until both are ready.
func (e *testEnv) deployTwo(name string, labels map[string]string) *gust.Function {
	e.t.Helper()
	all := map[string]string{gust.LabelConcurrency: "4", gust.LabelScaleMin: "2", gust.LabelScaleMax: "2"}
	for k, v := range labels {
		all[k] = v
	}
	fn := e.deploy(name, all)
	e.place(fn)
	check.For(e.t, testWait, testPoll, func() error {
		if st := e.pool(fn).status(); st.Available != 2 {
			return fmt.Errorf("pool: got %+v, want 2 instances available", st)
		}
		return nil
	})
	return fn
}

func distinct(ids []string) int {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return len(m)
}

// TestPool_ColdStartSharedByWaiters: calls of a function with no instance
// are held while one instance starts, and that one start serves them all.
func TestPool_ColdStartSharedByWaiters(t *testing.T) {
	var gate *gatedStart
	e := newEnv(t, nil, func(rt *mock.Runtime, _ *Config) { gate = gateStarts(rt) })
	t.Cleanup(gate.release)
	fn := e.deploy("cold", map[string]string{gust.LabelScaleMax: "5"})

	var calls []<-chan result
	for range 8 {
		calls = append(calls, e.goCall(fn, "/x"))
	}
	gate.waitBegan(t, 1)
	check.For(t, testWait, testPoll, func() error {
		if got := e.waiting(fn); got != 8 {
			return fmt.Errorf("held calls: got %d, want 8", got)
		}
		return nil
	})
	if st := e.pool(fn).status(); st.Replicas != 1 || st.Available != 0 {
		t.Errorf("status while starting: got %+v, want 1 replica, none available", st)
	}
	gate.release()
	var container string
	for _, ch := range calls {
		r := recv(t, ch)
		wantOK(t, r)
		if r.header.Get(gust.HeaderColdStart) != "true" {
			t.Errorf("%s: got no cold start header, want one on every held call", gust.HeaderColdStart)
		}
		if container == "" {
			container = r.container
		} else if r.container != container {
			t.Errorf("held calls: got containers %s and %s, want one", container, r.container)
		}
	}
	if got := e.rt.Starts(); got != 1 {
		t.Errorf("starts: got %d, want a single start shared by all waiters", got)
	}
	if r := e.call(fn, "/x"); r.header.Get(gust.HeaderColdStart) != "" {
		t.Errorf("warm call: got cold start header %q, want none", r.header.Get(gust.HeaderColdStart))
	}
}

// TestPool_IdleReapSparesBusyInstance: an idle surplus instance is stopped
// after the idle timeout, but one with a call in flight is never stopped,
// however long the call runs; once idle, it goes too (scale to zero).
func TestPool_IdleReapSparesBusyInstance(t *testing.T) {
	h := newHold(t)
	e := newEnv(t, h.handler)
	t.Cleanup(h.releaseAll)
	fn := e.deploy("reap", map[string]string{
		gust.LabelConcurrency: "1", gust.LabelScaleMax: "2", gust.LabelIdleTimeout: "20ms",
	})

	busy := e.goCall(fn, "/hold")
	a := h.waitEntered(t, 1)[0]
	idle := e.goCall(fn, "/hold")
	b := h.waitEntered(t, 1)[0]
	if a == b {
		t.Fatalf("second call: got container %s again, want a second instance", a)
	}
	// Which held call answers first is not known: release one, see which
	// instance goes idle.
	h.release(t)
	var r result
	select {
	case r = <-busy:
		busy, idle = idle, nil
		a, b = b, a
	case r = <-idle:
	case <-time.After(testWait):
		t.Fatal("no held call answered")
	}
	wantOK(t, r)
	// b is idle, a busy since before b went idle: the reap that stops b
	// looks at a too, with a past its idle timeout as well.
	check.For(t, testWait, testPoll, func() error {
		if e.isRunning(b) {
			return fmt.Errorf("idle instance %s still runs", b)
		}
		return nil
	})
	running := e.rt.Running()
	if len(running) != 1 || running[0].ID != a {
		t.Fatalf("running after the reap: got %+v, want only the busy instance %s", running, a)
	}
	h.release(t)
	wantOK(t, recv(t, busy))
	e.running(0)
	check.For(t, testWait, testPoll, func() error {
		if got := e.rt.Removes(); got != 2 {
			return fmt.Errorf("removes: got %d, want 2", got)
		}
		return nil
	})
	if st := e.pool(fn).status(); st.Replicas != 0 {
		t.Errorf("status after scale to zero: got %+v, want no replica", st)
	}
}

// TestPool_FailedStart: calls waiting for a start that fails get
// EUNAVAILABLE; for a moment after, new calls fail fast rather than start
// container after container; then a start is tried again.
func TestPool_FailedStart(t *testing.T) {
	t.Run("StartError", func(t *testing.T) {
		var failing atomic.Bool
		failing.Store(true)
		var gate *gatedStart
		e := newEnv(t, nil, func(rt *mock.Runtime, _ *Config) {
			start := rt.StartFn
			rt.StartFn = func(ctx context.Context, spec gust.ContainerSpec) (gust.Instance, error) {
				if failing.Load() {
					return gust.Instance{}, errors.New("no room for the container")
				}
				return start(ctx, spec)
			}
			gate = gateStarts(rt) // held until the calls wait
		})
		t.Cleanup(gate.release)
		fn := e.deploy("fails", nil)

		var calls []<-chan result
		for range 3 {
			calls = append(calls, e.goCall(fn, "/x"))
		}
		check.For(t, testWait, testPoll, func() error {
			if got := e.waiting(fn); got != 3 {
				return fmt.Errorf("held calls: got %d, want 3", got)
			}
			return nil
		})
		gate.release()
		for _, ch := range calls {
			r := recv(t, ch)
			if got := gust.ErrorCode(r.err); got != gust.EUNAVAILABLE || r.code != http.StatusServiceUnavailable {
				t.Errorf("call waiting for a failed start: got %d, %v, want 503 EUNAVAILABLE", r.code, r.err)
			}
			if got := r.header.Get(gust.HeaderOutcome); got != gust.OutcomeRejected {
				t.Errorf("outcome: got %q, want %q", got, gust.OutcomeRejected)
			}
		}
		failedAt := time.Now()
		starts := e.rt.Starts()
		r := e.call(fn, "/x")
		if gust.ErrorCode(r.err) != gust.EUNAVAILABLE {
			t.Errorf("call right after the failure: got %d, %v, want EUNAVAILABLE", r.code, r.err)
		}
		// The fail-fast window is a second: only a call well within it
		// says anything.
		if time.Since(failedAt) < 500*time.Millisecond && e.rt.Starts() != starts {
			t.Errorf("call right after the failure: started a container, want it to fail fast")
		}

		failing.Store(false)
		check.For(t, testWait, testPoll, func() error {
			if r := e.call(fn, "/x"); r.err != nil {
				return r.err
			}
			return nil
		})
	})

	t.Run("ExitAtOnce", func(t *testing.T) {
		e := newEnv(t, nil, func(rt *mock.Runtime, _ *Config) { rt.ExitOnStart("img:1", 3) })
		fn := e.deploy("crashes", nil)
		r := e.call(fn, "/x")
		if gust.ErrorCode(r.err) != gust.EUNAVAILABLE {
			t.Fatalf("call: got %d, %v, want EUNAVAILABLE", r.code, r.err)
		}
		if msg := gust.ErrorMessage(r.err); !containsAll(msg, "could not start", "code 3") {
			t.Errorf("message: got %q, want it to say the function could not start and its exit code", msg)
		}
		e.running(0)
	})
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestPool_InstanceExits: an instance whose container exits on its own
// leaves the pool and its container is removed; the next call starts a
// replacement. A call in flight when it crashes gets EFUNCTION.
func TestPool_InstanceExits(t *testing.T) {
	t.Run("Idle", func(t *testing.T) {
		e := newEnv(t, nil)
		fn := e.deploy("exits", nil)
		first := e.call(fn, "/x")
		wantOK(t, first)
		if !e.rt.Exit(first.container, 1) {
			t.Fatalf("container %s was not running", first.container)
		}
		check.For(t, testWait, testPoll, func() error {
			if st := e.pool(fn).status(); st.Replicas != 0 {
				return fmt.Errorf("status: got %+v, want the exited instance gone", st)
			}
			if e.rt.Removes() != 1 {
				return fmt.Errorf("removes: got %d, want 1", e.rt.Removes())
			}
			return nil
		})
		second := e.call(fn, "/x")
		wantOK(t, second)
		if second.container == first.container {
			t.Errorf("call after the exit: got the exited container, want a replacement")
		}
		if got := e.rt.Starts(); got != 2 {
			t.Errorf("starts: got %d, want 2", got)
		}
	})

	t.Run("MidCall", func(t *testing.T) {
		e := newEnv(t, nil)
		fn := e.deploy("crashes", nil)
		first := e.call(fn, "/x")
		wantOK(t, first)
		r := e.call(fn, "/x?exit=2") // the fake container dies before it answers
		if gust.ErrorCode(r.err) != gust.EFUNCTION || r.code != http.StatusBadGateway {
			t.Fatalf("crashed call: got %d, %v, want 502 EFUNCTION", r.code, r.err)
		}
		if got := r.header.Get(gust.HeaderOutcome); got != gust.OutcomeCrashed {
			t.Errorf("outcome: got %q, want %q", got, gust.OutcomeCrashed)
		}
		e.running(0)
		check.For(t, testWait, testPoll, func() error {
			if st := e.pool(fn).status(); st.Replicas != 0 {
				return fmt.Errorf("status: got %+v, want the crashed instance gone", st)
			}
			return nil
		})
		next := e.call(fn, "/x")
		wantOK(t, next)
		if next.container == first.container {
			t.Errorf("call after the crash: got the crashed container, want a replacement")
		}
	})
}

// TestWorker_Drain: draining refuses new calls with ErrDraining, lets the
// calls in flight finish, and removes every container.
func TestWorker_Drain(t *testing.T) {
	h := newHold(t)
	e := newEnv(t, h.handler)
	t.Cleanup(h.releaseAll)
	fn := e.deploy("drain", map[string]string{gust.LabelScaleMin: "2"})
	e.place(fn)
	e.running(2)
	inflight := e.goCall(fn, "/hold")
	h.waitEntered(t, 1)

	drained := make(chan error, 1)
	go func() { drained <- e.w.Drain(context.Background()) }()
	check.For(t, testWait, testPoll, func() error {
		e.w.mu.Lock()
		defer e.w.mu.Unlock()
		if !e.w.draining {
			return errors.New("worker not draining yet")
		}
		return nil
	})
	r := e.call(fn, "/x")
	if !errors.Is(r.err, gust.ErrDraining) || r.code != http.StatusServiceUnavailable {
		t.Errorf("call while draining: got %d, %v, want 503 gust.ErrDraining", r.code, r.err)
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v with a call in flight", err)
	default:
	}
	h.release(t)
	wantOK(t, recv(t, inflight))
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(testWait):
		t.Fatal("Drain did not return after the last call")
	}
	if got := e.rt.Running(); len(got) != 0 {
		t.Errorf("running after Drain: got %+v, want none", got)
	}
	list, err := e.rt.List(context.Background(), map[string]string{gust.LabelWorker: e.w.cfg.ID})
	if err != nil || len(list) != 0 {
		t.Errorf("containers after Drain: got %+v, %v, want none", list, err)
	}
}

// TestPool_DeletedWhileStarting: an instance still starting when its
// function is deleted is stopped and removed once its start finishes (it
// used to run until the worker restarted).
func TestPool_DeletedWhileStarting(t *testing.T) {
	var gate *gatedStart
	e := newEnv(t, nil, func(rt *mock.Runtime, _ *Config) { gate = gateStarts(rt) })
	t.Cleanup(gate.release)
	fn := e.deploy("deleted", nil)
	held := e.goCall(fn, "/x")
	gate.waitBegan(t, 1)

	e.remove(fn)
	r := recv(t, held)
	if gust.ErrorCode(r.err) != gust.EUNAVAILABLE {
		t.Errorf("call held while its function was deleted: got %d, %v, want EUNAVAILABLE", r.code, r.err)
	}
	check.For(t, testWait, testPoll, func() error {
		if e.pool(fn) != nil {
			return errors.New("worker still has a pool of the deleted function")
		}
		return nil
	})
	gate.release()
	check.For(t, testWait, testPoll, func() error {
		if e.rt.Starts() != 1 {
			return errors.New("the start has not finished")
		}
		list, err := e.rt.List(context.Background(), map[string]string{gust.LabelFunction: fn.Spec.Service})
		if err != nil {
			return err
		}
		if len(list) != 0 {
			return fmt.Errorf("containers of the deleted function: got %d, want none", len(list))
		}
		return nil
	})
}

// TestPool_Redeploy: a new version's concurrency, scale limits and idle
// timeout apply to the pool at once. Instances of the old version retire:
// they take no new call, finish the calls they have, and are stopped once
// idle, whatever the idle timeout.
func TestPool_Redeploy(t *testing.T) {
	h := newHold(t)
	e := newEnv(t, h.handler)
	t.Cleanup(h.releaseAll)
	fn := e.deploy("redeploy", map[string]string{
		gust.LabelConcurrency: "1", gust.LabelScaleMax: "1", gust.LabelIdleTimeout: "1h",
	})
	old := e.goCall(fn, "/hold")
	v1 := h.waitEntered(t, 1)[0]

	v2 := *fn
	v2.Version = 2
	v2.Spec.Labels = map[string]string{
		gust.LabelTimeout: "20s", gust.LabelConcurrency: "3", gust.LabelScaleMax: "2", gust.LabelIdleTimeout: "20ms",
	}
	e.put(&v2)
	var calls []<-chan result
	for range 3 {
		calls = append(calls, e.goCall(&v2, "/hold"))
	}
	ids := h.waitEntered(t, 3)
	if distinct(ids) != 1 || ids[0] == v1 {
		t.Errorf("calls after the redeploy: got containers %v, want one new instance (concurrency 3), not %s", ids, v1)
	}
	list, err := e.rt.List(context.Background(), map[string]string{gust.LabelVersion: "2"})
	if err != nil || len(list) != 1 || list[0].ID != ids[0] {
		t.Errorf("instances of version 2: got %+v, %v, want %s", list, err, ids[0])
	}
	if !e.isRunning(v1) {
		t.Fatalf("old instance %s stopped with a call in flight", v1)
	}
	// Idle timeouts: the old one goes as soon as it is idle (it retires),
	// the new one 20ms after its last call: both are gone in the end.
	h.releaseAll()
	wantOK(t, recv(t, old))
	for _, ch := range calls {
		wantOK(t, recv(t, ch))
	}
	e.running(0)
	if got := e.rt.Starts(); got != 2 {
		t.Errorf("starts: got %d, want 2 (one per version)", got)
	}
}

// TestPool_ScaleOrder: a scale-function order of the same version applies
// at once: instances start with no call, and an order of 0 stops them
// (here with an idle timeout of an hour: the order does not wait for it),
// even with a minimum. The scheduler's prepare of the placement that
// follows the order of 0 starts nothing (it started one, which the
// minimum then kept: TestMinWarmAndScaleFunction failed in .ci/run).
func TestPool_ScaleOrder(t *testing.T) {
	e := newEnv(t, nil)
	fn := e.deploy("scaled", map[string]string{gust.LabelIdleTimeout: "1h", gust.LabelScaleMin: "1"})
	e.place(fn)
	fn.Scaled = &gust.ScaleOrder{Replicas: 2, At: time.Now()}
	e.put(fn)
	e.running(2)
	fn.Scaled = &gust.ScaleOrder{Replicas: 0, At: time.Now()}
	e.put(fn)
	e.running(0)
	if reply := e.prepare(fn); reply.Err() != nil {
		t.Fatalf("prepare after the order of 0: %v", reply.Err())
	}
	e.running(0)
	if got := e.rt.Starts(); got != 2 {
		t.Errorf("starts: got %d, want 2", got)
	}
}

// TestPool_StartsUseNewerVersionOfCall: a call that carries a newer version
// of the function than the worker has seen (the gateway saw the deploy
// first) applies it to the pool at once: it runs on an instance of that
// version.
func TestPool_StartsUseNewerVersionOfCall(t *testing.T) {
	e := newEnv(t, nil)
	fn := e.deploy("newer", nil)
	first := e.call(fn, "/x")
	wantOK(t, first)
	v2 := *fn
	v2.Version = 2 // not in the registry yet
	r := e.call(&v2, "/x")
	wantOK(t, r)
	if r.container == first.container {
		t.Errorf("call of version 2: ran on the version 1 instance")
	}
	list, err := e.rt.List(context.Background(), map[string]string{gust.LabelVersion: strconv.FormatUint(v2.Version, 10)})
	if err != nil || len(list) != 1 || list[0].ID != r.container {
		t.Errorf("instances of version 2: got %+v, %v, want the one that answered", list, err)
	}
}

// TestWorker_DrainPastDeadline: a call still in flight when Drain gives
// up waiting is cut when Drain removes the containers, and gets EFUNCTION.
// Its clean-up (stopping its instance) runs on the call's own goroutine:
// once Drain has waited for the worker's goroutines, the worker starts no
// more. It used to start one there, with a WaitGroup.Add that raced with
// Drain's Wait. (The race detector cannot see that race in this test: the
// network I/O between the two goroutines orders them for it. The test
// checks its cause instead: where the stop runs.)
func TestWorker_DrainPastDeadline(t *testing.T) {
	h := newHold(t)
	stops := make(chan struct{}, 10)
	stopGate := make(chan struct{})
	var once sync.Once
	openStops := func() { once.Do(func() { close(stopGate) }) }
	e := newEnv(t, h.handler, func(rt *mock.Runtime, _ *Config) {
		stop := rt.StopFn
		rt.StopFn = func(ctx context.Context, id string, grace time.Duration) error {
			stops <- struct{}{}
			<-stopGate
			return stop(ctx, id, grace)
		}
	})
	t.Cleanup(h.releaseAll)
	t.Cleanup(openStops)
	fn := e.deploy("late", nil)
	inflight := e.goCall(fn, "/hold")
	h.waitEntered(t, 1)

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Drain gives up waiting for calls at once
	if err := e.w.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	select {
	case <-stops:
	case <-time.After(testWait):
		t.Fatal("the instance of the cut call was not stopped")
	}
	if !goroutineIn("(*Worker).stopContainer", "(*Worker).Invoke") {
		t.Errorf("the instance of a call that ended after Drain is stopped by a goroutine of its own, want the call's goroutine")
	}
	openStops()
	r := recv(t, inflight)
	if gust.ErrorCode(r.err) != gust.EFUNCTION {
		t.Errorf("call cut by Drain: got %d, %v, want EFUNCTION", r.code, r.err)
	}
	e.running(0)
}

// goroutineIn reports whether some goroutine's stack holds every one of
// frames.
func goroutineIn(frames ...string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		all := true
		for _, f := range frames {
			all = all && strings.Contains(g, f)
		}
		if all {
			return true
		}
	}
	return false
}

// TestPool_StaleCallAfterRedeployFromScratch: a function deleted and
// deployed again counts its versions anew. A call still carrying the
// deleted record (a higher version, an older creation) runs on the new
// deploy; it must not bring the old one back.
func TestPool_StaleCallAfterRedeployFromScratch(t *testing.T) {
	e := newEnv(t, nil)
	old := e.deploy("again", nil)
	old.Version = 3
	old.CreatedAt = time.Now().Add(-time.Hour)
	e.put(old)
	e.remove(old)
	check.For(t, testWait, testPoll, func() error {
		e.w.mu.Lock()
		defer e.w.mu.Unlock()
		if e.w.functions[old.Key()] != nil {
			return errors.New("worker still knows the deleted function")
		}
		return nil
	})
	fresh := *old
	fresh.Version = 1
	fresh.CreatedAt = time.Now()
	e.put(&fresh)
	wantOK(t, e.call(old, "/x"))
	list, err := e.rt.List(context.Background(), map[string]string{gust.LabelFunction: "again"})
	if err != nil || len(list) != 1 || list[0].Labels[gust.LabelVersion] != "1" {
		t.Errorf("instances: got %+v, %v, want one of the new deploy (version 1)", list, err)
	}
}
