package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/mock"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
)

// The worker's unit tests run the real worker on the fake runtime
// (internal/mock, held to Docker's behaviour by internal/runtimetest) and a
// real embedded NATS server, and drive it as the gateway does: through
// Invoke and the function registry.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testEnv is one worker on a fake runtime and a NATS server of its own.
type testEnv struct {
	t     *testing.T
	rt    *mock.Runtime
	state *gust.State
	w     *Worker
}

// newEnv starts a worker on a fake runtime serving handler (nil: the
// fake's DefaultHandler). setup runs before the worker starts: it may
// replace the runtime's ...Fn fields or the worker's config. Cleanup
// closes the worker, then the runtime, then NATS.
func newEnv(t *testing.T, handler func(gust.ContainerSpec) http.Handler, setup ...func(*mock.Runtime, *Config)) *testEnv {
	t.Helper()
	return newEnvWithSecrets(t, handler, nil, setup...)
}

// newEnvWithSecrets is newEnv with a worker that mounts secrets from
// secrets (nil: none, as newEnv).
func newEnvWithSecrets(t *testing.T, handler func(gust.ContainerSpec) http.Handler, secrets gust.SecretStore, setup ...func(*mock.Runtime, *Config)) *testEnv {
	t.Helper()
	logger := zaptest.NewLogger(t)
	state, bus := natsbustest.MustOpenState(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rt := mock.NewRuntime(handler)
	t.Cleanup(rt.Close)
	cfg := DefaultConfig()
	cfg.ID = "w-" + randomID()
	cfg.Addr = "http://127.0.0.1:1"
	cfg.ReadyTimeout = 10 * time.Second
	cfg.StopGrace = 0
	cfg.Heartbeat = 50 * time.Millisecond
	cfg.ReapInterval = 5 * time.Millisecond
	for _, f := range setup {
		f(rt, &cfg)
	}
	w := New(cfg, rt, state, bus, logger)
	if secrets != nil {
		w.WithSecrets(secrets)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("close worker: %v", err)
		}
	})
	return &testEnv{t: t, rt: rt, state: state, w: w}
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// deploy writes fn (version 1 unless set) to the registry and waits until
// the worker has seen it.
func (e *testEnv) deploy(name string, labels map[string]string) *gust.Function {
	e.t.Helper()
	fn := &gust.Function{
		Spec: gust.FunctionSpec{
			Service: name, Namespace: "ns", Image: "img:1",
			Labels: map[string]string{gust.LabelTimeout: "20s"},
		},
		Version: 1,
	}
	for k, v := range labels {
		fn.Spec.Labels[k] = v
	}
	e.put(fn)
	return fn
}

// put writes fn to the registry and waits until the worker has seen this
// version of it.
func (e *testEnv) put(fn *gust.Function) {
	e.t.Helper()
	if _, err := e.state.Functions.Put(context.Background(), fn.Key(), *fn); err != nil {
		e.t.Fatalf("put function: %v", err)
	}
	check.For(e.t, testWait, testPoll, func() error {
		e.w.mu.Lock()
		defer e.w.mu.Unlock()
		if got := e.w.functions[fn.Key()]; got == nil || got.Version != fn.Version || !sameOrder(got.Scaled, fn.Scaled) {
			return fmt.Errorf("worker has not seen %s version %d", fn.Key(), fn.Version)
		}
		return nil
	})
}

func sameOrder(a, b *gust.ScaleOrder) bool {
	return a == nil && b == nil || a != nil && b != nil && a.Replicas == b.Replicas && a.At.Equal(b.At)
}

// place puts fn on this worker alone, as the scheduler would: the worker
// makes its pool and keeps its warm minimum.
func (e *testEnv) place(fn *gust.Function) {
	e.t.Helper()
	pl := gust.Placement{Workers: []string{e.w.cfg.ID}, Version: fn.Version}
	if _, err := e.state.Placements.Put(context.Background(), fn.Key(), pl); err != nil {
		e.t.Fatalf("put placement: %v", err)
	}
	check.For(e.t, testWait, testPoll, func() error {
		if e.pool(fn) == nil {
			return fmt.Errorf("worker has no pool of %s", fn.Key())
		}
		return nil
	})
}

// remove deletes fn from the registry.
func (e *testEnv) remove(fn *gust.Function) {
	e.t.Helper()
	if err := e.state.Functions.Delete(context.Background(), fn.Key()); err != nil {
		e.t.Fatalf("delete function: %v", err)
	}
}

// pool returns the worker's pool of fn, nil if it has none.
func (e *testEnv) pool(fn *gust.Function) *pool {
	e.w.mu.Lock()
	defer e.w.mu.Unlock()
	return e.w.pools[fn.Key()]
}

// waiting returns how many calls wait for a slot in fn's pool.
func (e *testEnv) waiting(fn *gust.Function) int {
	p := e.pool(fn)
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiting
}

// result is the outcome of one call.
type result struct {
	code      int
	body      string
	header    http.Header
	err       error
	container string // the fake container that answered
}

// call runs one call of fn on path through Worker.Invoke, as the
// gateway's in-process path does, and answers an error as the gateway
// would (gust.HTTPStatus).
func (e *testEnv) call(fn *gust.Function, path string) result {
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.Header.Set(gust.HeaderCallID, "call-"+randomID())
	err := e.w.Invoke(rec, r, fn)
	res := result{code: rec.Code, header: rec.Header(), err: err}
	if err != nil {
		res.code = gust.HTTPStatus(err)
	}
	b, _ := io.ReadAll(rec.Body)
	res.body = string(b)
	res.container = rec.Header().Get(mock.HeaderContainer)
	return res
}

// goCall runs call in a goroutine the test waits for (at cleanup at the
// latest) and returns its result's channel.
func (e *testEnv) goCall(fn *gust.Function, path string) <-chan result {
	ch := make(chan result, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ch <- e.call(fn, path)
	}()
	e.t.Cleanup(wg.Wait)
	return ch
}

// recv waits for a call's result.
func recv(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(testWait):
		t.Fatalf("no result after %s", testWait)
		return result{}
	}
}

// wantOK fails t unless r is a 200 answer of the function's.
func wantOK(t *testing.T, r result) {
	t.Helper()
	if r.err != nil || r.code != http.StatusOK {
		t.Fatalf("call: got %d, %v (%q), want 200", r.code, r.err, r.body)
	}
	if got := r.header.Get(gust.HeaderOutcome); got != gust.OutcomeOK {
		t.Errorf("outcome: got %q, want %q", got, gust.OutcomeOK)
	}
}

// testWait bounds every wait of these tests; nothing is expected to take
// more than a fraction of it. testPoll is how often a wait asks again:
// the fake runtime answers in microseconds.
const (
	testWait = 10 * time.Second
	testPoll = 2 * time.Millisecond
)

// running polls until the fake runs n containers.
func (e *testEnv) running(n int) {
	e.t.Helper()
	check.For(e.t, testWait, testPoll, func() error {
		if got := len(e.rt.Running()); got != n {
			return fmt.Errorf("running containers: got %d, want %d", got, n)
		}
		return nil
	})
}

// isRunning reports whether the fake runs container id.
func (e *testEnv) isRunning(id string) bool {
	for _, in := range e.rt.Running() {
		if in.ID == id {
			return true
		}
	}
	return false
}

// hold is a function handler whose calls on /hold block until the test
// lets them go; other paths get the fake's DefaultHandler.
type hold struct {
	entered chan string   // the container id of each call that reached /hold
	one     chan struct{} // a send lets one held call answer
	all     chan struct{} // closed: every held call answers
	once    sync.Once
}

func newHold(t *testing.T) *hold {
	h := &hold{entered: make(chan string, 100), one: make(chan struct{}), all: make(chan struct{})}
	return h
}

func (h *hold) handler(gust.ContainerSpec) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", mock.DefaultHandler())
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(mock.HeaderContainer, mock.ContainerID(r))
		h.entered <- mock.ContainerID(r)
		select {
		case <-h.one:
		case <-h.all:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintln(w, "released")
	})
	return mux
}

// releaseAll lets every held call answer, now and later. Register it with
// t.Cleanup after newEnv, so it runs before the worker drains.
func (h *hold) releaseAll() { h.once.Do(func() { close(h.all) }) }

// release lets one held call answer.
func (h *hold) release(t *testing.T) {
	t.Helper()
	select {
	case h.one <- struct{}{}:
	case <-time.After(testWait):
		t.Fatal("no held call to release")
	}
}

// waitEntered waits until n more calls reached /hold and returns their
// container ids.
func (h *hold) waitEntered(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		select {
		case id := <-h.entered:
			ids = append(ids, id)
		case <-time.After(testWait):
			t.Fatalf("%d of %d calls reached the function", len(ids), n)
		}
	}
	return ids
}

// gatedStart makes the fake's starts block until the returned function is
// called (once), and counts the starts that began.
type gatedStart struct {
	began chan struct{}
	open  chan struct{}
	once  sync.Once
}

func gateStarts(rt *mock.Runtime) *gatedStart {
	g := &gatedStart{began: make(chan struct{}, 100), open: make(chan struct{})}
	start := rt.StartFn
	rt.StartFn = func(ctx context.Context, spec gust.ContainerSpec) (gust.Instance, error) {
		g.began <- struct{}{}
		select {
		case <-g.open:
		case <-ctx.Done():
			return gust.Instance{}, ctx.Err()
		}
		return start(ctx, spec)
	}
	return g
}

func (g *gatedStart) release() { g.once.Do(func() { close(g.open) }) }

// waitBegan waits until n more starts have begun.
func (g *gatedStart) waitBegan(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-g.began:
		case <-time.After(testWait):
			t.Fatalf("%d of %d starts began", i, n)
		}
	}
}
