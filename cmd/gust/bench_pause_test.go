package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/docker"
	"go.uber.org/zap"
)

// The paused tier (issue 11 point 2), measured in one run:
//
//	go test ./cmd/gust -run '^$' -bench PausedTier -benchtime 1x -count 1 -v -timeout 20m
const (
	benchPausedRuns   = 20              // paused → first answer, per side
	benchPausedMany   = 50              // instances held paused for the CPU figure
	benchPausedIdle   = time.Minute     // how long the CPU of the paused instances is read
	benchPausedLimit  = 2 * time.Minute // bound on waiting for instances to pause
	benchPausedAfter  = "300ms"         // gust.pause-after of the benchmark's functions
	benchPausedPollMs = 20 * time.Millisecond
)

// BenchmarkPausedTier measures (1) the first answer of a call to a function
// whose only instance is paused, through the gateway, against a bare
// `docker unpause` + first answer of a container of the same image, each
// p50 of benchPausedRuns, alternating; (2) the CPU this process (gateway,
// worker, scheduler and NATS of `gust up`) and the whole host use while
// benchPausedMany instances sit paused for benchPausedIdle.
func BenchmarkPausedTier(b *testing.B) {
	m := benchUp(b)
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	rt := benchRuntime(b, docker.Config{Network: testNetwork})

	const name = "bench-paused"
	benchDeploy(b, m, name, map[string]string{
		gust.LabelScaleMin: "0", gust.LabelScaleMax: "1", gust.LabelPauseAfter: benchPausedAfter, gust.LabelIdleTimeout: "10m",
	})
	gwURL := "http://" + m.GatewayAddr() + "/function/" + name
	gw := benchClient(1)
	defer gw.CloseIdleConnections()
	fnLabels := map[string]string{gust.LabelFunction: name, gust.LabelWorker: m.Worker.ID}

	// The bare side: a container of the same image, paused and unpaused
	// through the Engine by the benchmark itself.
	pollClient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}, Timeout: time.Second}
	bare, err := rt.Start(ctx, gust.ContainerSpec{
		Name: fmt.Sprintf("gust-bench-paused-%d", os.Getpid()), Image: imageTag("hello"), Env: []string{"PORT=8080"},
		Labels: map[string]string{"gust.bench": "paused"}, Port: 8080, MemoryBytes: gust.DefaultMemory, PidsLimit: gust.DefaultPidsLimit,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = rt.Remove(context.Background(), bare.ID) }()
	check.For(b, benchReadyLimit, benchPollEvery, func() error { _, err := benchGet(pollClient, "http://"+bare.Addr+"/"); return err })

	if _, err := benchGet(gw, gwURL); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var gustSide, bareSide []time.Duration
	for i := 0; i < benchPausedRuns; i++ {
		// Gust: wait until the worker paused the instance, then call.
		benchWaitPaused(b, cli, fnLabels, 1)
		t0 := time.Now()
		h, err := benchGet(gw, gwURL)
		if err != nil {
			b.Fatalf("call %d on a paused instance: %v", i, err)
		}
		gustSide = append(gustSide, time.Since(t0))
		if h.Get(gust.HeaderColdStart) == "true" {
			b.Errorf("call %d started an instance instead of thawing the paused one", i)
		}

		// Bare: pause, let it settle as long as Gust's did, unpause and
		// poll for the first answer.
		if err := cli.ContainerPause(ctx, bare.ID); err != nil {
			b.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		t0 = time.Now()
		if err := cli.ContainerUnpause(ctx, bare.ID); err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := benchGet(pollClient, "http://"+bare.Addr+"/"); err == nil {
				break
			}
			if time.Since(t0) > benchReadyLimit {
				b.Fatalf("bare container: no answer %s after unpause", benchReadyLimit)
			}
			time.Sleep(benchPollEvery)
		}
		bareSide = append(bareSide, time.Since(t0))
	}
	b.StopTimer()
	g, d := benchPercentiles(gustSide), benchPercentiles(bareSide)

	// 50 instances of one function, each started by a call of its own
	// (concurrency 1), then left idle until every one is paused.
	const many = "bench-paused-many"
	if err := benchStartPausable(b, "http://"+m.GatewayAddr(), many); err != nil {
		b.Fatalf("starting %d instances: %v", benchPausedMany, err)
	}
	manyLabels := map[string]string{gust.LabelFunction: many, gust.LabelWorker: m.Worker.ID}
	// The decider may keep a few less than the burst raised: wait until
	// every instance left is paused.
	var held int
	check.For(b, benchPausedLimit, benchPausedPollMs, func() error {
		all, paused := len(Containers(b, manyLabels)), benchCountPaused(b, cli, manyLabels)
		if all < benchPausedMany*9/10 || paused != all {
			return fmt.Errorf("%d of %d containers paused", paused, all)
		}
		held = paused
		return nil
	})
	cpu0, host0, t0 := benchCPU(), benchHostCPU(b), time.Now()
	time.Sleep(benchPausedIdle)
	cpu1, host1, wall := benchCPU(), benchHostCPU(b), time.Since(t0)
	if n := benchCountPaused(b, cli, manyLabels); n != held {
		b.Errorf("%d of %d instances still paused after the idle minute", n, held)
	}
	procPct := 100 * float64(cpu1-cpu0) / float64(wall)
	hostPct := 100 * float64(host1-host0) / float64(wall)

	benchRecord(benchRow{Bench: "BenchmarkPausedTier", Figure: "paused → first answer, p50 of 20",
		Gust: fmt.Sprintf("%.1f ms", benchMS(g.P50)), Baseline: fmt.Sprintf("%.1f ms bare unpause", benchMS(d.P50)),
		Ratio: fmt.Sprintf("%.2f×", float64(g.P50)/float64(d.P50)), Target: "≤ 15 ms", Met: g.P50 <= 15*time.Millisecond})
	benchRecord(benchRow{Bench: "BenchmarkPausedTier", Figure: fmt.Sprintf("gust up process CPU, %d paused idle %s", held, wall.Round(time.Second)),
		Gust: fmt.Sprintf("%.2f%% core", procPct), Baseline: fmt.Sprintf("host %.1f%% core", hostPct),
		Target: "< 1% core", Met: procPct < 1})
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(benchMS(g.P50), "paused-p50-ms")
	b.ReportMetric(benchMS(d.P50), "bare-unpause-p50-ms")
	b.ReportMetric(procPct, "gust-cpu-%core")
	var t strings.Builder
	fmt.Fprintf(&t, "paused tier, hello, %d runs per side (alternating)\n", g.N)
	fmt.Fprintf(&t, "%-40s %8s %8s\n", "", "p50 ms", "max ms")
	fmt.Fprintf(&t, "%-40s %8.1f %8.1f\n", "gust: call on a paused instance", benchMS(g.P50), benchMS(g.Max))
	fmt.Fprintf(&t, "%-40s %8.1f %8.1f\n", "bare: docker unpause + first answer", benchMS(d.P50), benchMS(d.Max))
	fmt.Fprintf(&t, "ratio gust / bare at p50: %.2f\n", float64(g.P50)/float64(d.P50))
	fmt.Fprintf(&t, "%d instances paused, idle %s: gust process %.2f%% of one core, whole host %.2f%% of one core\n",
		held, wall.Round(time.Second), procPct, hostPct)
	fmt.Fprintf(&t, "gust samples ms: %s\nbare samples ms: %s\n", benchList(gustSide), benchList(bareSide))
	b.Log("\n" + t.String())
}

// benchStartPausable deploys the sleep image as name through the gateway
// at base, with concurrency 1, a max of benchPausedMany and the
// benchmark's pause-after, and starts benchPausedMany instances of it,
// each by a call of its own; it returns the first call that failed.
func benchStartPausable(b *testing.B, base, name string) error {
	b.Helper()
	benchDeployAt(b, base, name, imageTag("sleep"), map[string]string{
		gust.LabelScaleMin: "0", gust.LabelScaleMax: fmt.Sprint(benchPausedMany), gust.LabelConcurrency: "1",
		gust.LabelPauseAfter: benchPausedAfter, gust.LabelIdleTimeout: "10m",
		// The decider holds what the burst raised for its stable window:
		// an hour, so that it stops none of them while they are read.
		gust.LabelScaleType: gust.ScaleCapacity, gust.LabelScaleWindow: "1h",
	})
	errs := make(chan error, benchPausedMany)
	burst := &http.Client{Timeout: 2 * time.Minute}
	var wg sync.WaitGroup
	for range benchPausedMany {
		wg.Go(func() {
			if _, err := benchGet(burst, base+"/function/"+name+"?ms=3000"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when none failed
}

// benchWaitPaused waits until n containers with labels are paused.
func benchWaitPaused(b *testing.B, cli *client.Client, labels map[string]string, n int) {
	b.Helper()
	check.For(b, benchPausedLimit, benchPausedPollMs, func() error {
		if got := benchCountPaused(b, cli, labels); got != n {
			return fmt.Errorf("%d of %d containers paused", got, n)
		}
		return nil
	})
}

// benchCountPaused counts the paused containers with labels: paused by
// the Engine, or frozen through their cgroup freezer by the worker, which
// the Engine then lists as running (internal/docker/freezer.go).
func benchCountPaused(b *testing.B, cli *client.Client, labels map[string]string) int {
	b.Helper()
	args := filters.NewArgs()
	for k, v := range labels {
		args.Add("label", k+"="+v)
	}
	ctx := context.Background()
	cs, err := cli.ContainerList(ctx, container.ListOptions{Filters: args})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, c := range cs {
		paused, err := benchPauses.Paused(ctx, c.ID)
		if err != nil && !errors.Is(err, gust.ErrInstanceNotFound) {
			b.Fatal(err)
		}
		if paused {
			n++
		}
	}
	return n
}

// benchPauses reads whether containers are paused (docker.Runtime.Paused,
// which keeps where each one's freezer is): no network of its own.
var benchPauses = func() *docker.Runtime {
	rt, err := docker.New(docker.Config{}, zap.NewNop())
	if err != nil {
		panic(err)
	}
	return rt
}()

// benchHostCPU is the CPU time every core of the host has spent outside
// idle and iowait (/proc/stat), in wall time summed over cores.
func benchHostCPU(b *testing.B) time.Duration {
	b.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for i, v := range f[1:] {
		var n int64
		fmt.Sscan(v, &n)
		if i != 3 && i != 4 && i < 8 {
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ is 100 on Linux
}
