package gateway_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// counterValue reads one counter of a vector.
func counterValue(t *testing.T, v *prometheus.CounterVec, labels ...string) float64 {
	t.Helper()
	var m dto.Metric
	if err := v.WithLabelValues(labels...).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestDispatcher_EventBufferBytes: the buffer of a function's core-NATS
// trigger holds at most EventBufferBytes of messages: while its one
// runner is busy, two messages of 1000 bytes fit in 3000, the next eight
// are dropped and counted, and the two run once the runner is free.
func TestDispatcher_EventBufferBytes(t *testing.T) {
	t.Parallel()
	e := MustOpenAsync(t, func(d *gateway.Dispatcher) { d.EventBufferBytes = 3000 })
	hold := make(chan struct{})
	var released atomic.Bool
	release := func() {
		if released.CompareAndSwap(false, true) {
			close(hold)
		}
	}
	defer release()
	var entered, big atomic.Int32
	e.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength >= 1000 {
			big.Add(1)
		}
		entered.Add(1)
		<-hold
	})
	e.deploySpec(gust.FunctionSpec{Service: "buffered", Image: "img:1", Labels: map[string]string{
		gust.LabelScaleMax: "1", gust.LabelConcurrency: "1",
	}, Annotations: map[string]string{gust.AnnotationTopic: "big.x"}})
	key := gust.FunctionKey(gust.DefaultNamespace, "buffered")

	// Small probes until one runs: the trigger is subscribed and its one
	// runner is held. Later probes wait in the buffer (a few bytes each).
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if err := e.bus.NC.Publish("big.x", []byte("probe")); err != nil {
			return err
		}
		if entered.Load() == 0 {
			return fmt.Errorf("no probe ran yet")
		}
		return nil
	})
	payload := []byte(strings.Repeat("x", 1000))
	for range 10 {
		if err := e.bus.NC.Publish("big.x", payload); err != nil {
			t.Fatal(err)
		}
	}
	// Drops only grow: past 8, fewer than two would run below.
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := counterValue(t, e.metrics.EventsDropped, key, "buffer_full"); got != 8 {
			return fmt.Errorf("dropped: %g, want 8 (two of 1000 bytes fit in 3000)", got)
		}
		return nil
	})
	release()
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := big.Load(); n != 2 {
			return fmt.Errorf("%d large messages ran, want 2", n)
		}
		return nil
	})
}
