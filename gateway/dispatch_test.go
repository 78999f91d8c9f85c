package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/mock"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/gustfaas/gust/internal/spool"
	"github.com/gustfaas/gust/internal/sqlite"
	"github.com/gustfaas/gust/worker"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"
)

// The dispatcher's tests run it on the path production uses, with a fake
// only at the container seam: a real gateway (its HTTP API on 127.0.0.1),
// router and dispatcher; a real worker as the router's in-process invoker,
// running function "containers" of the fake runtime (internal/mock: HTTP
// servers in the test process); a real embedded NATS server holding the
// registry, the async queue, the dead letters and the call statuses; and
// the real metering path (spool, JetStream, ingest) into a SQLite store,
// so the records of attempts are the ones the worker made. The scheduler
// is the fake one of gateway_test.go: it places every function on the
// worker.

// asyncEnv is one gateway with a dispatcher and one worker.
type asyncEnv struct {
	t      *testing.T
	url    string // the gateway's base URL
	bus    *natsbus.Bus
	state  *gust.State
	async  *gateway.Async
	router *gateway.Router
	d      *gateway.Dispatcher
	// metrics are the dispatcher's.
	metrics *metrics.Metrics
	// queue is async.Queue: the bus, refusing enqueues when told to.
	queue *refusingQueue

	mu      sync.Mutex
	handler http.HandlerFunc // the function, in every container
}

// refusingQueue is the bus's queue, refusing every enqueue while refuse
// is set, as a full stream does (natsbus.Bus.Enqueue).
type refusingQueue struct {
	*natsbus.Bus
	refuse atomic.Bool
}

func (q *refusingQueue) Enqueue(ctx context.Context, subject, msgID string, data []byte) error {
	if q.refuse.Load() {
		return gust.Errorf(gust.EUNAVAILABLE, "the queue is full (test); retry later")
	}
	return q.Bus.Enqueue(ctx, subject, msgID, data)
}

// setHandler replaces what the functions' containers answer (their
// health check aside).
func (e *asyncEnv) setHandler(h http.HandlerFunc) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.handler = h
}

// MustOpenAsync starts an asyncEnv whose functions answer as
// mock.DefaultHandler (the request body echoed) until setHandler. setup
// runs on the dispatcher before it starts. Everything stops when the test
// ends, the gateway first.
func MustOpenAsync(t *testing.T, setup ...func(*gateway.Dispatcher)) *asyncEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	logger := zaptest.NewLogger(t)
	dir := t.TempDir()
	st, bus := natsbustest.MustOpenState(t)
	as, err := natsbus.OpenAsync(ctx, bus, time.Hour)
	if err != nil {
		t.Fatalf("open async: %v", err)
	}
	queue := &refusingQueue{Bus: bus}
	async := &gateway.Async{
		Queue: queue, Events: bus, DeadLetters: natsbus.NewDeadLetters(bus),
		Calls: as.Calls, Idempotency: as.Idempotency, Stream: natsbus.StreamAsync,
	}

	// Metering, as `gust up` wires it.
	if err := natsbus.EnsureMeterStream(ctx, bus, time.Hour); err != nil {
		t.Fatalf("meter stream: %v", err)
	}
	sp, err := spool.Open(filepath.Join(dir, "spool"), 64<<20)
	if err != nil {
		t.Fatalf("open spool: %v", err)
	}
	meter := natsbus.NewMeter(bus, sp, nil, logger)
	meter.Start()
	store, err := sqlite.Open(filepath.Join(dir, "billing.db"), logger)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	ingest := natsbus.NewIngest(bus, store, "billing-test", nil, logger)
	if err := ingest.Start(ctx); err != nil {
		t.Fatalf("start ingest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := meter.Close(ctx); err != nil {
			t.Errorf("close meter: %v", err)
		}
		ingest.Close()
		if err := store.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})

	e := &asyncEnv{t: t, bus: bus, state: st, async: async, queue: queue}
	e.handler = mock.DefaultHandler().ServeHTTP
	rt := mock.NewRuntime(func(gust.ContainerSpec) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/_/health" {
				return
			}
			e.mu.Lock()
			h := e.handler
			e.mu.Unlock()
			h(w, r)
		})
	})
	t.Cleanup(rt.Close)
	wcfg := worker.DefaultConfig()
	wcfg.ID, wcfg.Addr = "w1", "http://127.0.0.1:1"
	wcfg.StopGrace = 0
	wk := worker.New(wcfg, rt, st, bus, logger).WithMetering(meter, nil)
	if err := wk.Start(ctx); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	t.Cleanup(func() {
		if err := wk.Close(); err != nil {
			t.Errorf("close worker: %v", err)
		}
	})

	sched := &fakeScheduler{reply: placeOK}
	stop, err := bus.Handle(ctx, gust.SubjectPlace, "", func(_ context.Context, data []byte) any {
		var req gust.PlaceRequest
		if err := json.Unmarshal(data, &req); err != nil {
			return gust.PlaceReply{Reply: gust.ReplyOf(err)}
		}
		sched.mu.Lock()
		defer sched.mu.Unlock()
		sched.reqs = append(sched.reqs, req)
		return sched.reply(req)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })

	router := gateway.NewRouter(st, bus, wk, wcfg.ID, logger)
	e.router = router
	e.metrics = metrics.New()
	e.d = gateway.NewDispatcher(async, st, router, meter, e.metrics, logger)
	gw := gateway.New(listenConfig(), st, bus, router, logger).WithMetering(meter, nil).
		WithBilling(store, billing.Pricing{}).WithAsync(async, e.d)
	// After WithAsync, which gives the dispatcher the server's config:
	// a test's setting wins.
	for _, f := range setup {
		f(e.d)
	}
	e.url = MustOpen(t, gw)
	return e
}

// listenConfig is the config of a gateway a test opens on a free port of
// 127.0.0.1.
func listenConfig() gateway.Config {
	cfg := gateway.DefaultConfig()
	cfg.Listen, cfg.DeployTimeout = "127.0.0.1:0", 10*time.Second
	// The tests' callback targets listen on loopback, which callbacks
	// may reach only when allowed (TestCallback_Refused tests the rule).
	cfg.CallbackAllow, _ = gateway.ParseOutboundAllow("127.0.0.1")
	return cfg
}

// MustOpen opens gw, closes it when the test ends, and returns its base
// URL.
func MustOpen(tb testing.TB, gw *gateway.Server) string {
	tb.Helper()
	if err := gw.Open(context.Background()); err != nil {
		tb.Fatalf("open gateway: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := gw.Close(ctx); err != nil {
			tb.Errorf("close gateway: %v", err)
		}
	})
	return "http://" + gw.Addr()
}

// deploy deploys a function of image img:1 with labels (name, value
// pairs) and waits until the gateway routes its calls. Calls wait in the
// stream until the dispatcher's consumer is up, so the tests need not
// wait for that.
func (e *asyncEnv) deploy(ns, name string, labels ...string) {
	e.t.Helper()
	spec := gust.FunctionSpec{Service: name, Namespace: ns, Image: "img:1", Labels: map[string]string{gust.LabelTimeout: "10s"}}
	for i := 0; i+1 < len(labels); i += 2 {
		spec.Labels[labels[i]] = labels[i+1]
	}
	e.deploySpec(spec)
}

func (e *asyncEnv) deploySpec(spec gust.FunctionSpec) {
	e.t.Helper()
	b, _ := json.Marshal(spec)
	status, _, body := MustDo(e.t, http.MethodPost, e.url+"/system/functions", string(b))
	if status != http.StatusAccepted {
		e.t.Fatalf("deploy %s.%s: status %d %s, want 202", spec.Namespace, spec.Service, status, body)
	}
	spec.Normalize()
	check.For(e.t, 5*time.Second, 5*time.Millisecond, func() error {
		if e.router.Function(spec.Namespace, spec.Service) == nil {
			return fmt.Errorf("router does not know %s.%s", spec.Namespace, spec.Service)
		}
		return nil
	})
}

// enqueue sends an async call and returns its call id.
func (e *asyncEnv) enqueue(path, body string, hdr ...string) string {
	e.t.Helper()
	status, h, b := MustDo(e.t, http.MethodPost, e.url+"/async-function/"+path, body, hdr...)
	if status != http.StatusAccepted || h.Get(gust.HeaderCallID) == "" {
		e.t.Fatalf("enqueue %s: status %d %s %v, want 202 with an X-Call-Id", path, status, b, h)
	}
	return h.Get(gust.HeaderCallID)
}

// asyncCall is the answer of GET /system/invocations/ID for an async call.
type asyncCall struct {
	gust.AsyncStatus
	Records []gust.CallRecord `json:"records"`
}

// waitCall polls the call's status until it is in state with n records
// of its attempts, and returns it.
func (e *asyncEnv) waitCall(id, state string, n int) asyncCall {
	e.t.Helper()
	var c asyncCall
	check.For(e.t, 15*time.Second, 10*time.Millisecond, func() error {
		status, _, body := MustDo(e.t, http.MethodGet, e.url+"/system/invocations/"+id, "")
		if status != http.StatusOK {
			return fmt.Errorf("GET /system/invocations/%s: status %d %s", id, status, body)
		}
		c = asyncCall{}
		if err := json.Unmarshal(body, &c); err != nil {
			return err
		}
		if c.State != state || len(c.Records) != n {
			return fmt.Errorf("call %s: state %s with %d records, want %s with %d (%s)", id, c.State, len(c.Records), state, n, body)
		}
		return nil
	})
	return c
}

// wantRecords checks the records of an async call's attempts: their ids
// (ID, ID~2, ...) and outcomes, in order.
func wantRecords(tb testing.TB, c asyncCall, outcomes ...string) {
	tb.Helper()
	recs := slices.Clone(c.Records)
	slices.SortFunc(recs, func(a, b gust.CallRecord) int { return a.Start.Compare(b.Start) })
	if len(recs) != len(outcomes) {
		tb.Fatalf("records: got %d, want %d", len(recs), len(outcomes))
	}
	for i, r := range recs {
		if want := gust.AttemptID(c.CallID, i+1); r.CallID != want || r.Outcome != outcomes[i] || r.Trigger != gust.TriggerAsync {
			tb.Errorf("record %d: got id %s, outcome %s, trigger %s; want %s, %s, async", i+1, r.CallID, r.Outcome, r.Trigger, want, outcomes[i])
		}
	}
}

// attempts counts, per call id, the attempts a function saw, and fails
// the first failures of each call: failing(n) answers 500 to attempts up
// to n, then echoes the body.
type attempts struct {
	mu   sync.Mutex
	seen map[string][]string // call id → X-Gust-Attempt of each call
	at   map[string][]time.Time
}

func (a *attempts) failing(n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(gust.HeaderCallID)
		a.mu.Lock()
		if a.seen == nil {
			a.seen, a.at = map[string][]string{}, map[string][]time.Time{}
		}
		a.seen[id] = append(a.seen[id], r.Header.Get(gust.HeaderAttempt))
		a.at[id] = append(a.at[id], time.Now())
		k := len(a.seen[id])
		a.mu.Unlock()
		if k <= n {
			http.Error(w, "failure "+strconv.Itoa(k), http.StatusInternalServerError)
			return
		}
		_, _ = io.Copy(w, r.Body)
	}
}

func (a *attempts) of(id string) ([]string, []time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seen[id]), slices.Clone(a.at[id])
}

func TestDispatcher_Attempt(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t)
	var seen http.Header
	var mu sync.Mutex
	e.setHandler(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Header.Clone()
		mu.Unlock()
		w.Header().Set("X-Answer", "yes")
		_, _ = io.Copy(w, r.Body)
	})
	e.deploy(gust.DefaultNamespace, "echo")
	id := e.enqueue("echo/some/path?q=1", "hello", "X-Custom", "kept")
	c := e.waitCall(id, gust.AsyncSucceeded, 1)
	if c.Attempts != 1 || c.LastStatus != http.StatusOK || c.Namespace != gust.DefaultNamespace || c.Function != "echo" {
		t.Errorf("status: got %+v, want 1 attempt answered 200 by openfaas-fn.echo", c.AsyncStatus)
	}
	wantRecords(t, c, gust.OutcomeOK)
	mu.Lock()
	defer mu.Unlock()
	for k, want := range map[string]string{
		gust.HeaderCallID: id, gust.HeaderAttempt: "1", gust.HeaderTrigger: gust.TriggerAsync, "X-Custom": "kept",
	} {
		if got := seen.Get(k); got != want {
			t.Errorf("function saw %s = %q, want %q", k, got, want)
		}
	}
}

// A call still waiting in the queue has the "queued" status the gateway
// stored before it enqueued it: GET /system/invocations/ID answers it
// with its namespace and function, and the first attempt replaces it.
// The call runs once.
func TestDispatcher_QueuedStatus(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t)
	gate := make(chan struct{})
	var ran sync.Map // call id → runs
	e.setHandler(func(w http.ResponseWriter, r *http.Request) {
		n, _ := ran.LoadOrStore(r.Header.Get(gust.HeaderCallID), new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		<-gate
		_, _ = io.Copy(w, r.Body)
	})
	// One call at a time: the second waits in the queue while the first
	// holds the only slot.
	e.deploy(gust.DefaultNamespace, "held", gust.LabelScaleMax, "1", gust.LabelConcurrency, "1")
	first := e.enqueue("held", "one")
	e.waitCall(first, gust.AsyncRunning, 0)
	second := e.enqueue("held", "two")
	if st, _, err := e.async.Calls.Get(context.Background(), second); err != nil || st.State != gust.AsyncQueued || st.Attempts != 0 {
		t.Errorf("stored status of a call still queued: %+v, %v; want queued, 0 attempts", st, err)
	}
	c := e.waitCall(second, gust.AsyncQueued, 0)
	if c.CallID != second || c.Namespace != gust.DefaultNamespace || c.Function != "held" || c.Attempts != 0 || c.Enqueued.IsZero() {
		t.Errorf("queued call: got %+v, want %s of openfaas-fn.held, 0 attempts, its enqueue time", c.AsyncStatus, second)
	}
	// An id that is no call is still not found.
	if status, _, body := MustDo(t, http.MethodGet, e.url+"/system/invocations/"+strings.Repeat("ab", 16), ""); status != http.StatusNotFound {
		t.Errorf("GET an unknown call: %d %s, want 404", status, body)
	}
	close(gate)
	for _, id := range []string{first, second} {
		e.waitCall(id, gust.AsyncSucceeded, 1)
		if n, _ := ran.Load(id); n == nil || n.(*atomic.Int32).Load() != 1 {
			t.Errorf("call %s ran %v times, want once", id, n)
		}
	}
}

// A call an earlier release queued, under a subject of its own and with
// no status stored, runs once when its function is deployed, and its
// first attempt creates its status.
func TestDispatcher_QueuedByEarlierRelease(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t)
	ctx := context.Background()
	id := strings.Repeat("cd", 16)
	req := gust.AsyncRequest{CallID: id, Namespace: gust.DefaultNamespace, Function: "late", Method: http.MethodPost,
		Path: "/", Body: []byte("old"), Enqueued: time.Now().UTC(), Trigger: gust.TriggerAsync, NoStatus: true}
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	subject := gust.SubjectAsyncPrefix + gust.FunctionKey(gust.DefaultNamespace, "late") + "." + id
	if err := e.async.Queue.Enqueue(ctx, subject, id, data); err != nil {
		t.Fatalf("enqueue as the earlier release did: %v", err)
	}
	var runs atomic.Int32
	e.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(gust.HeaderCallID) == id {
			runs.Add(1)
		}
		_, _ = io.Copy(w, r.Body)
	})
	e.deploy(gust.DefaultNamespace, "late")
	c := e.waitCall(id, gust.AsyncSucceeded, 1)
	if c.Namespace != gust.DefaultNamespace || c.Function != "late" || c.Attempts != 1 {
		t.Errorf("status: got %+v, want openfaas-fn.late after 1 attempt", c.AsyncStatus)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("the call ran %d times, want once", n)
	}
}

// A call the queue refuses is answered 503 and leaves nothing behind: no
// "queued" status (stored before the enqueue), and its idempotency key
// free, so that the same key enqueues the call once the queue takes it.
func TestDispatcher_EnqueueRefused(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t)
	e.deploy(gust.DefaultNamespace, "echo")
	e.queue.refuse.Store(true)
	status, h, body := MustDo(t, http.MethodPost, e.url+"/async-function/echo", "x", gust.HeaderIdempotencyKey, "k1")
	wantError(t, status, body, http.StatusServiceUnavailable, gust.EUNAVAILABLE, "")
	if id := h.Get(gust.HeaderCallID); id != "" {
		t.Errorf("refused call answered with X-Call-Id %s", id)
	}
	if left, err := e.async.Calls.List(context.Background(), ">"); err != nil || len(left) != 0 {
		t.Errorf("statuses after a refused enqueue: %v (%v), want none", left, err)
	}
	e.queue.refuse.Store(false)
	id := e.enqueue("echo", "x", gust.HeaderIdempotencyKey, "k1")
	e.waitCall(id, gust.AsyncSucceeded, 1)
}

func TestDispatcher_Retry(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t)
	var a attempts
	const failures = 2
	e.setHandler(a.failing(failures))
	const minDelay = 20 * time.Millisecond
	e.deploy(gust.DefaultNamespace, "flaky",
		gust.LabelRetryAttempts, "5", gust.LabelRetryMinDelay, minDelay.String(), gust.LabelRetryMaxDelay, "80ms")
	id := e.enqueue("flaky", "payload")
	c := e.waitCall(id, gust.AsyncSucceeded, failures+1)
	if c.Attempts != failures+1 || c.LastStatus != http.StatusOK || c.NextAttempt != nil {
		t.Errorf("status: got %+v, want %d attempts, the last answered 200", c.AsyncStatus, failures+1)
	}
	wantRecords(t, c, gust.OutcomeError, gust.OutcomeError, gust.OutcomeOK)
	seen, at := a.of(id)
	if want := []string{"1", "2", "3"}; !slices.Equal(seen, want) {
		t.Errorf("X-Gust-Attempt seen by the function: got %v, want %v", seen, want)
	}
	// The backoff doubles from the minimum, with jitter over its upper
	// half: at least minDelay/2, then minDelay between attempts. (Lower
	// bounds only: the queue never hands a message back early.)
	for i, want := range []time.Duration{minDelay / 2, minDelay} {
		if gap := at[i+1].Sub(at[i]); gap < want {
			t.Errorf("attempt %d came %v after attempt %d, want at least %v", i+2, gap, i+1, want)
		}
	}

	// Each attempt's record has its own id, documented as
	// GET /system/invocations/ID~N.
	t.Run("AttemptRecord", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url+"/system/invocations/"+id+"~2", "")
		if status != http.StatusOK {
			t.Fatalf("GET %s~2: status %d %s, want 200", id, status, body)
		}
		rec := MustDecode[gust.CallRecord](t, body)
		if rec.CallID != id+"~2" || rec.Outcome != gust.OutcomeError || rec.Status != http.StatusInternalServerError {
			t.Errorf("GET %s~2: got %+v, want the record of attempt 2 (error, 500)", id, rec)
		}
	})
	t.Run("ErrNoSuchAttempt", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url+"/system/invocations/"+id+"~4", "")
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
	})
	t.Run("ErrNotAnAttempt", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url+"/system/invocations/"+id+"~x", "")
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
	})
}

func TestDispatcher_DeadLetter(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t)
	var a attempts
	e.setHandler(a.failing(1000))
	e.deploy(gust.DefaultNamespace, "broken",
		gust.LabelRetryAttempts, "2", gust.LabelRetryMinDelay, "10ms", gust.LabelRetryMaxDelay, "10ms")
	id := e.enqueue("broken", "payload")
	c := e.waitCall(id, gust.AsyncDeadLettered, 2)
	if c.Attempts != 2 || c.LastStatus != http.StatusInternalServerError || !strings.Contains(c.LastError, "failure 2") {
		t.Errorf("status: got %+v, want 2 attempts, the last answered 500 \"failure 2\"", c.AsyncStatus)
	}
	wantRecords(t, c, gust.OutcomeError, gust.OutcomeError)
	status, _, body := MustDo(t, http.MethodGet, e.url+"/system/deadletters?function=broken", "")
	if status != http.StatusOK {
		t.Fatalf("list dead letters: status %d %s", status, body)
	}
	dls := MustDecode[[]gust.DeadLetter](t, body)
	if len(dls) != 1 || dls[0].Request.CallID != id || dls[0].Attempts != 2 || string(dls[0].Request.Body) != "payload" {
		t.Fatalf("dead letters: got %+v, want call %s after 2 attempts, with its body", dls, id)
	}

	t.Run("NotRetryable", func(t *testing.T) {
		e.setHandler(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "bad input", http.StatusBadRequest)
		})
		id := e.enqueue("broken", "x")
		c := e.waitCall(id, gust.AsyncDeadLettered, 1)
		if c.Attempts != 1 || c.LastStatus != http.StatusBadRequest {
			t.Errorf("status: got %+v, want dead-lettered after 1 attempt answered 400", c.AsyncStatus)
		}
	})

	t.Run("Redrive", func(t *testing.T) {
		e.setHandler(mock.DefaultHandler().ServeHTTP)
		status, h, body := MustDo(t, http.MethodPost, e.url+"/system/deadletters/"+id+"/redrive", "")
		if status != http.StatusAccepted || h.Get(gust.HeaderCallID) != id {
			t.Fatalf("redrive: status %d %s, want 202 with X-Call-Id %s", status, body, id)
		}
		// The attempts go on from where they stopped: attempt 3 has the
		// record ID~3.
		c := e.waitCall(id, gust.AsyncSucceeded, 3)
		if c.Attempts != 3 {
			t.Errorf("attempts after redrive: got %d, want 3", c.Attempts)
		}
		wantRecords(t, c, gust.OutcomeError, gust.OutcomeError, gust.OutcomeOK)
		if status, _, body := MustDo(t, http.MethodGet, e.url+"/system/deadletters/"+id, ""); status != http.StatusNotFound {
			t.Errorf("dead letter after redrive: status %d %s, want 404", status, body)
		}
	})
}

// callbackTarget is an HTTP server on 127.0.0.1 that fails its first
// fail POSTs with 503 and keeps every POST.
type callbackTarget struct {
	srv  *httptest.Server
	fail int

	mu    sync.Mutex
	posts []callbackPost
}

type callbackPost struct {
	header http.Header
	body   []byte
}

func newCallbackTarget(t *testing.T, fail int) *callbackTarget {
	c := &callbackTarget{fail: fail}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.posts = append(c.posts, callbackPost{r.Header.Clone(), body})
		n := len(c.posts)
		c.mu.Unlock()
		if n <= c.fail {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// wait polls until the target has had n POSTs and returns them.
func (c *callbackTarget) wait(t *testing.T, n int) []callbackPost {
	t.Helper()
	var posts []callbackPost
	check.For(t, 15*time.Second, 10*time.Millisecond, func() error {
		c.mu.Lock()
		posts = slices.Clone(c.posts)
		c.mu.Unlock()
		if len(posts) < n {
			return fmt.Errorf("callback target had %d POSTs, want %d", len(posts), n)
		}
		return nil
	})
	return posts
}

func TestDispatcher_CallbackRetry(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t, func(d *gateway.Dispatcher) {
		d.CallbackRetry = gust.RetryPolicy{MaxAttempts: 5, MinDelay: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond}
	})
	target := newCallbackTarget(t, 2)
	e.deploy(gust.DefaultNamespace, "echo")
	id := e.enqueue("echo", "result body", gust.HeaderCallbackURL, target.srv.URL+"/done")
	e.waitCall(id, gust.AsyncSucceeded, 1)
	posts := target.wait(t, 3)
	if len(posts) != 3 {
		t.Fatalf("callback POSTs: got %d, want 3 (two failed, then delivered)", len(posts))
	}
	for i, p := range posts {
		if p.header.Get(gust.HeaderCallID) != id || p.header.Get(gust.HeaderFunctionStatus) != "200" ||
			p.header.Get(gust.HeaderFunctionName) != "echo" || string(p.body) != "result body" {
			t.Errorf("POST %d: got %v %q, want X-Call-Id %s, X-Function-Status 200, the function's answer", i+1, p.header, p.body, id)
		}
	}
}

func TestDispatcher_CallbackGivesUp(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t, func(d *gateway.Dispatcher) {
		d.CallbackRetry = gust.RetryPolicy{MaxAttempts: 2, MinDelay: 10 * time.Millisecond, MaxDelay: 10 * time.Millisecond}
	})
	target := newCallbackTarget(t, 1000)
	e.deploy(gust.DefaultNamespace, "echo")
	id := e.enqueue("echo", "x", gust.HeaderCallbackURL, target.srv.URL)
	e.waitCall(id, gust.AsyncSucceeded, 1)
	target.wait(t, 2)
	// The deliverer acknowledged the callback after its last attempt: no
	// message is left for it.
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		cons, err := e.bus.JS.Consumer(context.Background(), natsbus.StreamAsync, "gust-callbacks")
		if err != nil {
			return err
		}
		info, err := cons.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumPending+uint64(info.NumAckPending) != 0 {
			return fmt.Errorf("callback consumer: %d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
		}
		return nil
	})
	target.mu.Lock()
	defer target.mu.Unlock()
	if len(target.posts) != 2 {
		t.Errorf("callback POSTs: got %d, want 2 (MaxAttempts)", len(target.posts))
	}
}

// An answer too large for one queue message (the callback is JSON, its
// body base64-encoded) still reaches the callback URL: cut to fit, with a
// header saying so. Before, the callback was not queued at all.
func TestDispatcher_CallbackLargeResult(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t)
	answer := bytes.Repeat([]byte("0123456789abcdef"), 7<<20/16) // 7 MiB
	e.setHandler(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(answer) })
	target := newCallbackTarget(t, 0)
	e.deploy(gust.DefaultNamespace, "big")
	id := e.enqueue("big", "", gust.HeaderCallbackURL, target.srv.URL)
	e.waitCall(id, gust.AsyncSucceeded, 1)
	p := target.wait(t, 1)[0]
	if got, want := p.header.Get(gateway.HeaderBodyTruncated), strconv.Itoa(len(answer)); got != want {
		t.Errorf("%s: got %q, want %q", gateway.HeaderBodyTruncated, got, want)
	}
	if len(p.body) < 5<<20 || len(p.body) >= len(answer) || !bytes.Equal(p.body, answer[:len(p.body)]) {
		t.Errorf("callback body: got %d bytes, want the first 5 to 7 MiB of the answer", len(p.body))
	}
	if p.header.Get(gust.HeaderFunctionStatus) != "200" {
		t.Errorf("X-Function-Status: got %q, want 200", p.header.Get(gust.HeaderFunctionStatus))
	}
}

// A body whose encoded call does not fit in one queue message is refused
// with 413 before anything is stored; one that fits runs. Before, a body
// of 6 MiB was accepted up to the enqueue, which failed with 500 and
// left the call "queued".
func TestAsync_TooLarge(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t)
	e.deploy(gust.DefaultNamespace, "echo")
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		size int
	}{
		{"OverBodyLimit", 6 << 20},               // over 3/4 of the message
		{"EncodedOverLimit", 6<<20 - 768},        // at the body limit, but the encoded call is over
		{"OverByHeaders", 6<<20 - 2<<10 - 1<<10}, // fits, but not with its large header
	} {
		t.Run(tt.name, func(t *testing.T) {
			hdr := []string{}
			if tt.name == "OverByHeaders" {
				hdr = append(hdr, "X-Large", strings.Repeat("h", 4<<10))
			}
			status, h, body := MustDo(t, http.MethodPost, e.url+"/async-function/echo", strings.Repeat("b", tt.size), hdr...)
			wantError(t, status, body, http.StatusRequestEntityTooLarge, gust.ETOOLARGE, "")
			if h.Get(gust.HeaderCallID) != "" {
				t.Errorf("X-Call-Id %q on a refused call", h.Get(gust.HeaderCallID))
			}
		})
	}
	if calls, err := e.async.Calls.List(ctx, ">"); err != nil || len(calls) != 0 {
		t.Errorf("call statuses after refusals: got %v, %v, want none", calls, err)
	}
	s, err := e.bus.JS.Stream(ctx, natsbus.StreamAsync)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Errorf("async stream after refusals: %+v, %v, want no message", info.State, err)
	}

	t.Run("AnswerBeforeBody", func(t *testing.T) {
		// A function that answers while its large body is still being
		// sent: the worker meters the call while the transport may still
		// read the body on its own goroutine (a data race on the count of
		// bytes in, under -race, before that count was made atomic).
		e.setHandler(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "early")
		})
		id := e.enqueue("echo", strings.Repeat("e", 4<<20))
		e.waitCall(id, gust.AsyncSucceeded, 1)
	})
	t.Run("NearLimitRuns", func(t *testing.T) {
		// The function reads the whole body before it answers, so the
		// record counts all of it.
		e.setHandler(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprint(w, len(b))
		})
		body := strings.Repeat("n", 6<<20-2<<10)
		id := e.enqueue("echo", body)
		c := e.waitCall(id, gust.AsyncSucceeded, 1)
		if c.Records[0].BytesIn != int64(len(body)) || c.Records[0].BytesOut != int64(len(strconv.Itoa(len(body)))) {
			t.Errorf("bytes in, out: got %d, %d, want %d and the length of its length", c.Records[0].BytesIn, c.Records[0].BytesOut, len(body))
		}
	})
}

// Two functions whose namespace and name joined with '-' are the same
// (openfaas.fn-resize, openfaas-fn.resize) have consumers of their own:
// each runs its own calls, and deleting one leaves the other's. Before,
// they shared the durable consumer "async-openfaas-fn-resize".
func TestDispatcher_ConsumerNamesUnique(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t)
	var mu sync.Mutex
	ran := map[string]string{} // call id → function that ran it
	e.setHandler(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ran[r.Header.Get(gust.HeaderCallID)] = r.Header.Get("X-Fn")
		mu.Unlock()
	})
	e.deploy("openfaas", "fn-resize")
	e.deploy("openfaas-fn", "resize")
	wantRan := func(id, fn string) {
		t.Helper()
		e.waitCall(id, gust.AsyncSucceeded, 1)
		mu.Lock()
		defer mu.Unlock()
		if ran[id] != fn {
			t.Errorf("call %s ran as %q, want %q", id, ran[id], fn)
		}
	}
	a := e.enqueue("fn-resize.openfaas", "", "X-Fn", "openfaas.fn-resize")
	b := e.enqueue("resize.openfaas-fn", "", "X-Fn", "openfaas-fn.resize")
	wantRan(a, "openfaas.fn-resize")
	wantRan(b, "openfaas-fn.resize")

	status, _, body := MustDo(t, http.MethodDelete, e.url+"/system/functions", `{"functionName":"fn-resize","namespace":"openfaas"}`)
	if status != http.StatusAccepted {
		t.Fatalf("delete: status %d %s", status, body)
	}
	// The deleted function's consumer goes; the other keeps running.
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		names, err := consumers(e)
		if err != nil {
			return err
		}
		if len(names) != 2 || !slices.Contains(names, "gust-callbacks") {
			return fmt.Errorf("consumers of the async stream: %v, want the callbacks' and openfaas-fn.resize's", names)
		}
		return nil
	})
	c := e.enqueue("resize.openfaas-fn", "", "X-Fn", "openfaas-fn.resize")
	wantRan(c, "openfaas-fn.resize")
}

// A consumer an earlier release named "async-NS-NAME" is replaced when the
// function starts: the async stream is a work queue, where it would keep
// the new one from starting. The calls it held run.
func TestDispatcher_LegacyConsumerReplaced(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t)
	ctx := context.Background()
	const legacy = "async-team-hello"
	if _, err := e.bus.JS.CreateOrUpdateConsumer(ctx, natsbus.StreamAsync, jetstream.ConsumerConfig{
		Durable: legacy, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: gust.SubjectAsyncPrefix + "team.hello",
	}); err != nil {
		t.Fatal(err)
	}
	// A call queued before the upgrade.
	req := gust.AsyncRequest{CallID: "c0ffee", Namespace: "team", Function: "hello", Method: http.MethodPost, Path: "/",
		Body: []byte("old"), Enqueued: time.Now().UTC(), Trigger: gust.TriggerAsync}
	data, _ := json.Marshal(req)
	if _, err := e.async.Calls.Put(ctx, req.CallID, gust.AsyncStatus{CallID: req.CallID, Namespace: "team", Function: "hello", State: gust.AsyncQueued}); err != nil {
		t.Fatal(err)
	}
	if err := e.async.Queue.Enqueue(ctx, gust.SubjectAsyncPrefix+"team.hello", req.CallID, data); err != nil {
		t.Fatal(err)
	}
	e.deploy("team", "hello")
	e.waitCall(req.CallID, gust.AsyncSucceeded, 1)
	if _, err := e.bus.JS.Consumer(ctx, natsbus.StreamAsync, legacy); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("legacy consumer %s: got %v, want it deleted", legacy, err)
	}
	e.waitCall(e.enqueue("hello.team", "new"), gust.AsyncSucceeded, 1)
}

// consumers lists the consumers of the async stream.
func consumers(e *asyncEnv) ([]string, error) {
	ctx := context.Background()
	s, err := e.bus.JS.Stream(ctx, natsbus.StreamAsync)
	if err != nil {
		return nil, err
	}
	var names []string
	l := s.ConsumerNames(ctx)
	for n := range l.Name() {
		names = append(names, n)
	}
	return names, l.Err()
}

// A core-NATS trigger runs the function once per message and answers a
// request with the function's answer.
func TestDispatcher_TopicTrigger(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t)
	e.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Subject", r.Header.Get("Ce-Subject"))
		_, _ = io.Copy(w, r.Body)
	})
	e.deploySpec(gust.FunctionSpec{Service: "listener", Image: "img:1", Annotations: map[string]string{gust.AnnotationTopic: "orders.created"}})
	var msg []byte
	var hdr map[string][]string
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		m, err := e.bus.NC.Request("orders.created", []byte("order 1"), time.Second)
		if err != nil {
			return err // not subscribed yet
		}
		msg, hdr = m.Data, m.Header
		return nil
	})
	if string(msg) != "order 1" || first(hdr["X-Subject"]) != "orders.created" || first(hdr[gust.HeaderFunctionStatus]) != "200" {
		t.Errorf("reply: got %q %v, want the function's echo with its headers and status 200", msg, hdr)
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
