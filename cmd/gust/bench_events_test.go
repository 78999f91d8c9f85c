package main

// BenchmarkAsyncEvents: async calls and core-NATS event triggers against
// the raw JetStream publish rate of the same embedded server, in one run.
// Like the other benchmarks it takes a fixed number of samples whatever
// b.N is; run it with
//
//	go test ./cmd/gust -run '^$' -bench AsyncEvents -benchtime 1x -count 1 -timeout 20m
//
// Results and how to read them: docs/benchmarks.md, "Async and events".

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
)

// Sizes and bounds of BenchmarkAsyncEvents. Every loop is bounded in
// count and in time.
const (
	bevN        = 5000             // messages, calls or events per phase
	bevClients  = 16               // concurrent publishers / HTTP clients
	bevBody     = 200              // bytes of each message and call body
	bevPhaseMax = 2 * time.Minute  // bound on one phase
	bevStall    = 15 * time.Second // a phase whose count stops moving this long ends
	bevPoll     = 5 * time.Millisecond
	// Untimed async calls and events before the phases: as many as a
	// phase, so that the connections to the instances have grown to what
	// a phase uses. (With 1000, 300 calls of the events phase dialed one,
	// 15% of its CPU: the pool growing, not the steady state.)
	bevWarm       = bevN
	bevSettle     = 3 * time.Second // instance counts unchanged this long are settled
	bevStream     = "BENCHRAW"
	bevRawSubject = "benchraw.x"
	bevTopic      = "benchev.in"
	bevAsyncFn    = "hello"
	bevEventFn    = "hello-events"
	bevQueuedFn   = "hello-queued"
)

// BenchmarkAsyncEvents measures, against the same embedded NATS server:
//
//  1. the raw JetStream publish rate into a scratch file stream: bevN
//     messages published synchronously by bevClients goroutines (twice:
//     before and after the gateway phases, so drift falls on both sides),
//     and bevN published asynchronously from one goroutine;
//  2. the async enqueue rate through the gateway: bevClients HTTP clients
//     POSTing bevN calls to /async-function/hello, each answered 202;
//  3. the end-to-end async throughput: from the first enqueue until the
//     dispatcher has run all bevN calls (gust_async_attempts_total
//     {result="succeeded"});
//  4. the end-to-end event throughput: bevN core-NATS messages published
//     on a function's topic trigger, until all have run
//     (gust_invocations_total of that function);
//  5. a plain httputil.ReverseProxy hop in this process to one instance
//     of hello: bevClients clients POSTing bevN calls through it. An async
//     call does at least this much (a request in to the gateway, a call
//     out to the container), and a queue besides, so this rate bounds
//     the async one on this host: the async target is within reach only
//     where the hop's rate is above a quarter of the raw publish rate;
//  6. last, the enqueue path alone: bevN async calls of a function whose
//     dispatcher runs one call at a time (max 1 instance, concurrency 1),
//     so the enqueues do not share the host with the dispatcher's work.
//
// Before the phases, a burst of bevWarm async calls and bevWarm events
// (as many as a phase) warms both functions (and may scale them up); the
// phases start once the instance counts hold still, and each starts once
// metering has stored what the previous one recorded. Counters are read
// in process, not scraped. The host is shared by the containers: the log gives the
// process's CPU and the host's busy share of each phase.
//
// With GUST_BENCH_PHASE_PROFILE=prefix (and no -cpuprofile) it writes a
// CPU profile of phases 2–3 to prefix-async.cpu, of phase 4 to
// prefix-events.cpu and of the throttled enqueue to prefix-enqueue.cpu.
func BenchmarkAsyncEvents(b *testing.B) {
	m := benchUp(b)
	scale := map[string]string{gust.LabelScaleMin: "1", gust.LabelScaleMax: "4"}
	benchDeploy(b, m, bevAsyncFn, scale)
	bevDeploy(b, m, map[string]any{
		"service": bevEventFn, "image": imageTag("hello"), "labels": scale,
		"annotations": map[string]string{gust.AnnotationTopic: bevTopic},
	})
	// The same enqueue path with the dispatcher held to one call at a
	// time: what the gateway and JetStream do without the dispatcher's
	// concurrent traffic.
	benchDeploy(b, m, bevQueuedFn, map[string]string{gust.LabelScaleMin: "1", gust.LabelScaleMax: "1", gust.LabelConcurrency: "1"})
	asyncKey := gust.FunctionKey(gust.DefaultNamespace, bevAsyncFn)
	eventKey := gust.FunctionKey(gust.DefaultNamespace, bevEventFn)
	mx := m.Metrics
	asyncDone := func() float64 { return bevCounter(mx.AsyncAttempts, "function", asyncKey, "result", "succeeded") }
	asyncOther := func() float64 {
		return bevCounter(mx.AsyncAttempts, "function", asyncKey) - asyncDone()
	}
	eventsRun := func() float64 { return bevCounter(mx.Invocations, "function", eventKey) }
	eventsOK := func() float64 { return bevCounter(mx.Invocations, "function", eventKey, "outcome", gust.OutcomeOK) }
	eventsDropped := func() float64 { return bevCounter(mx.EventsDropped, "function", eventKey) }
	// quiesce waits until metering has stored what earlier phases
	// recorded, so its catching up does not fall in the next phase.
	quiesce := func() {
		last, since := -1.0, time.Now()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if n := bevCounter(mx.RecordsStored); n != last || bevCounter(mx.RecordsBuffered) > 0 {
				last, since = n, time.Now()
			} else if time.Since(since) > 300*time.Millisecond {
				return
			}
		}
	}

	bus, err := natsbus.Connect(m.NATSURL(), "gust-bench-events", zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if _, err := bus.JS.CreateStream(ctx, jetstream.StreamConfig{
		Name: bevStream, Subjects: []string{"benchraw.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		b.Fatalf("scratch stream: %v", err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		if err := bus.JS.DeleteStream(dctx, bevStream); err != nil {
			b.Errorf("remove scratch stream: %v", err)
		}
	}()

	payload := bytes.Repeat([]byte("x"), bevBody)
	client := benchClient(bevClients)
	defer client.CloseIdleConnections()
	gw := "http://" + m.GatewayAddr()

	// Warm-up, untimed: both functions answer a sync call; the async
	// consumer and the trigger subscription are up and have run calls.
	for _, fn := range []string{bevAsyncFn, bevEventFn, bevQueuedFn} {
		check.For(b, time.Minute, 100*time.Millisecond, func() error {
			_, err := benchGet(client, gw+"/function/"+fn)
			return err
		})
	}
	for range 10 { // a few raw publishes so the stream's files exist
		if _, err := bus.JS.Publish(ctx, bevRawSubject, payload); err != nil {
			b.Fatalf("raw publish: %v", err)
		}
	}
	base := asyncDone()
	if n, _, err := bevPostAll(client, gw+"/async-function/"+bevAsyncFn, payload, bevWarm, http.StatusAccepted); err != nil {
		b.Fatalf("warm-up async calls (%d sent): %v", n, err)
	}
	if n, _, _ := bevWait(asyncDone, base+bevWarm, time.Minute); n < base+bevWarm {
		b.Fatalf("warm-up: %.0f of %d async calls ran within a minute", n-base, bevWarm)
	}
	// Core-NATS messages published before the dispatcher has subscribed
	// are lost: publish one at a time until one runs. (The sync warm-up
	// call above counts in the same counter.)
	base = eventsRun()
	check.For(b, time.Minute, 200*time.Millisecond, func() error {
		if err := bus.NC.Publish(bevTopic, payload); err != nil {
			return err
		}
		if eventsRun() == base {
			return errors.New("no event has run yet")
		}
		return nil
	})
	base = eventsRun()
	for range bevWarm { // a burst, like the measured phase
		if err := bus.NC.Publish(bevTopic, payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := bus.NC.Flush(); err != nil {
		b.Fatal(err)
	}
	if n, _, _ := bevWait(eventsRun, base+bevWarm, time.Minute); n < base+bevWarm {
		b.Fatalf("warm-up: %.0f of %d events ran within a minute", n-base, bevWarm)
	}
	// The warm-up bursts may have scaled the functions up: wait until the
	// instance counts hold still, so no start runs during the phases.
	instances := func(fn string) int {
		return len(benchContainers(b, map[string]string{gust.LabelFunction: fn, gust.LabelWorker: m.Worker.ID}))
	}
	settle := func() {
		last, since := "", time.Now()
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
			cur := fmt.Sprint(instances(bevAsyncFn), instances(bevEventFn), instances(bevQueuedFn))
			if cur != last {
				last, since = cur, time.Now()
			} else if time.Since(since) > bevSettle {
				return
			}
		}
		b.Logf("instance counts still changing after a minute: %s", last)
	}
	settle()
	asyncInst0, evInst0 := instances(bevAsyncFn), instances(bevEventFn)
	cs := benchContainers(b, map[string]string{gust.LabelFunction: bevAsyncFn, gust.LabelWorker: m.Worker.ID})
	if len(cs) == 0 || cs[0].Addr == "" {
		b.Fatalf("no running instance of %s to put a hop in front of", bevAsyncFn)
	}
	hop := "http://" + benchReverseProxy(b, "http://"+cs[0].Addr, bevClients) + "/"
	// What the rest of the host uses while this process idles.
	quiesce()
	h0, restM0, restT0 := bevHostCPU(), bevNATSMsgs(m), time.Now()
	time.Sleep(time.Second)
	rest := h0.since()
	// The messages of gust up's connection at rest (heartbeats, pool
	// status, pulls), per second: taken off each phase's count.
	restMsgs := float64(bevNATSMsgs(m)-restM0) / time.Since(restT0).Seconds()

	profile := os.Getenv("GUST_BENCH_PHASE_PROFILE")
	b.ResetTimer()

	// 1. Raw JetStream: sync from bevClients goroutines, then async.
	var rawSync [2]bevPhase
	var rawSyncLat []time.Duration
	rawSync[0], rawSyncLat = bevRawSync(b, ctx, bus.JS, payload)
	rawAsync := bevRawAsync(b, ctx, bus.JS, payload)

	// 2 and 3. Async calls through the gateway, until all have run.
	quiesce()
	stopProf := bevProfile(b, profile, "async")
	base, baseOther := asyncDone(), asyncOther()
	c0, h0, m0 := benchCPU(), bevHostCPU(), bevNATSMsgs(m)
	t0 := time.Now()
	enq, enqLat, enqErr := bevPostAll(client, gw+"/async-function/"+bevAsyncFn, payload, bevN, http.StatusAccepted)
	enqPhase := bevPhase{n: enq, d: time.Since(t0)}
	if enqErr != nil {
		stopProf()
		b.Fatalf("async enqueue (%d of %d answered 202): %v", enq, bevN, enqErr)
	}
	ran, asyncEnd, asyncStalled := bevWait(asyncDone, base+float64(enq), bevPhaseMax-time.Since(t0))
	asyncPhase := bevPhase{n: int(ran - base), d: asyncEnd.Sub(t0), cpu: benchCPU() - c0, host: h0.since(), msgs: bevNATSMsgs(m) - m0}
	stopProf()
	asyncFailed := asyncOther() - baseOther
	asyncInst := instances(bevAsyncFn)

	// 4. Core-NATS events on the function's topic, until all have run.
	quiesce()
	stopProf = bevProfile(b, profile, "events")
	base, baseOK, baseDrop := eventsRun(), eventsOK(), eventsDropped()
	c0, h0, m0 = benchCPU(), bevHostCPU(), bevNATSMsgs(m)
	t0 = time.Now()
	published := 0
	for ; published < bevN && time.Since(t0) < bevPhaseMax; published++ {
		if err := bus.NC.Publish(bevTopic, payload); err != nil {
			stopProf()
			b.Fatalf("publish event %d: %v", published, err)
		}
	}
	if err := bus.NC.Flush(); err != nil {
		stopProf()
		b.Fatal(err)
	}
	pubPhase := bevPhase{n: published, d: time.Since(t0)}
	evRan, evEnd, evStalled := bevWait(func() float64 { return eventsRun() + eventsDropped() - baseDrop },
		base+float64(published), bevPhaseMax-pubPhase.d)
	evPhase := bevPhase{n: int(evRan - base), d: evEnd.Sub(t0), cpu: benchCPU() - c0, host: h0.since(), msgs: bevNATSMsgs(m) - m0}
	stopProf()
	evDropped := eventsDropped() - baseDrop
	evPhase.n -= int(evDropped)
	evFailed := (eventsRun() - base) - (eventsOK() - baseOK)
	evInst := instances(bevEventFn)

	// 1 again: the raw sync baseline after the Gust phases.
	quiesce()
	var lat2 []time.Duration
	rawSync[1], lat2 = bevRawSync(b, ctx, bus.JS, payload)
	rawSyncLat = append(rawSyncLat, lat2...)

	// 5. The ReverseProxy hop to one instance of the async function.
	quiesce()
	c0, h0 = benchCPU(), bevHostCPU()
	t0 = time.Now()
	hopN, hopLat, hopErr := bevPostAll(client, hop, payload, bevN, http.StatusOK)
	hopPhase := bevPhase{n: hopN, d: time.Since(t0), cpu: benchCPU() - c0, host: h0.since()}
	if hopErr != nil {
		b.Fatalf("ReverseProxy hop (%d of %d answered 200): %v", hopN, bevN, hopErr)
	}

	quiesce()
	// 6. Enqueue only: the function's dispatcher runs one call at a time,
	// so the backlog stays in the stream (and is dropped with the run).
	stopProf = bevProfile(b, profile, "enqueue")
	c0, h0 = benchCPU(), bevHostCPU()
	t0 = time.Now()
	qEnq, qLat, qErr := bevPostAll(client, gw+"/async-function/"+bevQueuedFn, payload, bevN, http.StatusAccepted)
	qPhase := bevPhase{n: qEnq, d: time.Since(t0), cpu: benchCPU() - c0, host: h0.since()}
	stopProf()
	if qErr != nil {
		b.Fatalf("throttled async enqueue (%d of %d answered 202): %v", qEnq, bevN, qErr)
	}
	b.StopTimer()

	if enqPhase.n != bevN {
		b.Errorf("async: %d of %d calls enqueued", enqPhase.n, bevN)
	}
	if asyncPhase.n < enq || asyncFailed > 0 {
		b.Errorf("async: %d of %d calls succeeded (%.0f other attempts; stalled: %v)", asyncPhase.n, enq, asyncFailed, asyncStalled)
	}
	if evPhase.n < published || evDropped > 0 || evFailed > 0 {
		b.Errorf("events: %d of %d ran, %.0f dropped, %.0f failed (stalled: %v)", evPhase.n, published, evDropped, evFailed, evStalled)
	}

	raw := bevPhase{n: rawSync[0].n + rawSync[1].n, d: rawSync[0].d + rawSync[1].d, cpu: rawSync[0].cpu + rawSync[1].cpu,
		host: (rawSync[0].host + rawSync[1].host) / 2}
	rawRate := raw.rate()
	rl, el, ql, hl := benchPercentiles(rawSyncLat), benchPercentiles(enqLat), benchPercentiles(qLat), benchPercentiles(hopLat)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(raw.rate(), "js-sync-msg/s")
	b.ReportMetric(rawAsync.rate(), "js-async-msg/s")
	b.ReportMetric(benchUS(rl.P50), "js-sync-p50-µs")
	b.ReportMetric(benchUS(rl.P99), "js-sync-p99-µs")
	b.ReportMetric(enqPhase.rate(), "enqueue-req/s")
	b.ReportMetric(enqPhase.rate()/rawRate, "enqueue/js-sync")
	b.ReportMetric(benchUS(el.P50), "enqueue-p50-µs")
	b.ReportMetric(benchUS(el.P99), "enqueue-p99-µs")
	b.ReportMetric(qPhase.rate(), "enqueue-alone-req/s")
	b.ReportMetric(qPhase.rate()/rawRate, "enqueue-alone/js-sync")
	b.ReportMetric(benchUS(ql.P50), "enqueue-alone-p50-µs")
	b.ReportMetric(hopPhase.rate(), "hop-req/s")
	b.ReportMetric(hopPhase.rate()/rawRate, "hop/js-sync")
	b.ReportMetric(asyncPhase.rate(), "async-e2e-calls/s")
	b.ReportMetric(asyncPhase.rate()/rawRate, "async-e2e/js-sync")
	b.ReportMetric(asyncPhase.cpuPer(), "async-cpu-µs/call")
	b.ReportMetric(evPhase.rate(), "events-e2e/s")
	b.ReportMetric(evPhase.rate()/rawRate, "events-e2e/js-sync")
	b.ReportMetric(evPhase.cpuPer(), "events-cpu-µs/event")
	for _, r := range []struct {
		figure string
		rate   float64
	}{{"async calls end to end", asyncPhase.rate()}, {"core-NATS events end to end", evPhase.rate()}} {
		benchRecord(benchRow{Bench: "BenchmarkAsyncEvents", Figure: r.figure,
			Gust: fmt.Sprintf("%.0f /s", r.rate), Baseline: fmt.Sprintf("%.0f msg/s raw sync JetStream", rawRate),
			Ratio: fmt.Sprintf("%.3f×", r.rate/rawRate), Target: "≥ 0.25×", Met: r.rate/rawRate >= 0.25})
	}
	benchRecord(benchRow{Bench: "BenchmarkAsyncEvents", Figure: "async's bound: a ReverseProxy hop to the function (a request in, a call out, no queue)",
		Gust: fmt.Sprintf("%.0f /s async", asyncPhase.rate()), Baseline: fmt.Sprintf("%.0f req/s hop = %.3f× raw", hopPhase.rate(), hopPhase.rate()/rawRate),
		Ratio: fmt.Sprintf("%.2f× hop", asyncPhase.rate()/hopPhase.rate()), Target: "(the host's part)", NoTarget: true})
	asyncPhase.msgs -= min(asyncPhase.msgs, uint64(restMsgs*asyncPhase.d.Seconds()))
	evPhase.msgs -= min(evPhase.msgs, uint64(restMsgs*evPhase.d.Seconds()))
	b.ReportMetric(asyncPhase.msgsPer(), "async-nats-msgs/call")
	b.ReportMetric(evPhase.msgsPer(), "events-nats-msgs/event")
	b.ReportMetric(raw.cpuPer(), "js-sync-cpu-µs/msg")
	b.ReportMetric(100*rest, "rest-host-busy-%")
	b.ReportMetric(100*asyncPhase.host, "async-host-busy-%")
	b.ReportMetric(100*evPhase.host, "events-host-busy-%")

	var t strings.Builder
	fmt.Fprintf(&t, "async calls and events, hello, %d per phase, %d-byte bodies, %d concurrent publishers/clients\n", bevN, bevBody, bevClients)
	fmt.Fprintf(&t, "%-40s %6s %8s %8s %10s %8s %11s %9s %9s\n", "", "n", "seconds", "per s", "vs js-sync", "p50 µs", "cpu µs/item", "proc CPUs", "host busy")
	row := func(name string, p bevPhase, lat *benchStats) {
		p50, cpu, procs, host := "—", "—", "—", "—"
		if lat != nil {
			p50 = fmt.Sprintf("%.0f", benchUS(lat.P50))
		}
		if p.cpu > 0 {
			cpu = fmt.Sprintf("%.0f", p.cpuPer())
			procs = fmt.Sprintf("%.2f", p.cpu.Seconds()/p.d.Seconds())
		}
		if p.host > 0 {
			host = fmt.Sprintf("%.0f%%", 100*p.host)
		}
		fmt.Fprintf(&t, "%-40s %6d %8.3f %8.0f %10s %8s %11s %9s %9s\n", name, p.n, p.d.Seconds(), p.rate(),
			fmt.Sprintf("×%.2f", p.rate()/rawRate), p50, cpu, procs, host)
	}
	row("raw JetStream publish, sync (1+2)", raw, &rl)
	row("  round 1 (before)", rawSync[0], nil)
	row("  round 2 (after)", rawSync[1], nil)
	row("raw JetStream publish, async", rawAsync, nil)
	row("gateway async enqueue (202)", enqPhase, &el)
	row("async end to end (enqueue → run)", asyncPhase, nil)
	row("enqueue alone (dispatcher 1 at a time)", qPhase, &ql)
	row("core-NATS publish + flush (test)", pubPhase, nil)
	row("events end to end (publish → run)", evPhase, nil)
	row("ReverseProxy hop to hello (200)", hopPhase, &hl)
	fmt.Fprintf(&t, "latency p50/p99/max µs: js sync %.0f/%.0f/%.0f, enqueue %.0f/%.0f/%.0f, enqueue alone %.0f/%.0f/%.0f, hop %.0f/%.0f/%.0f\n",
		benchUS(rl.P50), benchUS(rl.P99), benchUS(rl.Max), benchUS(el.P50), benchUS(el.P99), benchUS(el.Max),
		benchUS(ql.P50), benchUS(ql.P99), benchUS(ql.Max), benchUS(hl.P50), benchUS(hl.P99), benchUS(hl.Max))
	fmt.Fprintf(&t, "instances (start → end of phase): %s %d → %d, %s %d → %d; async failed attempts %.0f; events dropped %.0f, failed %.0f\n",
		bevAsyncFn, asyncInst0, asyncInst, bevEventFn, evInst0, evInst, asyncFailed, evDropped, evFailed)
	fmt.Fprintf(&t, "host busy at rest (1 s before the phases, this process idle): %.0f%%\n", 100*rest)
	fmt.Fprintf(&t, "NATS messages per item on gust up's connection (sent + received: publishes, replies, deliveries, acks, metering; less %.0f/s at rest): async %.1f per call, events %.1f per event\n",
		restMsgs, asyncPhase.msgsPer(), evPhase.msgsPer())
	fmt.Fprintf(&t, "proc CPUs: CPU time of this process (client, embedded NATS server, gateway, dispatcher, worker; not the containers) per second of the phase;\n")
	fmt.Fprintf(&t, "host busy: share of all %d host CPUs not idle (other processes, containers and steal included)\n", runtime.NumCPU())
	b.Log("\n" + t.String())
}

// bevPhase is a count of items over the time they took, with the
// process CPU time they used.
type bevPhase struct {
	n    int
	d    time.Duration
	cpu  time.Duration
	host float64 // busy share of the host's CPUs over the phase, 0..1
	// msgs is the NATS messages gust up's connection sent and received
	// over the phase: unlike the CPU figures, the host's load does not
	// move it.
	msgs uint64
}

func (p bevPhase) msgsPer() float64 { return float64(p.msgs) / float64(max(p.n, 1)) }

// bevNATSMsgs is the count of messages gust up's own NATS connection
// (gateway, dispatcher, worker and metering in one process) has sent and
// received.
func bevNATSMsgs(m *UpMain) uint64 {
	s := m.bus.NC.Stats()
	return s.InMsgs + s.OutMsgs
}

func (p bevPhase) rate() float64 {
	if p.d <= 0 {
		return 0
	}
	return float64(p.n) / p.d.Seconds()
}

func (p bevPhase) cpuPer() float64 { return benchUS(p.cpu) / float64(max(p.n, 1)) }

// bevHost is a reading of the host's CPU time (/proc/stat), in ticks.
type bevHost struct{ busy, total uint64 }

func bevHostCPU() bevHost {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return bevHost{}
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	var h bevHost
	for i := 1; i < len(f); i++ {
		v, _ := strconv.ParseUint(f[i], 10, 64)
		if i > 8 { // guest time is already in user and nice
			break
		}
		h.total += v
		if i != 4 && i != 5 { // idle, iowait
			h.busy += v
		}
	}
	return h
}

// since is the busy share of the host's CPUs from h to now.
func (h bevHost) since() float64 {
	now := bevHostCPU()
	if now.total <= h.total {
		return 0
	}
	return float64(now.busy-h.busy) / float64(now.total-h.total)
}

// bevDeploy deploys a function spec through the gateway API.
func bevDeploy(b *testing.B, m *UpMain, spec map[string]any) {
	b.Helper()
	data, _ := json.Marshal(spec)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+m.GatewayAddr()+"/system/functions", bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatalf("deploy %v: %v", spec["service"], err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b.Fatalf("deploy %v: %d %s", spec["service"], resp.StatusCode, body)
	}
}

// bevCounter sums the series of vec (counters or gauges) whose labels
// match the name/value pairs, read in process (no scrape on the measured
// path).
func bevCounter(vec prometheus.Collector, match ...string) float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { vec.Collect(ch); close(ch) }()
	var sum float64
	for mt := range ch {
		var d dto.Metric
		if mt.Write(&d) != nil {
			continue
		}
		ok := true
		for i := 0; i+1 < len(match); i += 2 {
			found := false
			for _, lp := range d.GetLabel() {
				if lp.GetName() == match[i] && lp.GetValue() == match[i+1] {
					found = true
					break
				}
			}
			ok = ok && found
		}
		if ok {
			sum += d.GetCounter().GetValue() + d.GetGauge().GetValue()
		}
	}
	return sum
}

// bevWait polls count every bevPoll until it reaches target, limit
// passes, or it stops moving for bevStall. It returns the last count, when
// it was first seen, and whether the count stalled.
func bevWait(count func() float64, target float64, limit time.Duration) (float64, time.Time, bool) {
	t0 := time.Now()
	last, seen := count(), t0
	for last < target && time.Since(t0) < limit {
		time.Sleep(bevPoll)
		if n := count(); n != last {
			last, seen = n, time.Now()
		} else if time.Since(seen) > bevStall {
			return last, seen, true
		}
	}
	return last, seen, false
}

// bevRawSync publishes bevN messages to the scratch stream from
// bevClients goroutines, each publish waiting for its ack.
func bevRawSync(b *testing.B, ctx context.Context, js jetstream.JetStream, payload []byte) (bevPhase, []time.Duration) {
	b.Helper()
	var next atomic.Int64
	var firstErr atomic.Value
	lats := make([][]time.Duration, bevClients)
	var wg sync.WaitGroup
	c0, h0 := benchCPU(), bevHostCPU()
	t0 := time.Now()
	stop := t0.Add(bevPhaseMax)
	for g := range bevClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= bevN && time.Now().Before(stop) {
				s := time.Now()
				if _, err := js.Publish(ctx, bevRawSubject, payload); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lats[g] = append(lats[g], time.Since(s))
			}
		}()
	}
	wg.Wait()
	p := bevPhase{d: time.Since(t0), cpu: benchCPU() - c0, host: h0.since()}
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatalf("raw sync publish: %v", err)
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	p.n = len(all)
	return p, all
}

// bevRawAsync publishes bevN messages to the scratch stream from one
// goroutine without waiting for acks, then waits for all of them.
func bevRawAsync(b *testing.B, ctx context.Context, js jetstream.JetStream, payload []byte) bevPhase {
	b.Helper()
	futs := make([]jetstream.PubAckFuture, 0, bevN)
	c0, h0 := benchCPU(), bevHostCPU()
	t0 := time.Now()
	for i := 0; i < bevN && time.Since(t0) < bevPhaseMax; i++ {
		f, err := js.PublishAsync(bevRawSubject, payload, jetstream.WithStallWait(30*time.Second))
		if err != nil {
			b.Fatalf("raw async publish %d: %v", i, err)
		}
		futs = append(futs, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(bevPhaseMax - time.Since(t0)):
		b.Fatalf("raw async publish: %d acks outstanding after %s", js.PublishAsyncPending(), bevPhaseMax)
	case <-ctx.Done():
		b.Fatal(ctx.Err())
	}
	p := bevPhase{n: len(futs), d: time.Since(t0), cpu: benchCPU() - c0, host: h0.since()}
	for i, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatalf("raw async publish %d: %v", i, err)
		}
	}
	return p
}

// bevPost POSTs body to u and wants the status want (202 for an async
// call).
func bevPost(c *http.Client, u string, body []byte, want int) (time.Duration, error) {
	t0 := time.Now()
	resp, err := c.Post(u, "text/plain", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != want {
		return 0, fmt.Errorf("POST %s: status %d, want %d", u, resp.StatusCode, want)
	}
	return d, nil
}

// bevPostAll sends n POSTs from bevClients clients and returns how many
// got the status want and their latencies.
func bevPostAll(c *http.Client, u string, body []byte, n, want int) (int, []time.Duration, error) {
	var next atomic.Int64
	var firstErr atomic.Value
	lats := make([][]time.Duration, bevClients)
	var wg sync.WaitGroup
	stop := time.Now().Add(bevPhaseMax)
	for g := range bevClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && time.Now().Before(stop) {
				d, err := bevPost(c, u, body, want)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lats[g] = append(lats[g], d)
			}
		}()
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	err, _ := firstErr.Load().(error)
	return len(all), all, err
}

// bevProfile starts a CPU profile of one phase to prefix-phase.cpu when
// prefix is set; it returns the function that stops it.
func bevProfile(b *testing.B, prefix, phase string) func() {
	if prefix == "" {
		return func() {}
	}
	f, err := os.Create(prefix + "-" + phase + ".cpu")
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Logf("no phase profile (is -cpuprofile on?): %v", err)
		return func() {}
	}
	var once sync.Once
	return func() { once.Do(func() { pprof.StopCPUProfile(); f.Close() }) }
}
