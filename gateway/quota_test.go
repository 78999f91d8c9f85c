package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"go.uber.org/zap/zaptest"
)

// The quota tests run a gateway opened as production opens it, with a
// tenancy in JetStream KV (its namespaces' quotas) and a dispatcher, all
// on an embedded NATS server; only the worker is a fake invoker (the
// router's local one), so that a test holds calls inside "the function"
// for as long as it needs and counts them there.

// quotaEnv is a gateway with a tenancy, a dispatcher and a fake worker.
type quotaEnv struct {
	t      *testing.T
	url    string
	state  *gust.State
	ten    *gust.Tenancy
	async  *gateway.Async
	router *gateway.Router
	meter  *callMeter

	mu      sync.Mutex
	handler func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error
}

// callMeter is a gust.Meter that keeps the call records it gets.
type callMeter struct {
	mu    sync.Mutex
	calls []gust.CallRecord
}

func (m *callMeter) RecordCall(rec *gust.CallRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, *rec)
}

func (m *callMeter) RecordInstance(*gust.InstanceRecord) {}

func (m *callMeter) records() []gust.CallRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]gust.CallRecord(nil), m.calls...)
}

var _ gust.Meter = (*callMeter)(nil)

// setHandler replaces what the fake worker does with a call.
func (e *quotaEnv) setHandler(h func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.handler = h
}

// MustOpenQuota starts a quotaEnv whose function answers 200 "ok" until
// setHandler; everything stops when the test ends, the gateway first.
func MustOpenQuota(t *testing.T) *quotaEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	logger := zaptest.NewLogger(t)
	st, bus := natsbustest.MustOpenState(t)
	ten, err := natsbus.OpenTenancy(ctx, bus, make([]byte, natsbus.SecretsKeySize))
	if err != nil {
		t.Fatalf("open tenancy: %v", err)
	}
	as, err := natsbus.OpenAsync(ctx, bus, time.Hour)
	if err != nil {
		t.Fatalf("open async: %v", err)
	}
	e := &quotaEnv{t: t, state: st, ten: ten, meter: &callMeter{}}
	e.async = &gateway.Async{
		Queue: bus, Events: bus, DeadLetters: natsbus.NewDeadLetters(bus),
		Calls: as.Calls, Idempotency: as.Idempotency, Stream: natsbus.StreamAsync,
	}
	e.handler = func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error {
		w.WriteHeader(http.StatusOK)
		_, err := w.Write([]byte("ok"))
		return err
	}
	inv := &fakeInvoker{InvokeFn: func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error {
		e.mu.Lock()
		h := e.handler
		e.mu.Unlock()
		return h(w, r, fn)
	}}

	stop, err := bus.Handle(ctx, gust.SubjectPlace, "", func(context.Context, []byte) any {
		return placeOK(gust.PlaceRequest{})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })

	e.router = gateway.NewRouter(st, bus, inv, "w1", logger)
	d := gateway.NewDispatcher(e.async, st, e.router, e.meter, nil, logger)
	gw := gateway.New(listenConfig(), st, bus, e.router, logger).WithMetering(e.meter, nil).
		WithAsync(e.async, d).WithTenancy(ten)
	e.url = MustOpen(t, gw)
	return e
}

// namespace creates namespace ns with quota q in the tenancy's table
// (nil: none), or replaces it.
func (e *quotaEnv) namespace(ns string, q *gust.Quota) {
	e.t.Helper()
	v := gust.Namespace{Name: ns, Labels: map[string]string{}, Annotations: map[string]string{}, Quota: q, Created: time.Now().UTC()}
	if _, err := e.ten.Namespaces.Put(context.Background(), ns, v); err != nil {
		e.t.Fatalf("put namespace %s: %v", ns, err)
	}
}

// deploy posts spec and returns the answer.
func (e *quotaEnv) deploy(spec gust.FunctionSpec) (int, []byte) {
	e.t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		e.t.Fatal(err)
	}
	status, _, body := MustDo(e.t, http.MethodPost, e.url+"/system/functions", string(b), "Content-Type", "application/json")
	return status, body
}

// mustDeploy deploys spec, wants 202, and waits until the router knows it.
func (e *quotaEnv) mustDeploy(spec gust.FunctionSpec) {
	e.t.Helper()
	if status, body := e.deploy(spec); status != http.StatusAccepted {
		e.t.Fatalf("deploy %s.%s: status %d %s, want 202", spec.Namespace, spec.Service, status, body)
	}
	check.For(e.t, 5*time.Second, 10*time.Millisecond, func() error {
		if e.router.Function(spec.Namespace, spec.Service) == nil {
			return fmt.Errorf("router does not know %s.%s", spec.Namespace, spec.Service)
		}
		return nil
	})
}

// scale posts a scale-function of ns.name to replicas.
func (e *quotaEnv) scale(ns, name string, replicas int) (int, []byte) {
	e.t.Helper()
	body := fmt.Sprintf(`{"serviceName":%q,"namespace":%q,"replicas":%d}`, name, ns, replicas)
	status, _, b := MustDo(e.t, http.MethodPost, e.url+"/system/scale-function/"+name, body)
	return status, b
}

// get reads a function from the registry.
func (e *quotaEnv) get(key string) gust.Function {
	e.t.Helper()
	fn, _, err := e.state.Functions.Get(context.Background(), key)
	if err != nil {
		e.t.Fatalf("get %s: %v", key, err)
	}
	return fn
}

// exists reports whether the registry holds ns.name.
func (e *quotaEnv) exists(ns, name string) bool {
	e.t.Helper()
	_, _, err := e.state.Functions.Get(context.Background(), gust.FunctionKey(ns, name))
	if err != nil && !errors.Is(err, gust.ErrNotFound) {
		e.t.Fatal(err)
	}
	return err == nil
}

// warm returns a spec of ns.name with a warm minimum of min and, unless
// "", a memory limit.
func warm(ns, name string, min int, memory string) gust.FunctionSpec {
	s := gust.FunctionSpec{Service: name, Namespace: ns, Image: "img:1", Labels: map[string]string{gust.LabelScaleMin: strconv.Itoa(min)}}
	if memory != "" {
		s.Limits = &gust.FunctionResources{Memory: memory}
	}
	return s
}

// TestQuota_Instances checks that deploys within a namespace's quota of
// instances are accepted, that one past it is refused with 403 naming
// quota.instances and changes nothing, and that a redeploy counts its new
// spec in place of its old one.
func TestQuota_Instances(t *testing.T) {
	e := MustOpenQuota(t)
	e.namespace("team-q", &gust.Quota{Instances: 2})

	e.mustDeploy(warm("team-q", "q1", 1, ""))
	e.mustDeploy(warm("team-q", "q2", 1, ""))
	e.mustDeploy(warm("team-q", "cold", 0, "")) // no warm instance: within any quota

	t.Run("Refused", func(t *testing.T) {
		status, body := e.deploy(warm("team-q", "q3", 1, ""))
		wantError(t, status, body, http.StatusForbidden, gust.EFORBIDDEN, "quota.instances")
		if e.exists("team-q", "q3") {
			t.Error("the refused function is in the registry")
		}
	})
	t.Run("RedeployCountsNewSpec", func(t *testing.T) {
		// q1 again at 1: the sum stays 2 (its old spec is not counted twice).
		spec := warm("team-q", "q1", 1, "")
		spec.Image = "img:2"
		if status, body := e.deploy(spec); status != http.StatusAccepted {
			t.Fatalf("redeploy within the quota: status %d %s, want 202", status, body)
		}
		status, body := e.deploy(warm("team-q", "q1", 2, ""))
		wantError(t, status, body, http.StatusForbidden, gust.EFORBIDDEN, "quota.instances")
		if fn := e.get("team-q.q1"); fn.Spec.Image != "img:2" || fn.Spec.Labels[gust.LabelScaleMin] != "1" {
			t.Errorf("after a refused redeploy the registry holds image %s min %s, want img:2 min 1 (unchanged)", fn.Spec.Image, fn.Spec.Labels[gust.LabelScaleMin])
		}
	})
	t.Run("OtherNamespaceUnbounded", func(t *testing.T) {
		e.namespace("team-free", nil)
		e.mustDeploy(warm("team-free", "big", 5, ""))
	})
}

// TestQuota_Memory checks that the sum of minimum × memory limit (128Mi
// when unset) is bounded by quota.memory.
func TestQuota_Memory(t *testing.T) {
	e := MustOpenQuota(t)
	e.namespace("team-m", &gust.Quota{Memory: "512Mi"})

	e.mustDeploy(warm("team-m", "m1", 2, "128Mi")) // 256Mi
	e.mustDeploy(warm("team-m", "m2", 1, ""))      // + 128Mi (the default) = 384Mi

	status, body := e.deploy(warm("team-m", "m3", 1, "256Mi")) // 640Mi
	wantError(t, status, body, http.StatusForbidden, gust.EFORBIDDEN, "quota.memory")
	if e.exists("team-m", "m3") {
		t.Error("the refused function is in the registry")
	}
	e.mustDeploy(warm("team-m", "m3", 1, "128Mi")) // 512Mi: at the bound, not past it
	// Unbounded instances: a cold function takes no memory.
	e.mustDeploy(warm("team-m", "m4", 0, "1Gi"))
}

// TestQuota_Scale checks that scale-function counts its replicas as the
// function's warm minimum: past the quota it is refused and changes
// nothing; scaling down always goes.
func TestQuota_Scale(t *testing.T) {
	e := MustOpenQuota(t)
	e.namespace("team-s", &gust.Quota{Instances: 3, Memory: "1Gi"})
	e.mustDeploy(warm("team-s", "s1", 1, ""))
	e.mustDeploy(warm("team-s", "s2", 0, "512Mi"))

	status, body := e.scale("team-s", "s1", 4)
	wantError(t, status, body, http.StatusForbidden, gust.EFORBIDDEN, "quota.instances")
	status, body = e.scale("team-s", "s2", 2) // 128Mi + 1Gi
	wantError(t, status, body, http.StatusForbidden, gust.EFORBIDDEN, "quota.memory")
	for _, name := range []string{"s1", "s2"} {
		if fn := e.get("team-s." + name); fn.Scaled != nil {
			t.Errorf("%s: Scaled = %+v after a refused scale, want none", name, *fn.Scaled)
		}
	}
	if status, body := e.scale("team-s", "s1", 3); status != http.StatusAccepted {
		t.Errorf("scale to the quota: status %d %s, want 202", status, body)
	}
	// The namespace's quota is lowered below what it holds: scaling down
	// still goes, and so does a redeploy that holds no more.
	e.namespace("team-s", &gust.Quota{Instances: 1})
	if status, body := e.scale("team-s", "s1", 2); status != http.StatusAccepted {
		t.Errorf("scale down over a lowered quota: status %d %s, want 202", status, body)
	}
	status, body = e.scale("team-s", "s1", 3)
	wantError(t, status, body, http.StatusForbidden, gust.EFORBIDDEN, "quota.instances")
}

// TestQuota_ConcurrencySync sends 6 calls at once to a namespace with a
// concurrency of 2 while the function holds every call it gets: 2 reach
// it, the others answer 429 at once with Retry-After and the JSON error,
// and are metered as rejected.
func TestQuota_ConcurrencySync(t *testing.T) {
	e := MustOpenQuota(t)
	e.namespace("team-c", &gust.Quota{Concurrency: 2})
	e.mustDeploy(warm("team-c", "slow", 0, ""))

	var inflight, peak atomic.Int64
	gate := make(chan struct{})
	e.setHandler(func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-gate
		w.WriteHeader(http.StatusOK)
		return nil
	})

	type answer struct {
		status int
		header http.Header
		body   []byte
	}
	answers := make(chan answer, 6)
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, e.url+"/function/slow.team-c", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("call: %v", err)
				answers <- answer{}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Errorf("read answer: %v", err)
			}
			answers <- answer{resp.StatusCode, resp.Header, b}
		}()
	}
	// The function holds the calls it got, so every other call answers
	// before the gate opens: 4 answers, then the 2 held ones.
	var got []answer
	deadline := time.After(10 * time.Second)
	for len(got) < 4 {
		select {
		case a := <-answers:
			got = append(got, a)
		case <-deadline:
			close(gate)
			wg.Wait()
			t.Fatalf("%d answers before the function let any call go, want 4", len(got))
		}
	}
	close(gate)
	wg.Wait()
	close(answers)
	for a := range answers {
		got = append(got, a)
	}
	busy, ok := 0, 0
	for _, a := range got {
		switch a.status {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			busy++
			if a.header.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After: %v", a.header)
			}
			wantError(t, a.status, a.body, http.StatusTooManyRequests, gust.ETOOMANY, "quota.concurrency")
		default:
			t.Errorf("a call answered %d %s", a.status, a.body)
		}
	}
	if busy < 1 || ok != 2 {
		t.Errorf("6 calls with a concurrency of 2: %d answered 200, %d 429; want 2 and 4", ok, busy)
	}
	if p := peak.Load(); p > 2 {
		t.Errorf("the function had %d calls in flight at once, want at most 2", p)
	}
	rejected := 0
	for _, r := range e.meter.records() {
		if r.Status == http.StatusTooManyRequests && r.Outcome == gust.OutcomeRejected && r.Namespace == "team-c" {
			rejected++
		}
	}
	if rejected != busy {
		t.Errorf("%d calls metered as rejected with 429, want %d", rejected, busy)
	}

	// With the slots free again, a call goes through.
	if status, _, body := MustDo(t, http.MethodGet, e.url+"/function/slow.team-c", ""); status != http.StatusOK {
		t.Errorf("call after the others ended: %d %s, want 200", status, body)
	}
}

// TestQuota_ConcurrencyAsync checks that an async call of a namespace at
// its concurrency waits (it does not reach the function nor fail) until
// the sync call holding the slot ends, and then succeeds.
func TestQuota_ConcurrencyAsync(t *testing.T) {
	e := MustOpenQuota(t)
	e.namespace("team-a", &gust.Quota{Concurrency: 1})
	e.mustDeploy(warm("team-a", "fn", 0, ""))

	var inflight, peak, calls atomic.Int64
	gate := make(chan struct{})
	e.setHandler(func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error {
		calls.Add(1)
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		if r.Header.Get(gust.HeaderTrigger) == "" { // the sync call holds its slot
			<-gate
		}
		w.WriteHeader(http.StatusOK)
		return nil
	})
	syncDone := make(chan int, 1)
	go func() {
		resp, err := http.Get(e.url + "/function/fn.team-a")
		if err != nil {
			t.Errorf("sync call: %v", err)
			syncDone <- 0
			return
		}
		resp.Body.Close()
		syncDone <- resp.StatusCode
	}()
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if inflight.Load() != 1 {
			return errors.New("the sync call has not reached the function")
		}
		return nil
	})

	status, hdr, body := MustDo(t, http.MethodPost, e.url+"/async-function/fn.team-a", "payload")
	if status != http.StatusAccepted {
		close(gate)
		<-syncDone
		t.Fatalf("async call: %d %s, want 202", status, body)
	}
	callID := hdr.Get(gust.HeaderCallID)
	// The dispatcher marks the call running before it waits for a slot:
	// once it is running, it is waiting, since the sync call holds the
	// only slot.
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		st, _, err := e.async.Calls.Get(context.Background(), callID)
		if err != nil {
			return err
		}
		if st.State != gust.AsyncRunning {
			return fmt.Errorf("async call is %s, want running", st.State)
		}
		return nil
	})
	if n := calls.Load(); n != 1 {
		t.Errorf("the function got %d calls while the namespace's one slot was held, want 1", n)
	}
	close(gate)
	if st := <-syncDone; st != http.StatusOK {
		t.Errorf("sync call answered %d, want 200", st)
	}
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		st, _, err := e.async.Calls.Get(context.Background(), callID)
		if err != nil {
			return err
		}
		if st.State != gust.AsyncSucceeded {
			return fmt.Errorf("async call is %s (attempts %d, last error %q), want succeeded", st.State, st.Attempts, st.LastError)
		}
		if st.Attempts != 1 {
			return fmt.Errorf("async call took %d attempts, want 1 (it waits, it does not fail)", st.Attempts)
		}
		return nil
	})
	if p := peak.Load(); p > 1 {
		t.Errorf("the function had %d calls in flight at once, want at most 1", p)
	}
}
