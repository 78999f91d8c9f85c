package main

// End-to-end tests of async calls, event triggers, retries, dead letters
// and callbacks, against a real `gust up` (Docker, embedded NATS and
// JetStream, SQLite billing store).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/docker"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// evDeploy posts spec (labels and annotations both) and fails unless the
// gateway answers 202.
func evDeploy(tb testing.TB, m *UpMain, spec gust.FunctionSpec) {
	tb.Helper()
	if st, body := deploy(tb, m, http.MethodPost, spec); st != http.StatusAccepted {
		tb.Fatalf("deploy %s: got %d %s, want 202", spec.Service, st, body)
	}
}

// evBus connects to the embedded NATS server of m; closed at cleanup.
func evBus(tb testing.TB, m *UpMain) *natsbus.Bus {
	tb.Helper()
	bus, err := natsbus.Connect(m.NATSURL(), "gust-events-test", zap.NewNop())
	if err != nil {
		tb.Fatalf("connect to NATS: %v", err)
	}
	tb.Cleanup(func() { _ = bus.Close() })
	return bus
}

// evAsync POSTs an async call and returns its X-Call-Id; it fails unless
// the gateway answers 202.
func evAsync(tb testing.TB, m *UpMain, pathQuery, body string, hdr ...string) string {
	tb.Helper()
	st, h, out := call(tb, http.MethodPost, gw(m)+"/async-function/"+pathQuery, body, hdr...)
	if st != http.StatusAccepted {
		tb.Fatalf("POST /async-function/%s: got %d %s, want 202", pathQuery, st, out)
	}
	id := h.Get(gust.HeaderCallID)
	if id == "" {
		tb.Fatalf("POST /async-function/%s: 202 without X-Call-Id", pathQuery)
	}
	return id
}

// evCallStatus is GET /system/invocations/{id} of an async call.
type evCallStatus struct {
	gust.AsyncStatus
	Records []gust.CallRecord `json:"records"`
}

func evGetStatus(tb testing.TB, m *UpMain, id string) evCallStatus {
	tb.Helper()
	st, _, body := call(tb, http.MethodGet, gw(m)+"/system/invocations/"+url.PathEscape(id), "")
	if st != http.StatusOK {
		tb.Fatalf("GET /system/invocations/%s: %d %s", id, st, body)
	}
	var cs evCallStatus
	if err := json.Unmarshal([]byte(body), &cs); err != nil {
		tb.Fatalf("status of %s: %v in %s", id, err, body)
	}
	if cs.CallID != id {
		tb.Fatalf("status of %s: not an async call status: %s", id, body)
	}
	return cs
}

// evWaitState polls the status of an async call until it is in state
// with records records, and returns it with the states it went through.
func evWaitState(tb testing.TB, m *UpMain, id, state string, records int, within time.Duration) (evCallStatus, []string) {
	tb.Helper()
	var cs evCallStatus
	var seen []string
	check.For(tb, within, 20*time.Millisecond, func() error {
		cs = evGetStatus(tb, m, id)
		if len(seen) == 0 || seen[len(seen)-1] != cs.State {
			seen = append(seen, cs.State)
		}
		if cs.State != state || len(cs.Records) != records {
			return fmt.Errorf("call %s: state %q with %d records (attempts %d, last error %q), want %q with %d",
				id, cs.State, len(cs.Records), cs.Attempts, cs.LastError, state, records)
		}
		return nil
	})
	return cs, seen
}

// evRequests is total.requests of the billing report of function fn.
func evRequests(tb testing.TB, m *UpMain, fn string) int64 {
	tb.Helper()
	st, _, body := call(tb, http.MethodGet, gw(m)+"/system/billing?format=json&function="+url.QueryEscape(fn), "")
	if st != http.StatusOK {
		tb.Fatalf("GET /system/billing: %d %s", st, body)
	}
	var rep struct {
		Total struct {
			Requests int64 `json:"requests"`
		} `json:"total"`
	}
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		tb.Fatalf("billing report: %v in %s", err, body)
	}
	return rep.Total.Requests
}

// evWaitRequests waits until the billing report of fn counts want
// requests, then checks the count stays there for stable; it returns
// how long reaching it took.
func evWaitRequests(tb testing.TB, m *UpMain, fn string, want int64, within, stable time.Duration) time.Duration {
	tb.Helper()
	t0 := time.Now()
	check.For(tb, within, 100*time.Millisecond, func() error {
		if n := evRequests(tb, m, fn); n != want {
			return fmt.Errorf("billing report of %s counts %d requests, want %d", fn, n, want)
		}
		return nil
	})
	took := time.Since(t0)
	for end := time.Now().Add(stable); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if n := evRequests(tb, m, fn); n != want {
			tb.Fatalf("billing report of %s went from %d to %d requests", fn, want, n)
		}
	}
	return took
}

// evLogs returns the stdout and stderr of every running container of
// function fn.
func evLogs(tb testing.TB, m *UpMain, fn string) string {
	tb.Helper()
	rt, err := docker.New(docker.Config{Network: testNetwork}, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	defer rt.Close()
	var sb strings.Builder
	for _, c := range fnContainers(tb, m, fn) {
		out, err := rt.TailLogs(context.Background(), c.ID, 100000)
		if err != nil {
			tb.Fatalf("logs of %s: %v", c.ID, err)
		}
		sb.WriteString(out)
	}
	return sb.String()
}

// evRuns returns the attempts misbehave logged for call id, in order.
func evRuns(log, id string) []string {
	var attempts []string
	prefix := "call " + id + " attempt "
	for _, line := range strings.Split(log, "\n") {
		if a, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			attempts = append(attempts, a)
		}
	}
	return attempts
}

// evMetric returns the value of the sample of metric name carrying every
// label of labels (in the gateway's /metrics), and whether there is one.
func evMetric(tb testing.TB, m *UpMain, name string, labels map[string]string) (float64, bool) {
	tb.Helper()
	st, _, body := call(tb, http.MethodGet, gw(m)+"/metrics", "")
	if st != http.StatusOK {
		tb.Fatalf("GET /metrics: %d", st)
	}
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for k, v := range labels {
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		f, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			tb.Fatalf("metric line %q: %v", line, err)
		}
		return f, true
	}
	return 0, false
}

// evPeakOverlap is the most of the [Start, End) intervals of recs that
// overlap at one instant.
func evPeakOverlap(recs []gust.CallRecord) int {
	type edge struct {
		at time.Time
		d  int
	}
	edges := make([]edge, 0, 2*len(recs))
	for _, r := range recs {
		edges = append(edges, edge{r.Start, +1}, edge{r.End, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if !edges[i].at.Equal(edges[j].at) {
			return edges[i].at.Before(edges[j].at)
		}
		return edges[i].d < edges[j].d // an end before a start at the same instant
	})
	cur, peak := 0, 0
	for _, e := range edges {
		cur += e.d
		peak = max(peak, cur)
	}
	return peak
}

// evRunUpLive starts `gust up` like MustRunUp, but with a context that
// lives until the test ends, as `gust up` itself passes (serve: the
// process's signal context). MustRunUp passes a start-up context that is
// cancelled when Run returns, which stops callback delivery (see
// TestAsyncCallbackStartContext).
func evRunUpLive(tb testing.TB, opts ...UpOption) *UpMain {
	tb.Helper()
	MustImages(tb)
	m := &UpMain{
		Listen: "127.0.0.1:0", NATSListen: "127.0.0.1:0", DataDir: tb.TempDir(), Network: testNetwork,
		Gateway: defaultGatewayConfig(), Scheduler: defaultSchedulerConfig(), Worker: defaultWorkerConfig(), Logger: testLogger(tb),
	}
	for _, o := range opts {
		o(m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Run(ctx); err != nil {
		cancel()
		tb.Fatalf("gust up: %v", err)
	}
	tb.Cleanup(func() {
		err := m.Close()
		cancel()
		if err != nil {
			tb.Errorf("close gust up: %v", err)
		}
		MustNoContainers(tb, map[string]string{gust.LabelWorker: m.Worker.ID})
	})
	return m
}

// evErrorField asserts a 400 error answer naming field.
func evErrorField(t *testing.T, what string, st int, body string, wantStatus int, field string) {
	t.Helper()
	if st != wantStatus {
		t.Errorf("%s: got %d %s, want %d", what, st, body, wantStatus)
		return
	}
	if eb := errorBody(t, body); eb.Field != field || eb.Error == "" {
		t.Errorf("%s: error %+v, want field %q and a message", what, eb, field)
	}
}

// TestEventsThousand floods a core-NATS topic trigger with 1000 messages:
// every one runs exactly once, as an event, and never more than max
// instances x concurrency at once.
func TestEventsThousand(t *testing.T) {
	const (
		name  = "evload"
		total = 1000
		scale = 2
		conc  = 4
	)
	m := MustRunUp(t, "")
	evDeploy(t, m, gust.FunctionSpec{Service: name, Image: imageTag("sleep"),
		Labels:      map[string]string{gust.LabelScaleMax: strconv.Itoa(scale), gust.LabelConcurrency: strconv.Itoa(conc)},
		Annotations: map[string]string{gust.AnnotationTopic: "ev.load"},
	})
	bus := evBus(t, m)

	// The messages are empty: the sleep function does not read its body,
	// and bodies a function leaves unread hit the worker bug of
	// TestAsyncBodyIgnoredByFunction (seen here once as a 502 "ContentLength=7
	// with Body length 0" during the flood).
	//
	// Every message asks for a reply on an inbox of its own, so the test
	// sees each message answered once and the sleep function's own count
	// of the calls it runs at once.
	replies := make(chan *nats.Msg, 2*total)
	sub, err := bus.NC.ChanSubscribe("_EVTEST.reply.>", replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	// The trigger subscribes once the dispatcher saw the deploy: message
	// 0 is a request sent until someone answers it.
	var reply0 *nats.Msg
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		var err error
		reply0, err = bus.NC.Request("ev.load", nil, 10*time.Second)
		if errors.Is(err, nats.ErrNoResponders) {
			return err
		}
		if err != nil {
			t.Fatalf("message 0: %v", err)
		}
		return nil
	})
	reply0.Subject = "_EVTEST.reply.0"
	replies <- reply0

	// Watch containers and replicas while the flood runs.
	rt, err := docker.New(docker.Config{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	var peakContainers, peakReplicas atomic.Int64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		labels := map[string]string{gust.LabelFunction: name, gust.LabelWorker: m.Worker.ID}
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if cs, err := rt.List(context.Background(), labels); err == nil {
				n := int64(0)
				for _, c := range cs {
					if c.Running {
						n++
					}
				}
				if n > peakContainers.Load() {
					peakContainers.Store(n)
				}
			}
			resp, err := http.Get(gw(m) + "/system/function/" + name)
			if err == nil {
				var fs gust.FunctionStatus
				if json.NewDecoder(resp.Body).Decode(&fs) == nil && int64(fs.Replicas) > peakReplicas.Load() {
					peakReplicas.Store(int64(fs.Replicas))
				}
				resp.Body.Close()
			}
		}
	}()

	t0 := time.Now()
	for i := 1; i < total; i++ {
		if err := bus.NC.PublishMsg(&nats.Msg{Subject: "ev.load", Reply: "_EVTEST.reply." + strconv.Itoa(i)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := bus.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	published := time.Since(t0)

	// One reply per message, each 200, from at most `scale` instances
	// that never ran more than `conc` calls at once.
	answered := map[int]int{}
	instances := map[string]int{}
	peakInflight := 0
	timeout := time.After(30 * time.Second)
	for len(answered) < total {
		select {
		case r := <-replies:
			i, err := strconv.Atoi(strings.TrimPrefix(r.Subject, "_EVTEST.reply."))
			if err != nil {
				t.Fatalf("reply on %s", r.Subject)
			}
			answered[i]++
			if answered[i] > 1 {
				t.Errorf("message %d answered %d times", i, answered[i])
			}
			if st := r.Header.Get(gust.HeaderFunctionStatus); st != "200" {
				t.Errorf("message %d: X-Function-Status %q, body %s", i, st, r.Data)
				continue
			}
			var sr sleepReply
			if err := json.Unmarshal(r.Data, &sr); err != nil || sr.Instance == "" {
				t.Errorf("message %d: reply %q: %v", i, r.Data, err)
				continue
			}
			instances[sr.Instance]++
			peakInflight = max(peakInflight, sr.InFlight)
		case <-timeout:
			t.Fatalf("after 30s, %d of %d messages answered", len(answered), total)
		}
	}
	ran := time.Since(t0)

	took := evWaitRequests(t, m, name, total, 20*time.Second, 2*time.Second)
	recs := listAllRecords(t, m, name, 300)
	if len(recs) != total {
		t.Fatalf("%d call records, want %d", len(recs), total)
	}
	for _, r := range recs {
		if r.Outcome != gust.OutcomeOK || r.Status != 200 || r.Trigger != gust.TriggerEvent {
			t.Errorf("record %s: outcome %q status %d trigger %q, want ok 200 event", r.CallID, r.Outcome, r.Status, r.Trigger)
		}
	}
	overlap, maxPerInstance, nInstances := evConcurrency(recs)
	dropped, _ := evMetric(t, m, "gust_events_dropped_total", map[string]string{"function": "openfaas-fn." + name})
	received, _ := evMetric(t, m, "gust_events_received_total", map[string]string{"function": "openfaas-fn." + name, "trigger": "nats"})
	t.Logf("events: %d messages published in %s, all answered after %s, billed %s later; replies by instance %v", total, published, ran, took, instances)
	t.Logf("events: peak in-flight per instance (function's own count) %d; records overlap %d overall, %d per instance, on %d instances; events received %v, dropped %v",
		peakInflight, overlap, maxPerInstance, nInstances, received, dropped)
	if len(instances) > scale || nInstances > scale {
		t.Errorf("events ran on %d instances (records: %d), want at most %d", len(instances), nInstances, scale)
	}
	if peakInflight > conc || maxPerInstance > conc {
		t.Errorf("an instance ran %d events at once (records: %d), want at most %d (gust.concurrency)", peakInflight, maxPerInstance, conc)
	}
	if overlap > scale*conc {
		t.Errorf("%d events overlapped, want at most %d (max x concurrency)", overlap, scale*conc)
	}
	if received != total || dropped != 0 {
		t.Errorf("gust_events_received_total %v, gust_events_dropped_total %v; want %d and 0", received, dropped, total)
	}

	// The events above take well under a millisecond each, too little to
	// make the function scale. Slow async calls (through the same
	// per-function bound of the dispatcher) do: 8 at a time, on 2
	// instances of 4.
	const slow = 40
	t1 := time.Now()
	for i := 0; i < slow; i++ {
		evAsync(t, m, name+"?ms=300", "")
	}
	took = evWaitRequests(t, m, name, total+slow, 20*time.Second, time.Second)
	close(stop)
	<-watched
	var slowRecs []gust.CallRecord
	for _, r := range listAllRecords(t, m, name, 1000) {
		if r.Trigger == gust.TriggerAsync {
			slowRecs = append(slowRecs, r)
			if r.Outcome != gust.OutcomeOK || r.Status != 200 {
				t.Errorf("async record %s: outcome %q status %d", r.CallID, r.Outcome, r.Status)
			}
		}
	}
	if len(slowRecs) != slow {
		t.Fatalf("%d async records, want %d", len(slowRecs), slow)
	}
	overlap, maxPerInstance, nInstances = evConcurrency(slowRecs)
	t.Logf("async: %d calls of 300ms billed %s after the first was sent; records overlap %d overall, %d per instance, on %d instances",
		slow, time.Since(t1), overlap, maxPerInstance, nInstances)
	t.Logf("peak containers %d, peak replicas reported by GET /system/function %d", peakContainers.Load(), peakReplicas.Load())
	if overlap > scale*conc || maxPerInstance > conc || nInstances > scale {
		t.Errorf("async calls: %d overlapped, %d at once on one instance, on %d instances; want at most %d, %d, %d",
			overlap, maxPerInstance, nInstances, scale*conc, conc, scale)
	}
	if overlap < conc {
		t.Errorf("async calls: at most %d overlapped: the dispatcher ran fewer than gust.concurrency (%d) at once", overlap, conc)
	}
	if n := peakContainers.Load(); n > scale {
		t.Errorf("peak of %d containers, want at most %d (com.openfaas.scale.max)", n, scale)
	}
	if n := peakReplicas.Load(); n > scale {
		t.Errorf("peak of %d replicas, want at most %d", n, scale)
	}
}

// evConcurrency returns the most records that overlap, overall and on
// one instance, and the number of instances.
func evConcurrency(recs []gust.CallRecord) (overall, perInstance, instances int) {
	by := map[string][]gust.CallRecord{}
	for _, r := range recs {
		by[r.Instance] = append(by[r.Instance], r)
	}
	for _, rs := range by {
		perInstance = max(perInstance, evPeakOverlap(rs))
	}
	return evPeakOverlap(recs), perInstance, len(by)
}

// TestAsyncRetryThenSucceed: an async call that fails twice is retried
// with backoff and succeeds on its third attempt, each attempt on the
// record under an id of its own.
func TestAsyncRetryThenSucceed(t *testing.T) {
	const name = "retrier"
	minDelay, maxDelay := 200*time.Millisecond, time.Second
	m := MustRunUp(t, "")
	mustDeploy(t, m, name, imageTag("misbehave"), map[string]string{
		gust.LabelRetryMinDelay: minDelay.String(), gust.LabelRetryMaxDelay: maxDelay.String(),
	})
	t0 := time.Now()
	id := evAsync(t, m, name+"?fail-until=3", "")
	cs, states := evWaitState(t, m, id, gust.AsyncSucceeded, 3, 15*time.Second)
	t.Logf("call %s succeeded after %s; states seen %v", id, time.Since(t0), states)
	if cs.Attempts != 3 || cs.LastStatus != 200 || cs.LastError != "" || cs.Function != name || cs.NextAttempt != nil {
		t.Errorf("status %+v, want 3 attempts, last status 200, no error", cs.AsyncStatus)
	}
	wantIDs := []string{id, id + "~2", id + "~3"}
	wantStatus := []int{500, 500, 200}
	for i, r := range cs.Records {
		if r.CallID != wantIDs[i] || r.Status != wantStatus[i] || r.Trigger != gust.TriggerAsync {
			t.Errorf("record %d: id %s status %d trigger %q, want %s %d async", i+1, r.CallID, r.Status, r.Trigger, wantIDs[i], wantStatus[i])
		}
	}
	// Backoff: the delay after attempt n is at least half of
	// min-delay x 2^(n-1) (capped at max-delay), and at most the cap
	// itself plus slack.
	pol := gust.RetryPolicy{MinDelay: minDelay, MaxDelay: maxDelay}
	for i := 1; i < len(cs.Records); i++ {
		prev, next := cs.Records[i-1], cs.Records[i]
		startGap, idle := next.Start.Sub(prev.Start), next.Start.Sub(prev.End)
		lo, hi := pol.Backoff(i, 0), pol.Backoff(i, 1)
		t.Logf("attempt %d -> %d: start gap %s, idle %s (backoff drawn from [%s, %s])", i, i+1, startGap, idle, lo, hi)
		if idle < lo-10*time.Millisecond {
			t.Errorf("attempt %d started %s after attempt %d ended, want at least %s (backoff)", i+1, idle, i, lo)
		}
		if startGap < minDelay/2 {
			t.Errorf("attempts %d and %d started %s apart, want at least %s", i, i+1, startGap, minDelay/2)
		}
		if idle > hi+3*time.Second {
			t.Errorf("attempt %d started %s after attempt %d, want about %s at most", i+1, idle, i, hi)
		}
	}
	if runs := evRuns(evLogs(t, m, name), id); strings.Join(runs, ",") != "1,2,3" {
		t.Errorf("function logged attempts %v of call %s, want 1,2,3", runs, id)
	}
}

// TestAsyncDeadLetterAndRedrive: a call out of attempts is dead-lettered,
// listed, shown, redriven (and then succeeds on its next attempt), and
// dead letters can be purged.
func TestAsyncDeadLetterAndRedrive(t *testing.T) {
	const name = "dlqfn"
	m := MustRunUp(t, "")
	mustDeploy(t, m, name, imageTag("misbehave"), map[string]string{
		gust.LabelRetryAttempts: "3", gust.LabelRetryMinDelay: "100ms", gust.LabelRetryMaxDelay: "500ms",
	})
	id := evAsync(t, m, name+"?fail-until=4", "")
	cs, _ := evWaitState(t, m, id, gust.AsyncDeadLettered, 3, 15*time.Second)
	if cs.Attempts != 3 || cs.LastStatus != 500 || !strings.Contains(cs.LastError, "500") {
		t.Errorf("dead-lettered status %+v, want 3 attempts, last status 500 and its error", cs.AsyncStatus)
	}
	for i, r := range cs.Records {
		if r.Status != 500 || r.Outcome != gust.OutcomeError {
			t.Errorf("record %d (%s): status %d outcome %q, want 500 error", i+1, r.CallID, r.Status, r.Outcome)
		}
	}

	listDLQ := func() []gust.DeadLetter {
		t.Helper()
		st, _, body := call(t, http.MethodGet, gw(m)+"/system/deadletters?function="+name, "")
		if st != http.StatusOK {
			t.Fatalf("list dead letters: %d %s", st, body)
		}
		var dls []gust.DeadLetter
		if err := json.Unmarshal([]byte(body), &dls); err != nil {
			t.Fatalf("dead letters: %v in %s", err, body)
		}
		return dls
	}
	dls := listDLQ()
	if len(dls) != 1 || dls[0].Request.CallID != id || dls[0].Attempts != 3 || dls[0].Status != 500 ||
		!strings.Contains(dls[0].LastError, "500") || dls[0].Request.Function != name || dls[0].Failed.IsZero() {
		t.Fatalf("dead letters of %s: %+v, want call %s with 3 attempts and its last error", name, dls, id)
	}
	st, _, body := call(t, http.MethodGet, gw(m)+"/system/deadletters/"+id, "")
	var dl gust.DeadLetter
	if st != http.StatusOK || json.Unmarshal([]byte(body), &dl) != nil || dl.Request.CallID != id || dl.Attempts != 3 || dl.Request.Query != "fail-until=4" {
		t.Fatalf("GET /system/deadletters/%s: %d %s", id, st, body)
	}
	code, out, errOut := gustCLI(t, gw(m), "", "deadletters", "list", "--function", name)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "function answered 500") {
		t.Errorf("gust deadletters list: exit %d, stdout %q, stderr %q; want the call id and its error", code, out, errOut)
	}

	// Redrive: attempt 4 (numbered on) passes fail-until=4.
	st, h, body := call(t, http.MethodPost, gw(m)+"/system/deadletters/"+id+"/redrive", "")
	if st != http.StatusAccepted || h.Get(gust.HeaderCallID) != id || !strings.Contains(body, `"queued"`) {
		t.Fatalf("redrive: %d %s (X-Call-Id %q)", st, body, h.Get(gust.HeaderCallID))
	}
	cs, _ = evWaitState(t, m, id, gust.AsyncSucceeded, 4, 15*time.Second)
	if cs.Attempts != 4 || cs.Records[3].CallID != id+"~4" || cs.Records[3].Status != 200 {
		t.Errorf("after redrive: %+v, last record %+v; want attempt 4 (%s~4) answered 200", cs.AsyncStatus, cs.Records[3], id)
	}
	if st, _, body := call(t, http.MethodGet, gw(m)+"/system/deadletters/"+id, ""); st != http.StatusNotFound {
		t.Errorf("dead letter after redrive: %d %s, want 404", st, body)
	}
	if dls := listDLQ(); len(dls) != 0 {
		t.Errorf("dead letters after redrive: %+v, want none", dls)
	}
	if runs := evRuns(evLogs(t, m, name), id); strings.Join(runs, ",") != "1,2,3,4" {
		t.Errorf("function logged attempts %v of call %s, want 1,2,3,4", runs, id)
	}

	// Purge.
	id2 := evAsync(t, m, name+"?fail-until=99", "")
	evWaitState(t, m, id2, gust.AsyncDeadLettered, 3, 15*time.Second)
	if dls := listDLQ(); len(dls) != 1 || dls[0].Request.CallID != id2 {
		t.Fatalf("dead letters before purge: %+v, want %s", dls, id2)
	}
	st, _, body = call(t, http.MethodDelete, gw(m)+"/system/deadletters?function="+name, "")
	var purged struct {
		Purged *int `json:"purged"`
	}
	if st != http.StatusOK || json.Unmarshal([]byte(body), &purged) != nil || purged.Purged == nil || *purged.Purged != 1 {
		t.Errorf("purge: %d %s, want 200 {\"purged\": 1}", st, body)
	}
	if dls := listDLQ(); len(dls) != 0 {
		t.Errorf("dead letters after purge: %+v", dls)
	}
	if st, _, body := call(t, http.MethodPost, gw(m)+"/system/deadletters/"+id2+"/redrive", ""); st != http.StatusNotFound {
		t.Errorf("redrive of a purged dead letter: %d %s, want 404", st, body)
	}
}

// TestAsyncCallback: the result of an async call is POSTed to its
// callback URL, retried while the target fails.
func TestAsyncCallback(t *testing.T) {
	const name = "cbecho"
	type delivery struct {
		at     time.Time
		header http.Header
		body   string
		method string
	}
	var mu sync.Mutex
	var deliveries []delivery
	got := make(chan delivery, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		d := delivery{at: time.Now(), header: r.Header.Clone(), body: string(b), method: r.Method}
		deliveries = append(deliveries, d)
		n := len(deliveries)
		mu.Unlock()
		if r.URL.Path != "/cb" {
			http.NotFound(w, r)
			return
		}
		if n <= 2 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		if n == 3 {
			got <- d
		}
	}))
	defer srv.Close()

	m := evRunUpLive(t) // not MustRunUp: see TestAsyncCallbackStartContext
	mustDeploy(t, m, name, imageTag("echo"), nil)
	t0 := time.Now()
	id := evAsync(t, m, name+"/p?x=1", "callback-body", gust.HeaderCallbackURL, srv.URL+"/cb", "X-Custom", "v1")
	var d delivery
	select {
	case d = <-got:
	case <-time.After(20 * time.Second):
		mu.Lock()
		n := len(deliveries)
		mu.Unlock()
		t.Fatalf("no successful callback after 20s (%d deliveries)", n)
	}
	t.Logf("callback delivered %s after the call", time.Since(t0))
	time.Sleep(1500 * time.Millisecond) // a delivery too many would come now
	mu.Lock()
	all := append([]delivery(nil), deliveries...)
	mu.Unlock()
	if len(all) != 3 {
		t.Errorf("%d callback deliveries, want 3 (two answered 503, then 200)", len(all))
	}
	for i := 1; i < len(all); i++ {
		t.Logf("callback delivery %d came %s after delivery %d", i+1, all[i].at.Sub(all[i-1].at), i)
		if gap := all[i].at.Sub(all[i-1].at); gap < 400*time.Millisecond {
			t.Errorf("callback delivery %d only %s after the one before: no backoff", i+1, gap)
		}
	}
	for i, dd := range all {
		if dd.header.Get(gust.HeaderCallID) != id || dd.body != d.body || dd.method != http.MethodPost {
			t.Errorf("delivery %d: %s X-Call-Id %q body %q, want POST %s and the same body", i+1, dd.method, dd.header.Get(gust.HeaderCallID), dd.body, id)
		}
	}
	h := d.header
	if h.Get(gust.HeaderCallID) != id || h.Get(gust.HeaderFunctionStatus) != "200" || h.Get(gust.HeaderFunctionName) != name {
		t.Errorf("callback headers X-Call-Id %q X-Function-Status %q X-Function-Name %q, want %s 200 %s",
			h.Get(gust.HeaderCallID), h.Get(gust.HeaderFunctionStatus), h.Get(gust.HeaderFunctionName), id, name)
	}
	if secs, err := strconv.ParseFloat(h.Get(gust.HeaderDuration), 64); err != nil || secs <= 0 || secs > 10 {
		t.Errorf("callback X-Duration-Seconds %q: want the call's duration", h.Get(gust.HeaderDuration))
	}
	if !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		t.Errorf("callback Content-Type %q, want the function's application/json", h.Get("Content-Type"))
	}
	var er echoReply
	if err := json.Unmarshal([]byte(d.body), &er); err != nil {
		t.Fatalf("callback body %q: %v", d.body, err)
	}
	if er.Body != "callback-body" || er.Method != http.MethodPost || er.Path != "/p" || er.Query != "x=1" || er.CallID != id || er.Headers["X-Custom"] != "v1" {
		t.Errorf("function saw %+v", er)
	}
	if er.Headers[gust.HeaderCallbackURL] != "" || er.Headers[gust.HeaderAttempt] != "1" || er.Headers[gust.HeaderTrigger] != gust.TriggerAsync {
		t.Errorf("function saw X-Callback-Url %q, X-Gust-Attempt %q, trigger %q; want none, 1, async",
			er.Headers[gust.HeaderCallbackURL], er.Headers[gust.HeaderAttempt], er.Headers[gust.HeaderTrigger])
	}
	if cs := evGetStatus(t, m, id); cs.State != gust.AsyncSucceeded || cs.Attempts != 1 {
		t.Errorf("call status %+v, want succeeded after 1 attempt", cs.AsyncStatus)
	}
	if v, _ := evMetric(t, m, "gust_callbacks_total", map[string]string{"result": "retried"}); v != 2 {
		t.Errorf("gust_callbacks_total{result=retried} = %v, want 2", v)
	}
}

// TestAsyncCallbackStartContext: callbacks are delivered when gust up was
// started with a context that ends once start-up is over (as MustRunUp
// does, and as `gust up` does at SIGTERM while it still drains calls).
func TestAsyncCallbackStartContext(t *testing.T) {
	const name, calls = "cbstart", 12
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.Add(1) }))
	defer srv.Close()
	m := MustRunUp(t, "") // its start-up context is cancelled once Run returns
	mustDeploy(t, m, name, imageTag("echo"), nil)
	for i := 0; i < calls; i++ {
		evAsync(t, m, name, "x", gust.HeaderCallbackURL, srv.URL+"/cb")
	}
	check.For(t, 15*time.Second, 100*time.Millisecond, func() error {
		if n := got.Load(); n != calls {
			return fmt.Errorf("%d of %d callbacks delivered", n, calls)
		}
		return nil
	})
}

// TestAsyncBodyIgnoredByFunction: calls, async and sync, with a body the
// function never reads (the sleep function reads none) succeed, and gust up
// lives on. Un-skipped on this code it panics the test binary at
// worker/invoke.go:51.
func TestAsyncBodyIgnoredByFunction(t *testing.T) {
	const name = "ignorer"
	m := MustRunUp(t, "")
	mustDeploy(t, m, name, imageTag("sleep"), nil)
	big := strings.Repeat("x", 1<<20)
	// A connection per call: the desync of TestAsyncNextRequestAfterIgnoredBody
	// stays out of this test.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, evAsync(t, m, name, big))
		resp, err := client.Post(gw(m)+"/function/"+name, "text/plain", strings.NewReader(big))
		if err != nil {
			t.Fatalf("sync call %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("sync call %d with a 1 MiB body the function ignores: %d %s", i, resp.StatusCode, b)
		}
	}
	for _, id := range ids {
		evWaitState(t, m, id, gust.AsyncSucceeded, 1, 15*time.Second)
	}
}

// TestAsyncNextRequestAfterIgnoredBody: after a sync call whose large body
// the function ignored, the next request on the same keep-alive
// connection (an async call) is answered as itself.
func TestAsyncNextRequestAfterIgnoredBody(t *testing.T) {
	const name = "ignorer"
	m := MustRunUp(t, "")
	mustDeploy(t, m, name, imageTag("sleep"), nil)
	big := strings.Repeat("x", 1<<20)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	post := func(path, body string) (int, string) {
		resp, err := client.Post(gw(m)+path, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for i := 0; i < 5; i++ {
		if st, out := post("/function/"+name, big); st != http.StatusOK {
			t.Errorf("sync call %d with a 1 MiB body the function ignores: %d %s", i, st, out)
		}
		if st, out := post("/async-function/"+name, ""); st != http.StatusAccepted {
			t.Errorf("async call after it, on the same connection: %d %q, want 202", st, out)
		}
	}
}

// TestAsyncBadInput: bad async calls and bad trigger or retry settings
// get clear answers.
func TestAsyncBadInput(t *testing.T) {
	const name = "badin"
	m := MustRunUp(t, "", func(m *UpMain) { m.Gateway.MaxBodyBytes = 1024 })
	mustDeploy(t, m, name, imageTag("misbehave"), nil)

	st, _, body := call(t, http.MethodPost, gw(m)+"/async-function/"+name, strings.Repeat("x", 2048))
	if st != http.StatusRequestEntityTooLarge {
		t.Errorf("async body of 2048 bytes (limit 1024): %d %s, want 413", st, body)
	}
	// The same without a Content-Length (chunked).
	req, err := http.NewRequest(http.MethodPost, gw(m)+"/async-function/"+name, io.MultiReader(strings.NewReader(strings.Repeat("y", 2048))))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Errorf("chunked async body: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("chunked async body of 2048 bytes: %d %s, want 413", resp.StatusCode, b)
		}
	}
	for _, cb := range []string{"not a url", "ftp://x", "http://", "/relative/cb"} {
		st, _, body := call(t, http.MethodPost, gw(m)+"/async-function/"+name, "x", gust.HeaderCallbackURL, cb)
		evErrorField(t, "X-Callback-Url "+strconv.Quote(cb), st, body, http.StatusBadRequest, gust.HeaderCallbackURL)
	}
	if st, _, body := call(t, http.MethodPost, gw(m)+"/async-function/nosuch", "x"); st != http.StatusNotFound || errorBody(t, body).Error == "" {
		t.Errorf("async call of an unknown function: %d %s, want 404", st, body)
	}
	for _, c := range []struct {
		what        string
		labels      map[string]string
		annotations map[string]string
		field       string
	}{
		{"EmptyToken", nil, map[string]string{gust.AnnotationTopic: "a..b"}, "annotations.topic"},
		{"InnerFullWildcard", nil, map[string]string{gust.AnnotationTopic: "a.>.c"}, "annotations.topic"},
		{"OneBadOfTwo", nil, map[string]string{gust.AnnotationTopic: "ok.one, bad subject"}, "annotations.topic"},
		{"BadStream", nil, map[string]string{gust.AnnotationStream: "bad.stream"}, "annotations.gust.stream"},
		{"BadStreamFilter", nil, map[string]string{gust.AnnotationStream: "S", gust.AnnotationStreamFilter: "x..y"}, "annotations.gust.stream-filter"},
		{"RetryOn", map[string]string{gust.LabelRetryOn: "sometimes"}, nil, "labels.gust.retry.on"},
		{"RetryAttempts", map[string]string{gust.LabelRetryAttempts: "0"}, nil, "labels.gust.retry.max-attempts"},
		{"RetryDelays", map[string]string{gust.LabelRetryMinDelay: "2s", gust.LabelRetryMaxDelay: "1s"}, nil, "labels.gust.retry.min-delay"},
		{"RetryMaxAge", map[string]string{gust.LabelRetryMaxAge: "forever"}, nil, "labels.gust.retry.max-age"},
	} {
		st, body := deploy(t, m, http.MethodPost, gust.FunctionSpec{Service: "bad" + strings.ToLower(c.what), Image: imageTag("misbehave"), Labels: c.labels, Annotations: c.annotations})
		evErrorField(t, "deploy "+c.what, st, body, http.StatusBadRequest, c.field)
	}
	if st, _, body := call(t, http.MethodGet, gw(m)+"/system/deadletters/nosuchcall", ""); st != http.StatusNotFound {
		t.Errorf("unknown dead letter: %d %s, want 404", st, body)
	}
	if st, _, body := call(t, http.MethodPost, gw(m)+"/system/deadletters/nosuchcall/redrive", ""); st != http.StatusNotFound {
		t.Errorf("redrive of an unknown dead letter: %d %s, want 404", st, body)
	}
	if st, _, body := call(t, http.MethodGet, gw(m)+"/system/deadletters?function=Bad_Name", ""); st != http.StatusBadRequest || errorBody(t, body).Field != "function" {
		t.Errorf("dead letters of a bad name: %d %s, want 400 naming function", st, body)
	}
	// None of it ran or was registered.
	st, _, body = call(t, http.MethodGet, gw(m)+"/system/functions", "")
	var fns []gust.FunctionStatus
	if err := json.Unmarshal([]byte(body), &fns); err != nil || st != 200 || len(fns) != 1 {
		t.Errorf("functions after refused deploys: %d %s, want only %s", st, body, name)
	}
	time.Sleep(time.Second)
	if recs := listAllRecords(t, m, name, 100); len(recs) != 0 {
		t.Errorf("%d calls of %s ran, want none", len(recs), name)
	}
	if runs := strings.Count(evLogs(t, m, name), "call "); runs != 0 {
		t.Errorf("function logged %d calls, want none", runs)
	}
}

// TestAsyncIdempotency: async calls with one idempotency key get one call
// id and run once.
func TestAsyncIdempotency(t *testing.T) {
	const name = "idem"
	m := MustRunUp(t, "")
	// Empty bodies: misbehave does not read its body (see
	// TestAsyncBodyIgnoredByFunction).
	mustDeploy(t, m, name, imageTag("misbehave"), nil)
	id1 := evAsync(t, m, name, "", gust.HeaderIdempotencyKey, "key-1")
	id1b := evAsync(t, m, name, "", gust.HeaderIdempotencyKey, "key-1")
	if id1 != id1b {
		t.Errorf("same idempotency key: call ids %s and %s, want one", id1, id1b)
	}
	// Concurrent calls with one key.
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, gw(m)+"/async-function/"+name, nil)
			req.Header.Set("Idempotency-Key", "key-2")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("concurrent call %d: %v", i, err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("concurrent call %d: %d", i, resp.StatusCode)
			}
			ids[i] = resp.Header.Get(gust.HeaderCallID)
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || id == "" {
			t.Errorf("concurrent calls with one key got ids %v, want one", ids)
			break
		}
	}
	id3 := evAsync(t, m, name, "", gust.HeaderIdempotencyKey, "key-3")
	if id3 == id1 || id3 == ids[0] || id1 == ids[0] {
		t.Errorf("different keys share a call id: %s %s %s", id1, ids[0], id3)
	}
	for _, id := range []string{id1, ids[0], id3} {
		evWaitState(t, m, id, gust.AsyncSucceeded, 1, 10*time.Second)
	}
	evWaitRequests(t, m, name, 3, 10*time.Second, 1500*time.Millisecond)
	log := evLogs(t, m, name)
	for _, id := range []string{id1, ids[0], id3} {
		if runs := evRuns(log, id); len(runs) != 1 {
			t.Errorf("call %s ran %d times (%v), want once", id, len(runs), runs)
		}
	}
}

// TestEventsRequestReply: a message sent as a NATS request gets the
// triggered function's answer as its reply.
func TestEventsRequestReply(t *testing.T) {
	const name = "orders"
	m := MustRunUp(t, "")
	evDeploy(t, m, gust.FunctionSpec{Service: name, Image: imageTag("orders"), Annotations: map[string]string{gust.AnnotationTopic: "orders.>"}})
	bus := evBus(t, m)
	data := []byte(`{"order":42,"items":["a","b"]}`)
	var msg *nats.Msg
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		var err error
		msg, err = bus.NC.Request("orders.created", data, 10*time.Second)
		if errors.Is(err, nats.ErrNoResponders) {
			return err
		}
		if err != nil {
			t.Fatalf("request on orders.created: %v", err)
		}
		return nil
	})
	if st := msg.Header.Get(gust.HeaderFunctionStatus); st != "200" {
		t.Errorf("reply X-Function-Status %q, want 200 (body %s)", st, msg.Data)
	}
	var rc struct {
		Event   string `json:"event"`
		Subject string `json:"subject"`
		Bytes   int    `json:"bytes"`
		CallID  string `json:"callId"`
	}
	if err := json.Unmarshal(msg.Data, &rc); err != nil {
		t.Fatalf("reply %q: %v", msg.Data, err)
	}
	id := msg.Header.Get(gust.HeaderCallID)
	if rc.Subject != "orders.created" || rc.Bytes != len(data) || rc.Event == "" || rc.CallID == "" || rc.CallID != id {
		t.Errorf("receipt %+v (reply X-Call-Id %q), want subject orders.created, %d bytes, its call id", rc, id, len(data))
	}
	var r gust.CallRecord
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		st, _, body := call(t, http.MethodGet, gw(m)+"/system/invocations/"+url.PathEscape(id), "")
		if st != http.StatusOK {
			return fmt.Errorf("record of %s: %d %s", id, st, body)
		}
		return json.Unmarshal([]byte(body), &r)
	})
	if r.Trigger != gust.TriggerEvent || r.Status != 200 || r.Function != name {
		t.Errorf("record %+v, want an event call of %s answered 200", r, name)
	}
	// A subject outside orders.> has no responder.
	if _, err := bus.NC.Request("orders", data, 2*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("request on orders (not under orders.>): %v, want no responders", err)
	}
	// The CLI's --request path.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := bus.RequestRaw(ctx, "orders.shipped", []byte("xyz"), nil)
	if err != nil || !strings.Contains(string(raw), `"subject":"orders.shipped"`) || !strings.Contains(string(raw), `"bytes":3`) {
		t.Errorf("RequestRaw on orders.shipped: %q, %v", raw, err)
	}
}

// TestDurableStreamTrigger: every message of a JetStream stream runs the
// function once; a function naming a stream that does not exist deploys,
// and says so in the log and the metrics.
func TestDurableStreamTrigger(t *testing.T) {
	const (
		name   = "durfn"
		stream = "EVTEST_DUR"
		n      = 20
	)
	m := MustRunUp(t, "")
	bus := evBus(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := bus.JS.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"dur.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	evDeploy(t, m, gust.FunctionSpec{Service: name, Image: imageTag("misbehave"),
		Annotations: map[string]string{gust.AnnotationStream: stream, gust.AnnotationStreamFilter: "dur.>"}})
	t0 := time.Now()
	// Empty messages: misbehave does not read its body (see
	// TestAsyncBodyIgnoredByFunction).
	for i := 0; i < n; i++ {
		if _, err := bus.JS.Publish(ctx, "dur.order."+strconv.Itoa(i%3), nil); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	took := evWaitRequests(t, m, name, n, 20*time.Second, 1500*time.Millisecond)
	t.Logf("%d stream messages published and billed in %s (billing count reached %s after the last publish)", n, time.Since(t0), took)
	recs := listAllRecords(t, m, name, 1000)
	if len(recs) != n {
		t.Fatalf("%d records, want %d", len(recs), n)
	}
	for _, r := range recs {
		if r.Trigger != gust.TriggerEvent || r.Outcome != gust.OutcomeOK {
			t.Errorf("record %s: trigger %q outcome %q, want event ok", r.CallID, r.Trigger, r.Outcome)
		}
	}
	if runs := strings.Count(evLogs(t, m, name), "call "); runs != n {
		t.Errorf("function logged %d calls, want %d", runs, n)
	}
	// Every message was acknowledged.
	check.For(t, 5*time.Second, 100*time.Millisecond, func() error {
		ci, err := bus.JS.Consumer(ctx, stream, "trigger_openfaas-fn_"+name)
		if err != nil {
			return err
		}
		info, err := ci.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 || info.Delivered.Consumer != n {
			return fmt.Errorf("durable consumer: %d pending, %d unacknowledged, %d delivered; want 0, 0, %d", info.NumPending, info.NumAckPending, info.Delivered.Consumer, n)
		}
		return nil
	})
	if v, _ := evMetric(t, m, "gust_events_received_total", map[string]string{"function": "openfaas-fn." + name, "trigger": "stream"}); v != n {
		t.Errorf("gust_events_received_total{trigger=stream} = %v, want %d", v, n)
	}

	// A stream that does not exist.
	evDeploy(t, m, gust.FunctionSpec{Service: "durghost", Image: imageTag("misbehave"), Annotations: map[string]string{gust.AnnotationStream: "EVTEST_NO_SUCH_STREAM"}})
	check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		if v, ok := evMetric(t, m, "gust_events_dropped_total", map[string]string{"function": "openfaas-fn.durghost", "reason": "stream_unavailable"}); !ok || v < 1 {
			return fmt.Errorf("no gust_events_dropped_total{function=openfaas-fn.durghost,reason=stream_unavailable} (%v)", v)
		}
		return nil
	})
	// The function itself still runs (sync calls).
	if st, _, body := call(t, http.MethodGet, gw(m)+"/function/durghost", ""); st != 200 {
		t.Errorf("sync call of a function with an unusable stream trigger: %d %s", st, body)
	}
}
