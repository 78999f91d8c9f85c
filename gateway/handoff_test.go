package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"go.uber.org/zap/zaptest"
)

// fakeWorker is a worker's listener on another host, with a behaviour
// per test: it counts the calls it got and the handoff offers among them.
type fakeWorker struct {
	*httptest.Server
	calls, offers atomic.Int64
}

func newFakeWorker(t *testing.T, h func(w http.ResponseWriter, r *http.Request)) *fakeWorker {
	fw := &fakeWorker{}
	fw.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fw.calls.Add(1)
		if r.Header.Get(gust.HeaderHandoff) == gust.HandoffRetry {
			fw.offers.Add(1)
		}
		h(w, r)
	}))
	t.Cleanup(fw.Close)
	return fw
}

// echo answers the function's answer: the body it got, metered.
func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set(gust.HeaderOutcome, gust.OutcomeOK)
	fmt.Fprintf(w, "got %s", b)
}

// handoffEnv is a gateway on a real NATS server whose functions are
// placed on fake workers on other hosts.
type handoffEnv struct {
	st    *gust.State
	rt    *gateway.Router
	meter *callMeter
	url   string
}

func newHandoffEnv(t *testing.T, workers map[string]string) *handoffEnv {
	ctx := context.Background()
	logger := zaptest.NewLogger(t)
	st, bus := natsbustest.MustOpenState(t)
	for id, addr := range workers {
		if _, err := st.Workers.Put(ctx, id, gust.WorkerInfo{ID: id, Addr: addr, Seen: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	rt := gateway.NewRouter(st, bus, nil, "", logger)
	rt.WorkerToken = "token"
	gateway.SetWorkerTimeout(rt, time.Hour) // these workers never beat again
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Close)
	e := &handoffEnv{st: st, rt: rt, meter: &callMeter{}}
	gw := gateway.New(gateway.DefaultConfig(), st, bus, rt, logger).WithMetering(e.meter, nil)
	t.Cleanup(func() { _ = gw.Close(context.Background()) })
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// place deploys function name on workers, and waits until the gateway
// routes it.
func (e *handoffEnv) place(t *testing.T, name string, workers ...string) {
	ctx := context.Background()
	fn := gust.Function{Spec: gust.FunctionSpec{Service: name, Namespace: gust.DefaultNamespace, Image: "img:" + name}, Version: 1}
	if _, err := e.st.Functions.Put(ctx, fn.Key(), fn); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Placements.Put(ctx, fn.Key(), gust.Placement{Workers: workers, Version: 1}); err != nil {
		t.Fatal(err)
	}
	// The router's own view, which calls use: the registry answers
	// GET /system/function before the router's watches have the writes.
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !gateway.Routed(e.rt, fn.Key()) {
			return fmt.Errorf("the router has not seen %s and its placement yet", fn.Key())
		}
		return nil
	})
}

func (e *handoffEnv) call(t *testing.T, name, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(e.url+"/function/"+name, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestInvoke_HandsOffToAnotherWorker: a call its worker could not take
// (the worker's host refuses connections; the worker drains and says so
// before its function saw anything) goes to the other worker of the
// placement, with its body, and is metered once, by the worker that ran
// it (the gateway meters nothing). The worker that turned it away was
// offered the handoff; the one that ran it was not (it meters whatever
// happens).
func TestInvoke_HandsOffToAnotherWorker(t *testing.T) {
	live := newFakeWorker(t, echo)
	draining := newFakeWorker(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(gust.HeaderHandoff) != gust.HandoffRetry {
			t.Errorf("a call reached the draining worker without the handoff offer")
		}
		w.Header().Set(gust.HeaderHandoff, gust.HandoffRefused)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, `{"error":"worker is draining","code":"unavailable"}`)
	})
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close() // its port now refuses connections
	e := newHandoffEnv(t, map[string]string{"live": live.URL, "draining": draining.URL, "gone": gone.URL})
	e.place(t, "togone", "gone", "live")
	e.place(t, "todraining", "draining", "live")

	const n = 6
	for _, name := range []string{"togone", "todraining"} {
		for i := 0; i < n; i++ {
			body := fmt.Sprintf("payload %s %d", name, i)
			code, got := e.call(t, name, body)
			if code != http.StatusOK || got != "got "+body {
				t.Fatalf("%s call %d: %d %q, want 200 %q", name, i, code, got, "got "+body)
			}
		}
	}
	if got := live.calls.Load(); got != 2*n {
		t.Errorf("the live worker ran %d calls, want %d", got, 2*n)
	}
	// Every call the draining worker turned away ran on the live one as
	// the last try, which carries no offer.
	if retries := live.calls.Load() - live.offers.Load(); retries < draining.calls.Load() {
		t.Errorf("the live worker ran %d calls without the offer, fewer than the %d the draining worker turned away", retries, draining.calls.Load())
	}
	if draining.calls.Load() == 0 {
		t.Error("round robin never picked the draining worker first: the handoff was not exercised")
	}
	if recs := e.meter.records(); len(recs) != 0 {
		t.Errorf("the gateway metered %d calls that a worker ran: %+v", len(recs), recs)
	}
}

// TestInvoke_WorkerLostMidCall: a worker whose connection dies once it
// got the call (the function may have run) fails the call with 502
// function_failed, never runs it a second time elsewhere, and the gateway
// meters it once, as no worker said it did.
func TestInvoke_WorkerLostMidCall(t *testing.T) {
	live := newFakeWorker(t, echo)
	lost := newFakeWorker(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		// The worker dies while its function runs: the connection goes
		// without an answer.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
	})
	e := newHandoffEnv(t, map[string]string{"live": live.URL, "lost": lost.URL})
	e.place(t, "fn", "lost", "live")

	const n = 6
	var ok, failed int64
	for i := 0; i < n; i++ {
		code, body := e.call(t, "fn", "payload")
		switch code {
		case http.StatusOK:
			ok++
		case http.StatusBadGateway:
			failed++
			wantError(t, code, []byte(body), http.StatusBadGateway, gust.EFUNCTION, "")
			if !strings.Contains(body, "worker lost") || strings.Contains(body, "127.0.0.1") {
				t.Errorf("502 answer %q: want it to name the worker's loss and not its address", body)
			}
		default:
			t.Fatalf("call %d: %d %s", i, code, body)
		}
	}
	if lost.calls.Load() == 0 {
		t.Fatal("round robin never picked the worker that dies")
	}
	if failed != lost.calls.Load() || ok != live.calls.Load() {
		t.Errorf("%d calls failed and %d succeeded; the lost worker got %d and the live one %d: a lost call was sent again", failed, ok, lost.calls.Load(), live.calls.Load())
	}
	recs := e.meter.records()
	if int64(len(recs)) != failed {
		t.Fatalf("the gateway metered %d calls, want the %d lost ones", len(recs), failed)
	}
	for _, r := range recs {
		if r.Status != http.StatusBadGateway || r.Outcome != gust.OutcomeRejected || r.Function != "fn" {
			t.Errorf("record of a lost call: %+v", r)
		}
	}
}

// TestInvoke_WorkerGoneMidCall: a call running on a worker that leaves
// the cluster's state (the scheduler deleted it: it was cut from the
// network, and its connections died without a reset) ends with 502
// function_failed when it leaves, not when the caller gives up.
func TestInvoke_WorkerGoneMidCall(t *testing.T) {
	hung := make(chan struct{})
	cut := newFakeWorker(t, func(w http.ResponseWriter, r *http.Request) {
		<-hung // no answer, no reset: a host cut off
	})
	t.Cleanup(func() { close(hung) })
	e := newHandoffEnv(t, map[string]string{"cut": cut.URL})
	e.place(t, "fn", "cut")

	type answer struct {
		code int
		body string
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := http.Post(e.url+"/function/fn", "text/plain", strings.NewReader("x"))
		if err != nil {
			done <- answer{0, err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- answer{resp.StatusCode, string(b)}
	}()
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if cut.calls.Load() == 0 {
			return fmt.Errorf("the call has not reached the worker")
		}
		return nil
	})
	select {
	case a := <-done:
		t.Fatalf("the call ended before its worker was gone: %d %s", a.code, a.body)
	default:
	}
	if err := e.st.Workers.Delete(context.Background(), "cut"); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-done:
		wantError(t, a.code, []byte(a.body), http.StatusBadGateway, gust.EFUNCTION, "")
	case <-time.After(10 * time.Second):
		t.Fatal("the call still runs 10 s after its worker left the cluster")
	}
	if recs := e.meter.records(); len(recs) != 1 || recs[0].Status != http.StatusBadGateway {
		t.Errorf("records %+v, want one of status 502", recs)
	}
}

// TestInvoke_WorkerLostMidAnswer: a worker lost while it streams an
// answer (before its outcome trailer) leaves the caller a cut answer,
// and the gateway meters the call once, as crashed.
func TestInvoke_WorkerLostMidAnswer(t *testing.T) {
	lost := newFakeWorker(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", gust.HeaderOutcome)
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "the start")
		http.NewResponseController(w).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
	})
	e := newHandoffEnv(t, map[string]string{"lost": lost.URL})
	e.place(t, "fn", "lost")
	resp, err := http.Post(e.url+"/function/fn", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	b, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || rerr == nil || strings.Contains(string(b), "error") {
		t.Errorf("answer %d %q, read error %v: want the 200 begun, cut short", resp.StatusCode, b, rerr)
	}
	recs := e.meter.records()
	if len(recs) != 1 || recs[0].Outcome != gust.OutcomeCrashed || recs[0].Status != http.StatusBadGateway {
		t.Errorf("records %+v, want one crashed, 502", recs)
	}
}
