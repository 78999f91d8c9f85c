package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
)

// TestQuotas_WaitNoLostWakeup runs many waiters through a bound of 2:
// every one gets a slot in the end (a lost wake-up would leave one
// waiting until the deadline), and no more than 2 ever hold one.
func TestQuotas_WaitNoLostWakeup(t *testing.T) {
	q := newQuotas()
	q.set("ns", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var held, peak atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				l, err := q.wait(ctx, "ns")
				if err != nil {
					errs <- err
					return
				}
				n := held.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				held.Add(-1)
				l.release()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("wait: %v", err)
	}
	if p := peak.Load(); p > 2 {
		t.Errorf("%d slots held at once, want at most 2", p)
	}
	if n := q.of("ns").inflight.Load(); n != 0 {
		t.Errorf("%d calls in flight after all released, want 0", n)
	}
}

// TestQuotas_Take checks the sync side: past the bound an ETOOMANY error
// naming quota.concurrency; a namespace without a bound (or a gateway
// without quotas) takes nothing; raising the bound lets waiters go.
func TestQuotas_Take(t *testing.T) {
	var none *quotas
	if l, err := none.take("ns"); l != nil || err != nil {
		t.Errorf("take on no quotas = %v, %v; want nil, nil", l, err)
	}
	q := newQuotas()
	if l, err := q.take("free"); l != nil || err != nil {
		t.Errorf("take in a namespace without a bound = %v, %v; want nil, nil", l, err)
	}
	q.set("ns", 1)
	a, err := q.take("ns")
	if err != nil {
		t.Fatalf("first take: %v", err)
	}
	_, err = q.take("ns")
	if gust.ErrorCode(err) != gust.ETOOMANY || gust.ErrorField(err) != "quota.concurrency" {
		t.Fatalf("take past the bound = %v, want ETOOMANY naming quota.concurrency", err)
	}
	if gust.HTTPStatus(err) != 429 {
		t.Errorf("status = %d, want 429", gust.HTTPStatus(err))
	}

	got := make(chan error, 1)
	go func() {
		l, err := q.wait(context.Background(), "ns")
		if err == nil {
			l.release()
		}
		got <- err
	}()
	check.For(t, 5*time.Second, time.Millisecond, func() error {
		if q.of("ns").waiting.Load() != 1 {
			return errors.New("the waiter does not wait yet")
		}
		return nil
	})
	q.set("ns", 2) // a larger bound: the waiter goes while a still holds
	if err := <-got; err != nil {
		t.Errorf("wait after the bound was raised: %v", err)
	}
	a.release()

	// The bound goes: the count stays, nothing is refused.
	q.set("ns", 0)
	for range 5 {
		if _, err := q.take("ns"); err != nil {
			t.Fatalf("take without a bound: %v", err)
		}
	}
	if n := q.of("ns").inflight.Load(); n != 5 {
		t.Errorf("in flight = %d, want 5 (still counted)", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	q.set("ns", 1)
	if _, err := q.wait(ctx, "ns"); !errors.Is(err, context.Canceled) {
		t.Errorf("wait with an ended context = %v, want context.Canceled", err)
	}
}

func TestQuantity(t *testing.T) {
	for in, want := range map[int64]string{128 << 20: "128Mi", 3 << 30: "3Gi", 1536 << 20: "1536Mi", 1000: "1000", 2 << 10: "2Ki"} {
		if got := quantity(in); got != want {
			t.Errorf("quantity(%d) = %s, want %s", in, got, want)
		}
	}
}
