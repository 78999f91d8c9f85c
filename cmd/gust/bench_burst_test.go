package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/docker"
)

// A burst on a function at zero (issue 11): benchBurstCalls concurrent
// calls of benchBurstWork each on a function with gust.concurrency=1 and
// scale.max=benchBurstMax, every one answered and the slowest within a
// second.
//
//	go test ./cmd/gust -run '^$' -bench ColdBurst -benchtime 1x -count 1 -v -timeout 20m
const (
	benchBurstCalls = 100
	benchBurstMax   = 20
	benchBurstWork  = 50 // ms of work per call (the sleep example's ?ms=)
	benchBurstLimit = 2 * time.Minute
)

// BenchmarkColdBurst sends the burst to the function at zero, then, as the
// baseline of the same run, the same burst again once its instances are
// warm: the difference is what starting from zero costs the slowest call.
func BenchmarkColdBurst(b *testing.B) {
	m := benchUp(b)
	const name = "bench-burst"
	benchDeployImage(b, m, name, imageTag("sleep"), map[string]string{
		gust.LabelScaleMin: "0", gust.LabelScaleMax: fmt.Sprint(benchBurstMax), gust.LabelConcurrency: "1",
		gust.LabelIdleTimeout: "10m", gust.LabelPauseAfter: "0",
	})
	// The deploy started one instance: scale the function to zero, as
	// OpenFaaS's API does, and wait until it is.
	if st, _, out := call(b, "POST", gw(m)+"/system/scale-function/"+name, fmt.Sprintf(`{"serviceName":%q,"replicas":0}`, name)); st != http.StatusAccepted {
		b.Fatalf("scale to zero: %d %s", st, out)
	}
	fnLabels := map[string]string{gust.LabelFunction: name, gust.LabelWorker: m.Worker.ID}
	check.For(b, benchGoneLimit, 100*time.Millisecond, func() error {
		if cs := Containers(b, fnLabels); len(cs) > 0 {
			return fmt.Errorf("%d containers of %s left", len(cs), name)
		}
		return nil
	})
	benchSettle(b, m, name)
	u := "http://" + m.GatewayAddr() + "/function/" + name + fmt.Sprintf("?ms=%d", benchBurstWork)

	b.ResetTimer()
	cold, coldErrs := benchBurst(u)
	warm, warmErrs := benchBurst(u)
	b.StopTimer()
	for _, e := range append(coldErrs, warmErrs...) {
		b.Errorf("burst call: %v", e)
	}
	c, w := benchPercentiles(cold), benchPercentiles(warm)
	instances := len(Containers(b, fnLabels))
	benchRecord(benchRow{Bench: "BenchmarkColdBurst", Figure: fmt.Sprintf("%d calls × %d ms at zero (concurrency 1, max %d): slowest", benchBurstCalls, benchBurstWork, benchBurstMax),
		Gust: fmt.Sprintf("%.0f ms", benchMS(c.Max)), Baseline: fmt.Sprintf("%.0f ms warm", benchMS(w.Max)),
		Ratio: fmt.Sprintf("%.2f×", float64(c.Max)/float64(w.Max)), Target: "all answered, ≤ 1 s",
		Met: len(coldErrs) == 0 && len(cold) == benchBurstCalls && c.Max <= time.Second})
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(benchMS(c.Max), "cold-max-ms")
	b.ReportMetric(benchMS(c.P50), "cold-p50-ms")
	b.ReportMetric(benchMS(w.Max), "warm-max-ms")
	var t strings.Builder
	fmt.Fprintf(&t, "burst of %d calls (%d ms each), concurrency 1, max %d\n", benchBurstCalls, benchBurstWork, benchBurstMax)
	fmt.Fprintf(&t, "%-24s %8s %8s %8s %6s\n", "", "p50 ms", "p99 ms", "max ms", "ok")
	fmt.Fprintf(&t, "%-24s %8.0f %8.0f %8.0f %6d\n", "from zero", benchMS(c.P50), benchMS(c.P99), benchMS(c.Max), len(cold))
	fmt.Fprintf(&t, "%-24s %8.0f %8.0f %8.0f %6d\n", "warm (same instances)", benchMS(w.P50), benchMS(w.P99), benchMS(w.Max), len(warm))
	fmt.Fprintf(&t, "instances after the bursts: %d\n", instances)
	b.Log("\n" + t.String())
}

// benchSettle waits until the worker has done what it does ahead for a
// function at zero: the pool's next instance prepared and the network
// holders made (internal/docker/holder.go), none of them changing for a
// second. A function that scaled to zero after its idle timeout meets a
// burst in that state; one scaled down a moment ago would meet it while
// the worker still works ahead, which is not what a burst "at zero" means.
// It logs what it found.
func benchSettle(b *testing.B, m *UpMain, name string) {
	b.Helper()
	if state, ok := benchSettled(b, m, name); ok {
		b.Logf("at zero: %s", state)
	} else {
		b.Logf("at zero, not settled within %s: %s", benchGoneLimit, state)
	}
}

// benchSettled is benchSettle without the log: it returns the state it
// ended in and whether that held still.
func benchSettled(b *testing.B, m *UpMain, name string) (string, bool) {
	b.Helper()
	fnLabels := map[string]string{gust.LabelFunction: name, gust.LabelWorker: m.Worker.ID}
	holderLabels := map[string]string{docker.LabelHolder: "true", gust.LabelWorker: m.Worker.ID}
	state := func() string {
		prepared := 0
		for _, c := range allContainers(b, fnLabels) {
			if !c.Running && c.Labels[docker.LabelPrepared] == "true" {
				prepared++
			}
		}
		return fmt.Sprintf("%d prepared, %d holders", prepared, benchRunning(b, holderLabels))
	}
	last, since := state(), time.Now()
	for deadline := time.Now().Add(benchGoneLimit); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if s := state(); s != last {
			last, since = s, time.Now()
			continue
		}
		if !strings.HasPrefix(last, "0 prepared") && time.Since(since) >= time.Second {
			return last, true
		}
	}
	return last, false
}

// benchBurst sends benchBurstCalls concurrent GETs of u and returns the
// time each answered call took and the errors of the others.
func benchBurst(u string) ([]time.Duration, []error) {
	c := &http.Client{Timeout: benchBurstLimit, Transport: &http.Transport{MaxIdleConnsPerHost: benchBurstCalls, Proxy: nil}}
	defer c.CloseIdleConnections()
	var (
		mu   sync.Mutex
		ds   []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	start := make(chan struct{})
	for range benchBurstCalls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t0 := time.Now()
			_, err := benchGet(c, u)
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			ds = append(ds, d)
		}()
	}
	close(start)
	wg.Wait()
	return ds, errs
}
