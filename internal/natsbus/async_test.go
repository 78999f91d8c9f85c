package natsbus_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
)

// MustOpenAsync creates the async streams and tables on b.
func MustOpenAsync(tb testing.TB, b *natsbus.Bus) *natsbus.AsyncState {
	tb.Helper()
	as, err := natsbus.OpenAsync(context.Background(), b, time.Minute)
	if err != nil {
		tb.Fatalf("open async: %v", err)
	}
	return as
}

// MustEnqueue stores n messages for ns.f, with ids id-0 to id-(n-1).
func MustEnqueue(tb testing.TB, b *natsbus.Bus, n int) {
	tb.Helper()
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("id-%d", i)
		if err := b.Enqueue(context.Background(), gust.SubjectAsyncPrefix+"ns.f", id, []byte(id)); err != nil {
			tb.Fatalf("enqueue %s: %v", id, err)
		}
	}
}

var asyncSpec = gust.ConsumerSpec{
	Stream: natsbus.StreamAsync, Durable: "test", Filter: gust.SubjectAsyncPrefix + "ns.f",
	Max: 2, AckWait: 30 * time.Second,
}

func TestBus_Consume(t *testing.T) {
	b := natsbustest.MustOpenBus(t)
	MustOpenAsync(t, b)
	MustEnqueue(t, b, 5)

	var mu sync.Mutex
	got := map[string]int{}
	// ctx only bounds setting up: consuming goes on after it ends.
	ctx, cancel := context.WithCancel(context.Background())
	stop, err := b.Consume(ctx, asyncSpec, func(d gust.Delivery) {
		mu.Lock()
		got[string(d.Data())] = d.Attempt()
		mu.Unlock()
		if err := d.Ack(); err != nil {
			t.Errorf("ack: %v", err)
		}
	})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 5 {
			return fmt.Errorf("delivered %v, want id-0 to id-4", got)
		}
		return nil
	})
	stop()
	stop() // a second stop returns at once
	mu.Lock()
	defer mu.Unlock()
	for id, attempt := range got {
		if attempt != 1 {
			t.Errorf("%s delivered at attempt %d, want 1", id, attempt)
		}
	}
}

// TestBus_Consume_EndsWhenBusCloses checks that the bus owns a consumer
// nobody stopped: Close waits for the delivery in flight (which may still
// acknowledge), ends the consumer, and no consumer starts on a closed bus.
func TestBus_Consume_EndsWhenBusCloses(t *testing.T) {
	srv := natsbustest.MustRunServer(t, t.TempDir())
	b := natsbustest.MustConnect(t, srv)
	MustOpenAsync(t, b)
	MustEnqueue(t, b, 1)

	entered, release := make(chan struct{}), make(chan struct{})
	acked := make(chan error, 1)
	if _, err := b.Consume(context.Background(), asyncSpec, func(d gust.Delivery) {
		close(entered)
		<-release
		acked <- d.Ack()
	}); err != nil {
		t.Fatal(err)
	}
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s")
	}
	if err := <-acked; err != nil {
		t.Errorf("ack of the delivery in flight during Close: %v", err)
	}
	if _, err := b.Consume(context.Background(), asyncSpec, func(gust.Delivery) {}); err == nil {
		t.Errorf("Consume on a closed bus = nil error, want one")
	}
}
