package main

// BenchmarkScale: what a second worker and a second gateway add to warm
// throughput, and how long placing 50 instances over two workers takes,
// with the roles apart in this process (mustRolesApart). Run it with
//
//	go test ./cmd/gust -run '^$' -bench BenchmarkScale -benchtime 1x -count 1 -timeout 20m -v
//
// Results and how to read them: docs/benchmarks.md.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Sample counts and bounds of BenchmarkScale.
const (
	scaleClients     = 32              // concurrent clients of every phase
	scalePhase       = 3 * time.Second // one phase; each setup gets two
	scalePhaseMax    = 200_000         // bound on calls per client and phase
	scaleConcurrency = "100"           // calls per instance: above what one instance gets
	scalePlaced      = 50              // instances placed in part 2
	scalePlaceLimit  = 3 * time.Minute // bound on placing them, and on removing them
)

// BenchmarkScale runs NATS, a scheduler, workers and gateways as separate
// roles in this process, on this one host, and measures:
//
//  1. warm throughput and latency of scaleClients clients through (a) one
//     gateway to a function with one instance on one worker, (b) one
//     gateway to a function with one instance on each of two workers, (c)
//     two gateways (clients split between them) to the function of (b).
//     The phases run in the order a b c c b a, so drift falls on every
//     setup alike; (a)'s second phase runs with the second worker started
//     (idle for that function, whose max is one).
//  2. the time from the deploy of a function with a warm minimum of
//     scalePlaced (16 MiB each) until the gateway reports them all
//     available, then from its delete until no container of it is left.
func BenchmarkScale(b *testing.B) {
	MustImages(b)
	ctx := context.Background()
	r := mustRolesApart(b, "scale")
	if os.Getenv("GUST_TEST_LOG") == "" {
		// Info logs of every role (and of 50 starts) would cost CPU and
		// flood the log, as in benchUp.
		r.logger = zaptest.NewLogger(b, zaptest.Level(zap.WarnLevel))
	}
	b.Logf("load average at the start: %s", scaleLoadAvg())
	sch := r.scheduler(defaultSchedulerConfig(), "")
	w1 := r.worker(defaultWorkerConfig(), "w1")
	_, base1 := r.gateway()
	c := gateway.NewClient(base1)
	warm := func(name, n string) {
		spec := gust.FunctionSpec{Service: name, Image: imageTag("hello"), Labels: map[string]string{
			gust.LabelScaleMin: n, gust.LabelScaleMax: n, gust.LabelConcurrency: scaleConcurrency}}
		if err := c.Deploy(ctx, spec, false); err != nil {
			b.Fatalf("deploy %s: %v", name, err)
		}
	}
	// (a): deployed while w1 is the only worker, and at most one instance.
	warm("scale-one", "1")
	scaleAvailable(b, c, "scale-one", 1, time.Minute)
	w2 := r.worker(defaultWorkerConfig(), "w2")
	// Deployed before the scheduler has heard of w2, scale-two would go
	// on w1 twice.
	check.For(b, time.Minute, 10*time.Millisecond, func() error {
		if alive := sch.Scheduler.Alive(); len(alive) != 2 {
			return fmt.Errorf("the scheduler places on %v, want both workers", alive)
		}
		return nil
	})
	// (b), (c): one instance on each worker (a minimum of two spans two).
	warm("scale-two", "2")
	scaleAvailable(b, c, "scale-two", 2, time.Minute)
	for _, id := range []string{w1.Config.ID, w2.Config.ID} {
		if n := len(Containers(b, map[string]string{gust.LabelFunction: "scale-two", gust.LabelWorker: id})); n != 1 {
			b.Fatalf("scale-two: %d instances on worker %s, want one on each", n, id)
		}
	}
	_, base2 := r.gateway()

	setups := []struct {
		name string
		urls []string
	}{
		{"a: 1 gateway, 1 worker", []string{base1 + "/function/scale-one"}},
		{"b: 1 gateway, 2 workers", []string{base1 + "/function/scale-two"}},
		{"c: 2 gateways, 2 workers", []string{base1 + "/function/scale-two", base2 + "/function/scale-two"}},
	}
	client := benchClient(scaleClients)
	defer client.CloseIdleConnections()
	// Warm-up: every gateway has the routes and a connection to every
	// instance before timing starts. The second gateway learns the
	// routes through NATS, so its first calls may come before it has them.
	check.For(b, 30*time.Second, 100*time.Millisecond, func() error {
		_, err := benchGet(client, base2+"/function/scale-two")
		return err
	})
	for _, s := range setups {
		if _, _, _, err := benchLoad(client, s.urls, scaleClients, time.Second, benchWarmup); err != nil {
			b.Fatalf("warm-up %s: %v", s.name, err)
		}
	}

	b.ResetTimer()
	calls := make([]int64, len(setups))
	spent := make([]time.Duration, len(setups))
	lat := make([][]time.Duration, len(setups))
	for _, i := range []int{0, 1, 2, 2, 1, 0} {
		n, d, l, err := benchLoad(client, setups[i].urls, scaleClients, scalePhase, scalePhaseMax)
		if err != nil {
			b.Fatalf("%s: %v", setups[i].name, err)
		}
		calls[i] += n
		spent[i] += d
		lat[i] = append(lat[i], l...)
	}
	b.StopTimer()
	rps := make([]float64, len(setups))
	st := make([]benchStats, len(setups))
	for i := range setups {
		rps[i] = float64(calls[i]) / spent[i].Seconds()
		st[i] = benchPercentiles(lat[i])
	}

	// Part 2, after the phases so that 50 starts do not share the host
	// with them.
	placed, removed, perWorker := scalePlace(b, c, []string{w1.Config.ID, w2.Config.ID})

	b.ReportMetric(0, "ns/op")
	for i, key := range []string{"1gw1w", "1gw2w", "2gw2w"} {
		b.ReportMetric(rps[i], key+"-req/s")
		b.ReportMetric(benchUS(st[i].P50), key+"-p50-µs")
		b.ReportMetric(benchUS(st[i].P99), key+"-p99-µs")
	}
	b.ReportMetric(rps[1]/rps[0], "2w/1w-req/s")
	b.ReportMetric(rps[2]/rps[1], "2gw/1gw-req/s")
	b.ReportMetric(placed.Seconds(), "place50-s")
	b.ReportMetric(removed.Seconds(), "remove50-s")

	var t strings.Builder
	fmt.Fprintf(&t, "warm sync calls of hello, %d clients, %d phases of %s per setup (order a b c c b a)\n", scaleClients, 2, scalePhase)
	fmt.Fprintf(&t, "%-26s %9s %9s %9s %9s %10s\n", "", "req/s", "p50 µs", "p99 µs", "max µs", "calls")
	for i, s := range setups {
		fmt.Fprintf(&t, "%-26s %9.0f %9.0f %9.0f %9.0f %10d\n", s.name, rps[i], benchUS(st[i].P50), benchUS(st[i].P99), benchUS(st[i].Max), calls[i])
	}
	fmt.Fprintf(&t, "b/a (second worker): ×%.2f req/s; c/b (second gateway): ×%.2f req/s\n", rps[1]/rps[0], rps[2]/rps[1])
	fmt.Fprintf(&t, "%d instances of 16 MiB over 2 workers: all available after %.1f s (%v per worker); all removed %.1f s after the delete\n",
		scalePlaced, placed.Seconds(), perWorker, removed.Seconds())
	fmt.Fprintf(&t, "load average at the end: %s\n", scaleLoadAvg())
	b.Log("\n" + t.String())
}

// scalePlace deploys scalePlaced instances of hello with 16 MiB each and
// times the deploy until the gateway reports them all available, and the
// delete until no container of the function is left. It also returns how
// many of them each of workers held.
func scalePlace(b *testing.B, c *gateway.Client, workers []string) (placed, removed time.Duration, perWorker []int) {
	b.Helper()
	ctx := context.Background()
	const name = "scale-fifty"
	n := fmt.Sprint(scalePlaced)
	spec := gust.FunctionSpec{Service: name, Image: imageTag("hello"), Labels: map[string]string{gust.LabelScaleMin: n, gust.LabelScaleMax: n},
		Limits: &gust.FunctionResources{Memory: "16Mi"}}
	t0 := time.Now()
	if err := c.Deploy(ctx, spec, false); err != nil {
		b.Fatalf("deploy %s: %v", name, err)
	}
	scaleAvailable(b, c, name, scalePlaced, scalePlaceLimit)
	placed = time.Since(t0)
	for _, id := range workers {
		perWorker = append(perWorker, len(Containers(b, map[string]string{gust.LabelFunction: name, gust.LabelWorker: id})))
	}
	t0 = time.Now()
	if err := c.Delete(ctx, "", name); err != nil {
		b.Fatalf("delete %s: %v", name, err)
	}
	check.For(b, scalePlaceLimit, 100*time.Millisecond, func() error {
		if cs := Containers(b, map[string]string{gust.LabelFunction: name}); len(cs) > 0 {
			return fmt.Errorf("%d containers of %s left after its delete", len(cs), name)
		}
		return nil
	})
	return placed, time.Since(t0), perWorker
}

// scaleAvailable waits, within limit, until the gateway reports at least
// want instances of name available.
func scaleAvailable(b *testing.B, c *gateway.Client, name string, want int, limit time.Duration) {
	b.Helper()
	check.For(b, limit, 100*time.Millisecond, func() error {
		st, err := c.Function(context.Background(), "", name)
		if err != nil {
			return err
		}
		if st.AvailableReplicas < uint64(want) {
			return fmt.Errorf("%s: %d of %d instances available", name, st.AvailableReplicas, want)
		}
		return nil
	})
}

// scaleLoadAvg is the host's load average, for the record of a shared
// machine.
func scaleLoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// benchLoad runs clients concurrent clients, client i calling
// urls[i%len(urls)] back to back, for d and at most maxPer calls each. It
// returns the calls answered, the time they took and the latency of each.
func benchLoad(c *http.Client, urls []string, clients int, d time.Duration, maxPer int) (int64, time.Duration, []time.Duration, error) {
	var n atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	lat := make([][]time.Duration, clients)
	t0 := time.Now()
	stop := t0.Add(d)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := urls[i%len(urls)]
			for k := 0; k < maxPer && time.Now().Before(stop); k++ {
				c0 := time.Now()
				if _, err := benchGet(c, u); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lat[i] = append(lat[i], time.Since(c0))
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, 0, nil, err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	return n.Load(), elapsed, all, nil
}
