package natsbus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
)

// BenchmarkSerialDrain drains a backlog of async calls with one consumer
// that runs one call at a time (a function with gust.concurrency=1 and
// scale.max=1: MaxAckPending 1), as the dispatcher consumes them. The
// calls are queued either under one subject for the function (what the
// gateway does) or each under a subject of its own (what a release did,
// so that a queued call could be found by its id). With a subject per
// call, a consumer caught up with the head of the stream makes the
// server walk the function's subjects for every message it takes, so the
// drain slows with the backlog (docs/benchmarks.md).
func BenchmarkSerialDrain(b *testing.B) {
	for _, backlog := range []int{2000, 10000} {
		for _, perCall := range []bool{false, true} {
			name := fmt.Sprintf("OneSubject/%d", backlog)
			if perCall {
				name = fmt.Sprintf("PerCallSubject/%d", backlog)
			}
			b.Run(name, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					bus := natsbustest.MustOpenBus(b)
					MustOpenAsync(b, bus)
					ctx := context.Background()
					for j := 0; j < backlog; j++ {
						id := fmt.Sprintf("%032x", j)
						subject := gust.SubjectAsyncPrefix + "ns.f"
						if perCall {
							subject += "." + id
						}
						if err := bus.Enqueue(ctx, subject, id, []byte(id)); err != nil {
							b.Fatalf("enqueue %s: %v", id, err)
						}
					}
					done := make(chan struct{})
					var n int // the handler runs one delivery at a time
					spec := gust.ConsumerSpec{Stream: asyncSpec.Stream, Durable: "drain", Filter: gust.SubjectAsyncPrefix + "ns.f",
						Filters: []string{gust.SubjectAsyncPrefix + "ns.f.*"}, Max: 1, AckWait: time.Minute}
					b.StartTimer()
					start := time.Now()
					stop, err := bus.Consume(ctx, spec, func(d gust.Delivery) {
						if err := d.Ack(); err != nil {
							b.Errorf("ack: %v", err)
						}
						if n++; n == backlog {
							close(done)
						}
					})
					if err != nil {
						b.Fatal(err)
					}
					select {
					case <-done:
					case <-time.After(2 * time.Minute):
						b.Fatalf("drained %d of %d in 2 minutes", n, backlog)
					}
					elapsed := time.Since(start)
					b.StopTimer()
					stop()
					b.ReportMetric(float64(backlog)/elapsed.Seconds(), "calls/s")
				}
			})
		}
	}
}
