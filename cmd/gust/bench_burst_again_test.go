package main

import (
	"fmt"
	"net/http"
	"strings"
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
	b.Log("\n" + t.String())
}
