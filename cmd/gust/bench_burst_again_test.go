package main

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/docker"
)

// BenchmarkColdBurstAgain is BenchmarkColdBurst's burst on a pool back at
// zero after a burst, as a function that bursts now and then meets it:
// the worker has had time to prepare the containers its last burst
// started (worker/prepare.go). The baseline of the same run is the first
// burst, from a pool that had never burst (its starts are fresh).
//
//	go test ./cmd/gust -run '^$' -bench ColdBurstAgain -benchtime 1x -count 1 -v -timeout 20m
func BenchmarkColdBurstAgain(b *testing.B) {
	m := benchUp(b)
	const name = "bench-burst-again"
	benchDeployImage(b, m, name, imageTag("sleep"), map[string]string{
		gust.LabelScaleMin: "0", gust.LabelScaleMax: fmt.Sprint(benchBurstMax), gust.LabelConcurrency: "1",
		gust.LabelIdleTimeout: "10m", gust.LabelPauseAfter: "0",
	})
	fnLabels := map[string]string{gust.LabelFunction: name, gust.LabelWorker: m.Worker.ID}
	toZero := func() {
		b.Helper()
		if st, _, out := call(b, "POST", gw(m)+"/system/scale-function/"+name, fmt.Sprintf(`{"serviceName":%q,"replicas":0}`, name)); st != http.StatusAccepted {
			b.Fatalf("scale to zero: %d %s", st, out)
		}
		check.For(b, benchGoneLimit, 100*time.Millisecond, func() error {
			if cs := Containers(b, fnLabels); len(cs) > 0 {
				return fmt.Errorf("%d containers of %s left", len(cs), name)
			}
			return nil
		})
	}
	prepared := func() int {
		n := 0
		for _, c := range allContainers(b, fnLabels) {
			if !c.Running && c.Labels[docker.LabelPrepared] == "true" {
				n++
			}
		}
		return n
	}
	toZero()
	// The Engine's pace first, while the worker holds nothing but the
	// pool's next instance prepared: the same starts of a burst once its
	// containers are prepared, without Gust, at two parallelisms (not
	// every one: each round prepares 20 containers and their holders).
	held := benchRuntime(b, docker.Config{Network: testNetwork})
	var floors []benchFloor
	for _, at := range []int{4, benchBurstMax} {
		floors = append(floors, benchBurstFloor(b, held, at))
	}
	best := slices.MinFunc(floors, func(x, y benchFloor) int { return cmp.Compare(x.bound, y.bound) })
	benchSettle(b, m, name)
	u := "http://" + m.GatewayAddr() + "/function/" + name + fmt.Sprintf("?ms=%d", benchBurstWork)

	b.ResetTimer()
	first, firstErrs := benchBurst(u)
	b.StopTimer()
	// Every instance the burst asked for up, then back to zero, then
	// what the worker prepares meanwhile: until it has the burst's
	// instances or stops preparing more for 5 s.
	check.For(b, benchGoneLimit, 100*time.Millisecond, func() error {
		if n := len(Containers(b, fnLabels)); n < benchBurstMax {
			return fmt.Errorf("%d instances of %d", n, benchBurstMax)
		}
		return nil
	})
	toZero()
	last, lastAt := prepared(), time.Now()
	for last < benchBurstMax && time.Since(lastAt) < 5*time.Second {
		time.Sleep(200 * time.Millisecond)
		if n := prepared(); n != last {
			last, lastAt = n, time.Now()
		}
	}
	b.StartTimer()
	again, againErrs := benchBurst(u)
	b.StopTimer()
	for _, e := range append(firstErrs, againErrs...) {
		b.Errorf("burst call: %v", e)
	}
	f, a := benchPercentiles(first), benchPercentiles(again)
	benchRecord(benchRow{Bench: "BenchmarkColdBurstAgain", Figure: fmt.Sprintf("that burst against the Engine's pace: the least slowest call %d prepared containers started without Gust allow", benchBurstMax),
		Gust: fmt.Sprintf("%.0f ms", benchMS(a.Max)), Baseline: fmt.Sprintf("%.0f ms (%d at a time)", benchMS(best.bound), best.at),
		Ratio: fmt.Sprintf("%+.0f ms", benchMS(a.Max-best.bound)), Target: "(the Engine's part)", NoTarget: true})
	b.ReportMetric(benchMS(best.bound), "engine-pace-ms")
	benchRecord(benchRow{Bench: "BenchmarkColdBurstAgain", Figure: fmt.Sprintf("the same burst at zero again after a burst (%d prepared): slowest", last),
		Gust: fmt.Sprintf("%.0f ms", benchMS(a.Max)), Baseline: fmt.Sprintf("%.0f ms first burst", benchMS(f.Max)),
		Ratio: fmt.Sprintf("%.2f×", float64(a.Max)/float64(f.Max)), Target: "all answered, ≤ 1 s",
		Met: len(againErrs) == 0 && len(again) == benchBurstCalls && a.Max <= time.Second})
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(benchMS(a.Max), "again-max-ms")
	b.ReportMetric(benchMS(a.P50), "again-p50-ms")
	b.ReportMetric(benchMS(f.Max), "first-max-ms")
	b.ReportMetric(float64(last), "prepared")
	var t strings.Builder
	fmt.Fprintf(&t, "burst of %d calls (%d ms each), concurrency 1, max %d\n", benchBurstCalls, benchBurstWork, benchBurstMax)
	fmt.Fprintf(&t, "%-34s %8s %8s %8s %6s\n", "", "p50 ms", "p99 ms", "max ms", "ok")
	fmt.Fprintf(&t, "%-34s %8.0f %8.0f %8.0f %6d\n", "first, from zero", benchMS(f.P50), benchMS(f.P99), benchMS(f.Max), len(first))
	fmt.Fprintf(&t, "%-34s %8.0f %8.0f %8.0f %6d\n", fmt.Sprintf("again from zero, %d prepared", last), benchMS(a.P50), benchMS(a.P99), benchMS(a.Max), len(again))
	fmt.Fprintf(&t, "the Engine's pace: %d containers prepared in holders, started without Gust\n", benchBurstMax)
	for _, fl := range floors {
		fmt.Fprintf(&t, "  %2d at a time: first answered after %4.0f ms, all after %4.0f ms; slowest call at least %4.0f ms\n",
			fl.at, benchMS(fl.ready[0]), benchMS(fl.ready[len(fl.ready)-1]), benchMS(fl.bound))
	}
	b.Log("\n" + t.String())
}

// benchFloor is what the Engine did with a burst's starts without Gust:
// when each container answered, from the first start, and the least
// slowest call of the burst those answers allow.
type benchFloor struct {
	at    int
	ready []time.Duration
	bound time.Duration
}

// benchBurstFloor prepares benchBurstMax containers of the burst's image
// in network holders of rt (untimed), then starts them at most at at a
// time and polls each until its first 200 the way the worker does (a
// start holds its slot for the Engine's start only; readiness polled
// every 2 ms for a second, then less often), and then removes them all
// (a removal during the starts would load the Engine they wait for).
func benchBurstFloor(b *testing.B, rt *docker.Runtime, at int) benchFloor {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	specs := make([]gust.ContainerSpec, benchBurstMax)
	for i := range specs {
		specs[i] = benchSpec("sleep", fmt.Sprintf("burst-floor-%d", at), i)
		if err := rt.Prepare(ctx, specs[i]); err != nil {
			b.Fatalf("prepare %d: %v", i, err)
		}
	}
	benchHoldersMade(b, specs[0], len(specs))
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}, Timeout: time.Second}
	slots := make(chan struct{}, at)
	ready := make([]time.Duration, len(specs))
	ids := make([]string, len(specs))
	defer func() {
		for _, id := range ids {
			if id == "" {
				continue
			}
			rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := rt.Remove(rctx, id); err != nil {
				b.Errorf("remove %s: %v", id, err)
			}
			rcancel()
		}
	}()
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			inst, err := rt.Start(ctx, specs[i])
			<-slots
			if err != nil {
				b.Errorf("start %d: %v", i, err)
				return
			}
			ids[i] = inst.ID
			if ready[i], err = benchAwait(c, inst, t0, benchWorkerPoll(time.Now())); err != nil {
				b.Errorf("start %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	slices.Sort(ready)
	return benchFloor{at: at, ready: ready, bound: benchBurstBound(ready, benchBurstCalls*benchBurstWork*time.Millisecond)}
}

// benchWorkerPoll is the worker's readiness schedule for a container
// started at start (worker/instance.go): every 2 ms for the first second,
// then half as long again each time, up to every 50 ms.
func benchWorkerPoll(start time.Time) func() time.Duration {
	delay := 2 * time.Millisecond
	return func() time.Duration {
		if delay < 50*time.Millisecond && time.Since(start) > time.Second {
			delay += delay / 2
		}
		return delay
	}
}

// benchBurstBound is the least time by which instances that answer from
// ready[k] on (sorted) can have done work between them, each running one
// call at a time: the least T with Σ max(0, T − ready[k]) ≥ work. No
// scheduling of the burst's calls ends its slowest call sooner.
func benchBurstBound(ready []time.Duration, work time.Duration) time.Duration {
	var sum time.Duration
	for k := range ready {
		sum += ready[k]
		// With the first k+1 instances only, all busy from their answer.
		t := (work + sum) / time.Duration(k+1)
		if k+1 == len(ready) || t <= ready[k+1] {
			return t
		}
	}
	return 0
}
