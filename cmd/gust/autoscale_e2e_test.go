package main

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/autoscale"
	"github.com/gustfaas/gust/internal/check"
)

// Autoscaling by target on gust up with real Docker (issue 14 point 4):
// one test per scale type, each with a load that crosses the target, the
// instances over time printed as a table in the test log, and the return
// to the minimum; and a burst for the panic window. Loads are bounded in
// calls and in time, on loopback only.

// scaleLog samples a function's containers once a second and prints them
// as a table when the test ends.
type scaleLog struct {
	tb    testing.TB
	m     *UpMain
	name  string
	start time.Time
	calls *atomic.Int64
	phase atomic.Value // string

	mu   sync.Mutex
	rows []string
	last int
	stop chan struct{}
	done chan struct{}
}

func watchScale(tb testing.TB, m *UpMain, name string, calls *atomic.Int64) *scaleLog {
	l := &scaleLog{tb: tb, m: m, name: name, start: time.Now(), calls: calls, stop: make(chan struct{}), done: make(chan struct{})}
	l.phase.Store("idle")
	go func() {
		defer close(l.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
			}
			n := len(fnContainers(tb, m, name))
			l.mu.Lock()
			l.last = n
			l.rows = append(l.rows, fmt.Sprintf("%5.0fs  %-8s %6d  %s", time.Since(l.start).Seconds(), l.phase.Load(), l.calls.Load(), strings.Repeat("#", n)+fmt.Sprintf(" %d", n)))
			l.mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		close(l.stop)
		<-l.done
		l.mu.Lock()
		defer l.mu.Unlock()
		tb.Logf("instances of %s over time:\n  time  phase     calls  instances\n%s", name, strings.Join(l.rows, "\n"))
	})
	return l
}

// waitInstances polls the containers until ok holds of their number.
func (l *scaleLog) waitInstances(within time.Duration, what string, ok func(n int) bool) {
	l.tb.Helper()
	check.For(l.tb, within, 250*time.Millisecond, func() error {
		if n := len(fnContainers(l.tb, l.m, l.name)); !ok(n) {
			return fmt.Errorf("%s has %d instances, want %s", l.name, n, what)
		}
		return nil
	})
}

// load runs clients loops that each call path every interval until dur
// has passed (at most dur/interval calls each), counting calls in calls,
// and returns a wait for them that gives the number of failed calls.
func load(tb testing.TB, m *UpMain, path string, clients int, every, dur time.Duration, calls *atomic.Int64) (wait func() int) {
	var failed atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(dur)
	limit := int(dur / every)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now()
			for i := 0; i < limit && time.Now().Before(end); i++ {
				calls.Add(1)
				if st, _, _ := call(tb, "GET", gw(m)+path, ""); st != 200 {
					failed.Add(1)
				}
				next = next.Add(every)
				time.Sleep(time.Until(next))
			}
		}()
	}
	return func() int { wg.Wait(); return int(failed.Load()) }
}

// window is the stable window of the rps and capacity tests
// (gust.scale.window), a third of the default 60 s to keep them short; the
// unit tests of internal/autoscale cover the default.
const window = 20 * time.Second

// TestAutoscale_RateCE: without a scale type, OpenFaaS CE's rule: a steady
// 8 calls per second from two clients (above 5) takes a function with max 2
// to two instances within a minute, and it goes back to its minimum (one
// instance while awake) within a minute after the load stops.
func TestAutoscale_RateCE(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "ce", imageTag("sleep"), map[string]string{gust.LabelScaleMax: "2"})
	var calls atomic.Int64
	l := watchScale(t, m, "ce", &calls)
	l.phase.Store("load")
	wait := load(t, m, "/function/ce", 2, 250*time.Millisecond, 25*time.Second, &calls)
	l.waitInstances(25*time.Second, "2", func(n int) bool { return n == 2 })
	if bad := wait(); bad > 0 {
		t.Errorf("%d calls failed under load", bad)
	}
	l.phase.Store("after")
	l.waitInstances(time.Minute, "back to 1", func(n int) bool { return n == 1 })
}

// TestAutoscale_RPS: com.openfaas.scale.type=rps with target 2 and
// proportion 1: 6 calls per second want 3 (or 4, as the measured rate
// passes 6) instances; after the load, the function returns to its
// minimum once a stable window has passed, not before.
func TestAutoscale_RPS(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "rps", imageTag("sleep"), map[string]string{
		gust.LabelScaleType: gust.ScaleRPS, gust.LabelScaleTarget: "2", gust.LabelScaleTargetProportion: "1", gust.LabelScaleMax: "4",
		gust.LabelScaleWindow: window.String(),
	})
	var calls atomic.Int64
	l := watchScale(t, m, "rps", &calls)
	l.phase.Store("load")
	wait := load(t, m, "/function/rps", 2, 333*time.Millisecond, 12*time.Second, &calls)
	l.waitInstances(12*time.Second, "3", func(n int) bool { return n >= 3 })
	if bad := wait(); bad > 0 {
		t.Errorf("%d calls failed under load", bad)
	}
	l.phase.Store("after")
	stopped := time.Now()
	l.waitInstances(window+15*time.Second, "back to 1", func(n int) bool { return n == 1 })
	if el := time.Since(stopped); el < window-2*time.Second {
		t.Errorf("back to 1 %s after the load, want not before the stable window (%s)", el, window)
	}
}

// TestAutoscale_Capacity: com.openfaas.scale.type=capacity with target 2
// and proportion 1: 6 calls in flight at a time (each 500 ms) want 3
// instances, although one instance takes 100 (gust.concurrency, the hard
// limit, never reached); then back to the minimum.
func TestAutoscale_Capacity(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "cap", imageTag("sleep"), map[string]string{
		gust.LabelScaleType: gust.ScaleCapacity, gust.LabelScaleTarget: "2", gust.LabelScaleTargetProportion: "1", gust.LabelScaleMax: "4",
		gust.LabelScaleWindow: window.String(),
	})
	var calls atomic.Int64
	l := watchScale(t, m, "cap", &calls)
	l.phase.Store("load")
	wait := load(t, m, "/function/cap?ms=500", 6, 500*time.Millisecond, 12*time.Second, &calls)
	l.waitInstances(12*time.Second, "3", func(n int) bool { return n >= 3 })
	if bad := wait(); bad > 0 {
		t.Errorf("%d calls failed under load", bad)
	}
	l.phase.Store("after")
	l.waitInstances(window+15*time.Second, "back to 1", func(n int) bool { return n == 1 })
}

// TestAutoscale_CPU: com.openfaas.scale.type=cpu with target 200
// millicores per instance and proportion 1: two clients keep calls that
// burn CPU for 400 ms of every 500 ms (the sleep example's ?cpu=1), about
// 1600 millicores on a host with two cores free (each instance is limited
// to one core), far above one instance's 200, while only two calls are in
// flight at a time (gust.concurrency 100 never fills). The worker reads
// each instance's CPU time from the Docker Engine every 2 s and the
// function scales up to 3 or more on it; idle again, it goes back to its
// minimum after the stable window.
func TestAutoscale_CPU(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "cpu", imageTag("sleep"), map[string]string{
		gust.LabelScaleType: gust.ScaleCPU, gust.LabelScaleTarget: "200", gust.LabelScaleTargetProportion: "1", gust.LabelScaleMax: "4",
		gust.LabelScaleWindow: window.String(),
	})
	var calls atomic.Int64
	l := watchScale(t, m, "cpu", &calls)
	l.phase.Store("load")
	wait := load(t, m, "/function/cpu?ms=400&cpu=1", 2, 500*time.Millisecond, 15*time.Second, &calls)
	l.waitInstances(15*time.Second, "at least 3", func(n int) bool { return n >= 3 })
	if bad := wait(); bad > 0 {
		t.Errorf("%d calls failed under load", bad)
	}
	l.phase.Store("after")
	l.waitInstances(window+15*time.Second, "back to 1", func(n int) bool { return n == 1 })
}

// TestAutoscale_PanicBurst: a burst of 40 calls in flight at once against
// one instance of target 10 (concurrency 100, so no call waits for a slot):
// the stable average (60 s) alone would want one or two instances for
// seconds; the panic window (6 s) sees four times the capacity and scales
// to 4 as its average gets there (plus the containers' start time).
func TestAutoscale_PanicBurst(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "burst", imageTag("sleep"), map[string]string{
		gust.LabelScaleType: gust.ScaleCapacity, gust.LabelScaleTarget: "10", gust.LabelScaleTargetProportion: "1", gust.LabelScaleMax: "5",
	})
	var calls atomic.Int64
	l := watchScale(t, m, "burst", &calls)
	time.Sleep(2 * time.Second) // a quiet start in the windows
	l.phase.Store("burst")
	burstAt := time.Now()
	wait := load(t, m, "/function/burst?ms=15000", 40, 8*time.Second, 8*time.Second, &calls)
	// The panic window's average reaches 40 within 6 s; the instances
	// then take their start time (seconds on a loaded 2-core host). The
	// stable window's average alone would want 1 instance after 8 s
	// (40 × 8/60 in flight against 10), and 2 after 15 s.
	l.waitInstances(autoscale.PanicWindow+9*time.Second, "at least 4", func(n int) bool { return n >= 4 })
	t.Logf("4 instances %s after the burst began", time.Since(burstAt).Round(100*time.Millisecond))
	if bad := wait(); bad > 0 {
		t.Errorf("%d calls failed in the burst", bad)
	}
}
