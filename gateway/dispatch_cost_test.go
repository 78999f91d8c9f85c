package gateway_test

import (
	"bytes"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestAsyncCost measures what one async call costs the process end to
// end (enqueue through HTTP, queue, dispatch, the call, status, metering)
// with the fake runtime, so no container shares the CPU: process CPU and
// NATS messages per call. It runs only with GUST_ASYNC_COST=1; the
// figures go to the log (docs/benchmarks.md, "Async and events after
// issue 11").
func TestAsyncCost(t *testing.T) {
	if os.Getenv("GUST_ASYNC_COST") == "" {
		t.Skip("set GUST_ASYNC_COST=1 to measure")
	}
	const n, clients = 3000, 16
	e := MustOpenAsync(t)
	e.deploy(gust.DefaultNamespace, "cost", gust.LabelScaleMax, "1")
	key := gust.FunctionKey(gust.DefaultNamespace, "cost")
	done := func() float64 { return testutil.ToFloat64(e.metrics.AsyncAttempts.WithLabelValues(key, "succeeded")) }
	body := bytes.Repeat([]byte("x"), 200)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	defer client.CloseIdleConnections()
	run := func(count int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(count) {
					resp, err := client.Post(e.url+"/async-function/cost", "text/plain", bytes.NewReader(body))
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						t.Errorf("enqueue: %d", resp.StatusCode)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	base := done()
	run(200) // warm-up
	check.For(t, time.Minute, 5*time.Millisecond, func() error {
		if done() < base+200 {
			return errWait
		}
		return nil
	})
	base = done()
	stats0 := e.bus.NC.Stats()
	c0, t0 := cpuTime(), time.Now()
	run(n)
	check.For(t, 2*time.Minute, 2*time.Millisecond, func() error {
		if done() < base+n {
			return errWait
		}
		return nil
	})
	d, cpu := time.Since(t0), cpuTime()-c0
	stats := e.bus.NC.Stats()
	msgs := (stats.InMsgs + stats.OutMsgs) - (stats0.InMsgs + stats0.OutMsgs)
	t.Logf("%d async calls end to end in %s: %.0f calls/s, %.0f µs of process CPU per call (%.2f CPUs), %.1f NATS messages per call on the bus",
		n, d.Round(time.Millisecond), n/d.Seconds(), float64(cpu.Microseconds())/n, cpu.Seconds()/d.Seconds(), float64(msgs)/n)
}

type waitErr struct{}

func (waitErr) Error() string { return "not yet" }

var errWait error = waitErr{}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
