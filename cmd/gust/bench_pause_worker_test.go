package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// The worker's own CPU while it holds paused instances (issue 11: "CPU of
// a worker holding 50 paused instances, idle for a minute: under 1% of
// one core"), measured on a `gust worker` process of its own:
//
//	go test ./cmd/gust -run '^$' -bench PausedTierWorker -benchtime 1x -count 1 -v -timeout 20m
const (
	benchWorkerEmptyIdle = 20 * time.Second // the same worker's CPU with no instance, first
	benchWorkerUp        = time.Minute      // bound on the worker process coming up
	benchWorkerStop      = 2 * time.Minute  // bound on its drain at the end
)

// BenchmarkPausedTierWorker runs NATS, a scheduler and a gateway in this
// process and the worker as a `gust worker` process of its own, the only
// worker of the cluster: every function is placed on it. It reads that
// process's CPU (utime + stime of /proc/<pid>/stat) while it holds no
// instance for benchWorkerEmptyIdle, then while benchPausedMany instances
// of one function (each started by a call of its own, concurrency 1) sit
// paused for benchPausedIdle.
func BenchmarkPausedTierWorker(b *testing.B) {
	MustImages(b)
	logger := zaptest.NewLogger(b, zaptest.Level(zap.WarnLevel))
	r := mustRolesApart(b, "paused-cpu")
	r.logger = logger
	r.scheduler(defaultSchedulerConfig(), "")
	_, base := r.gateway()

	// The worker process; whatever it leaves is removed after it stops.
	workerID := fmt.Sprintf("bench-paused-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	// Runs after the worker's stop (cleanups run last first): its drain
	// must have removed every container; any left is removed here.
	b.Cleanup(func() { MustNoContainers(b, map[string]string{gust.LabelWorker: workerID}) })
	rs := newRoleSet(b)
	rs.level, rs.grace = "warn", benchWorkerStop
	dir := rs.dir
	tokenFile := filepath.Join(dir, "worker-token")
	if err := os.WriteFile(tokenFile, []byte(r.token), 0o600); err != nil {
		b.Fatal(err)
	}
	ln := benchFreeAddr(b)
	wk := rs.start("worker", "worker",
		"--nats", r.NATS.Server.UserURL(natsbus.UserWorker), "--worker-token-file", tokenFile,
		"--listen", ln, "--advertise", "http://"+ln, "--network", testNetwork,
		"--data", filepath.Join(dir, "worker-data"), "--id", workerID)
	check.For(b, benchWorkerUp, 100*time.Millisecond, func() error {
		if wk.exited() {
			b.Fatalf("gust worker exited while starting: %v\n%s", wk.err, wk.tail(40))
		}
		resp, err := http.Get(base + "/system/workers")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), workerID) {
			return fmt.Errorf("worker %s not listed yet", workerID)
		}
		return nil
	})
	pid := wk.cmd.Process.Pid

	// The worker alone, nothing placed on it.
	empty0, t0 := benchProcCPU(b, pid), time.Now()
	time.Sleep(benchWorkerEmptyIdle)
	empty1, emptyWall := benchProcCPU(b, pid), time.Since(t0)
	emptyPct := 100 * float64(empty1-empty0) / float64(emptyWall)

	const many = "bench-paused-worker"
	if err := benchStartPausable(b, base, many); err != nil {
		b.Fatalf("starting %d instances: %v\n%s", benchPausedMany, err, wk.tail(20))
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	labels := map[string]string{gust.LabelFunction: many, gust.LabelWorker: workerID}
	var held int
	check.For(b, benchPausedLimit, benchPausedPollMs, func() error {
		all, paused := len(Containers(b, labels)), benchCountPaused(b, cli, labels)
		if all < benchPausedMany*9/10 || paused != all {
			return fmt.Errorf("%d of %d containers paused", paused, all)
		}
		held = paused
		return nil
	})

	b.ResetTimer()
	cpu0, host0, self0, t1 := benchProcCPU(b, pid), benchHostCPU(b), benchCPU(), time.Now()
	time.Sleep(benchPausedIdle)
	cpu1, host1, self1, wall := benchProcCPU(b, pid), benchHostCPU(b), benchCPU(), time.Since(t1)
	b.StopTimer()
	if n := benchCountPaused(b, cli, labels); n != held {
		b.Errorf("%d of %d instances still paused after the idle minute", n, held)
	}
	if wk.exited() {
		b.Fatalf("gust worker exited during the idle minute: %v\n%s", wk.err, wk.tail(40))
	}
	pct := 100 * float64(cpu1-cpu0) / float64(wall)
	hostPct := 100 * float64(host1-host0) / float64(wall)
	selfPct := 100 * float64(self1-self0) / float64(wall)

	benchRecord(benchRow{Bench: "BenchmarkPausedTierWorker",
		Figure: fmt.Sprintf("CPU of a `gust worker` process, %d paused, idle %g min", held, wall.Round(time.Minute).Minutes()),
		Gust:   fmt.Sprintf("%.2f%% core", pct), Baseline: fmt.Sprintf("same worker empty %.2f%% core", emptyPct),
		Target: "< 1% core", Met: pct < 1})
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(pct, "worker-cpu-%core")
	b.ReportMetric(emptyPct, "empty-worker-cpu-%core")
	b.Logf("\n`gust worker` pid %d: %d instances paused, idle %s: %.2f%% of one core (%s); "+
		"the same worker with no instance, idle %s: %.2f%% of one core\n"+
		"meanwhile this process (NATS, scheduler, gateway): %.2f%%, whole host %.2f%% of one core",
		pid, held, wall.Round(time.Second), pct, (cpu1 - cpu0).Round(time.Millisecond),
		emptyWall.Round(time.Second), emptyPct, selfPct, hostPct)
}

// benchProcCPU is the CPU time (utime + stime) process pid has used, from
// /proc/<pid>/stat.
func benchProcCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// pid (comm) state ppid ... : utime and stime are fields 14 and 15,
	// the 12th and 13th after the command's closing parenthesis.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// benchFreeAddr is a loopback address whose port was free a moment ago.
func benchFreeAddr(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
