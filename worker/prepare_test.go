package worker

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/mock"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"go.uber.org/zap/zaptest"
)

// preparingRuntime is the fake runtime with gust.Preparer: it records
// what is prepared and which starts found their container prepared.
type preparingRuntime struct {
	*mock.Runtime
	mu           sync.Mutex
	prepared     map[string]gust.ContainerSpec
	fromPrepared []string // names started from a prepared container
	unprepared   []string
	fail         int // the next fail preparations fail
}

func (r *preparingRuntime) Prepare(_ context.Context, spec gust.ContainerSpec) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return fmt.Errorf("start holder: cannot start a stopped process")
	}
	r.prepared[spec.Name] = spec
	return nil
}

func (r *preparingRuntime) Unprepare(_ context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.prepared[name]; ok {
		r.unprepared = append(r.unprepared, name)
	}
	delete(r.prepared, name)
	return nil
}

func (r *preparingRuntime) Start(ctx context.Context, spec gust.ContainerSpec) (gust.Instance, error) {
	r.mu.Lock()
	if _, ok := r.prepared[spec.Name]; ok {
		r.fromPrepared = append(r.fromPrepared, spec.Name)
		delete(r.prepared, spec.Name)
	}
	r.mu.Unlock()
	return r.Runtime.Start(ctx, spec)
}

func (r *preparingRuntime) names() (prepared []string, from []string, un []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n := range r.prepared {
		prepared = append(prepared, n)
	}
	return prepared, append([]string(nil), r.fromPrepared...), append([]string(nil), r.unprepared...)
}

// waitOnePrepared waits until exactly one container is prepared and
// returns its name.
func (r *preparingRuntime) waitOnePrepared(t *testing.T) string {
	t.Helper()
	var name string
	check.For(t, testWait, testPoll, func() error {
		p, _, _ := r.names()
		if len(p) != 1 {
			return fmt.Errorf("prepared: %v, want one", p)
		}
		name = p[0]
		return nil
	})
	return name
}

// TestPrepared: on a runtime that prepares, a pool keeps its next
// instance's container prepared after a start; the next start (here,
// after its instance exits) uses it; deleting the function removes what
// was prepared.
func TestPrepared(t *testing.T) {
	e, rt, _ := preparingEnv(t, 0)

	fn := e.deploy("prep", nil)
	if res := e.call(fn, "/"); res.code != http.StatusOK {
		t.Fatalf("first call: %d %v", res.code, res.err)
	}
	name := rt.waitOnePrepared(t)
	rt.mu.Lock()
	spec := rt.prepared[name]
	rt.mu.Unlock()
	if spec.Labels[gust.LabelWorker] != e.w.cfg.ID || spec.Labels[gust.LabelVersion] != "1" || !strings.HasSuffix(name, spec.Labels[gust.LabelInstance]) {
		t.Errorf("prepared spec: %+v", spec)
	}
	// The instance exits: the next call starts the prepared container.
	running := e.rt.Running()
	if len(running) != 1 || !e.rt.Exit(running[0].ID, 1) {
		t.Fatalf("running: %+v", running)
	}
	check.For(t, testWait, testPoll, func() error {
		p := e.pool(fn)
		p.mu.Lock()
		defer p.mu.Unlock()
		if s, r := p.liveLocked(); s+r != 0 {
			return fmt.Errorf("instance still in the pool")
		}
		return nil
	})
	if res := e.call(fn, "/"); res.code != http.StatusOK {
		t.Fatalf("second call: %d %v", res.code, res.err)
	}
	_, from, _ := rt.names()
	if len(from) != 1 || from[0] != name {
		t.Errorf("started from prepared: %v, want [%s]", from, name)
	}
	// Prepared again for the start after.
	var next string
	check.For(t, testWait, testPoll, func() error {
		p, _, _ := rt.names()
		if len(p) != 1 || p[0] == name {
			return fmt.Errorf("prepared: %v, want a new one", p)
		}
		next = p[0]
		return nil
	})
	// Deleting the function removes it.
	e.remove(fn)
	check.For(t, testWait, testPoll, func() error {
		if _, _, un := rt.names(); len(un) != 1 || un[0] != next {
			return fmt.Errorf("unprepared: %v, want [%s]", un, next)
		}
		return nil
	})
}

// TestPrepared_OnPlacement: a function placed here with no instance gets
// its first instance's container prepared, and its first call starts it.
func TestPrepared_OnPlacement(t *testing.T) {
	e, rt, _ := preparingEnv(t, 0)
	fn := e.deploy("first", map[string]string{gust.LabelScaleMin: "0"})
	e.place(fn)
	name := rt.waitOnePrepared(t)
	if n := len(e.rt.Running()); n != 0 {
		t.Fatalf("running before any call: %d", n)
	}
	if res := e.call(fn, "/"); res.code != http.StatusOK {
		t.Fatalf("first call: %d %v", res.code, res.err)
	}
	if _, from, _ := rt.names(); len(from) != 1 || from[0] != name {
		t.Errorf("first call started from prepared: %v, want [%s]", from, name)
	}
}

// preparingEnv starts a worker on a preparing runtime whose calls on
// /hold answer once hold is unlocked, with cfg.BurstMemory memory (0: the
// default); Close must succeed when the test ends.
func preparingEnv(t *testing.T, memory time.Duration) (*testEnv, *preparingRuntime, *sync.RWMutex) {
	state, bus := natsbustest.MustOpenState(t)
	hold := new(sync.RWMutex) // calls on /hold answer once it is unlocked
	rt := &preparingRuntime{Runtime: mock.NewRuntime(func(gust.ContainerSpec) http.Handler {
		def := mock.DefaultHandler()
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hold" {
				hold.RLock()
				hold.RUnlock()
			}
			def.ServeHTTP(w, r)
		})
	}), prepared: map[string]gust.ContainerSpec{}}
	t.Cleanup(rt.Runtime.Close)
	cfg := DefaultConfig()
	cfg.ID = "w-" + randomID()
	cfg.Addr = "http://127.0.0.1:1"
	cfg.ReadyTimeout = 10 * time.Second
	cfg.StopGrace = 0
	cfg.Heartbeat = 50 * time.Millisecond
	cfg.ReapInterval = 5 * time.Millisecond
	cfg.BurstMemory = memory
	w := New(cfg, rt, state, bus, zaptest.NewLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("close worker: %v", err)
		}
	})
	return &testEnv{t: t, rt: rt.Runtime, state: state, w: w}, rt, hold
}

// TestPrepared_BurstForgotten: the worker's BurstMemory after a pool's
// last burst, it keeps one container prepared again, the rest removed.
func TestPrepared_BurstForgotten(t *testing.T) {
	e, rt, hold := preparingEnv(t, time.Second)
	const burst = 3
	fn := e.deploy("forgets", map[string]string{
		gust.LabelScaleMin: "0", gust.LabelScaleMax: fmt.Sprint(burst), gust.LabelConcurrency: "1",
		gust.LabelIdleTimeout: "100ms", gust.LabelPauseAfter: "0",
	})
	e.place(fn)
	hold.Lock()
	var calls []<-chan result
	for range burst {
		calls = append(calls, e.goCall(fn, "/hold"))
	}
	e.running(burst)
	hold.Unlock()
	for _, c := range calls {
		if r := recv(t, c); r.code != http.StatusOK {
			t.Fatalf("call: %d %v", r.code, r.err)
		}
	}
	e.running(0)
	check.For(t, testWait, testPoll, func() error {
		if p, _, _ := rt.names(); len(p) != burst {
			return fmt.Errorf("prepared after the burst: %d, want %d", len(p), burst)
		}
		return nil
	})
	_, _, unBefore := rt.names()
	check.For(t, testWait, testPoll, func() error {
		if p, _, _ := rt.names(); len(p) != 1 {
			return fmt.Errorf("prepared a while after the burst: %d, want 1", len(p))
		}
		return nil
	})
	if _, _, un := rt.names(); len(un)-len(unBefore) != burst-1 {
		t.Errorf("%d unprepared when the burst was forgotten, want %d", len(un)-len(unBefore), burst-1)
	}
}

// TestPrepared_Burst: a pool that has been bursty keeps as many
// instances prepared as its burst started, once it is back at zero (a
// preparation that fails now and then does not end the round), and its
// next burst starts every one of them from a prepared container. A new
// version of the function removes them.
func TestPrepared_Burst(t *testing.T) {
	e, rt, hold := preparingEnv(t, 0)
	const burst = 3
	fn := e.deploy("bursty", map[string]string{
		gust.LabelScaleMin: "0", gust.LabelScaleMax: fmt.Sprint(burst), gust.LabelConcurrency: "1",
		gust.LabelIdleTimeout: "100ms", gust.LabelPauseAfter: "0",
	})
	e.place(fn)
	for round := range 2 {
		_, fromBefore, _ := rt.names()
		hold.Lock()
		var calls []<-chan result
		for range burst {
			calls = append(calls, e.goCall(fn, "/hold"))
		}
		e.running(burst)
		rt.mu.Lock()
		rt.fail = 1
		rt.mu.Unlock()
		hold.Unlock()
		for _, c := range calls {
			if r := recv(t, c); r.code != http.StatusOK {
				t.Fatalf("round %d: call: %d %v", round, r.code, r.err)
			}
		}
		_, from, _ := rt.names()
		if round == 1 && len(from)-len(fromBefore) != burst {
			t.Errorf("second burst: %d starts from prepared containers, want %d", len(from)-len(fromBefore), burst)
		}
		// Idle: back to zero, with the burst's instances prepared.
		e.running(0)
		check.For(t, testWait, testPoll, func() error {
			if p, _, _ := rt.names(); len(p) != burst {
				return fmt.Errorf("round %d: prepared: %d, want %d", round, len(p), burst)
			}
			return nil
		})
	}
	// A new version: what was prepared for the old one goes at once.
	prepared, _, _ := rt.names()
	v2 := *fn
	v2.Version = 2
	e.put(&v2)
	check.For(t, testWait, testPoll, func() error {
		_, _, un := rt.names()
		gone := map[string]bool{}
		for _, name := range un {
			gone[name] = true
		}
		for _, name := range prepared {
			if !gone[name] {
				return fmt.Errorf("%s, prepared for version 1, not unprepared after version 2", name)
			}
		}
		return nil
	})
	e.remove(&v2)
	check.For(t, testWait, testPoll, func() error {
		if p, _, _ := rt.names(); len(p) != 0 {
			return fmt.Errorf("prepared after the function's removal: %v", p)
		}
		return nil
	})
}
