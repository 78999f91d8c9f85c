package natsbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestProvision_Retention: the streams that grow with use have the limits
// docs/limits.md names.
func TestProvision_Retention(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus := natsbustest.MustOpenBus(t)
	if err := natsbus.Provision(ctx, bus, time.Hour, natsbus.DefaultMeterRetention); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		stream   string
		maxAge   time.Duration
		maxBytes int64
		discard  jetstream.DiscardPolicy
	}{
		{natsbus.StreamAsync, natsbus.AsyncMaxAge, natsbus.AsyncMaxBytes, jetstream.DiscardNew},
		{natsbus.StreamDeadLetters, natsbus.DeadLetterMaxAge, natsbus.DeadLetterMaxBytes, jetstream.DiscardOld},
		{natsbus.StreamMeter, natsbus.DefaultMeterRetention, natsbus.MeterMaxBytes, jetstream.DiscardNew},
	} {
		s, err := bus.JS.Stream(ctx, tt.stream)
		if err != nil {
			t.Fatalf("%s: %v", tt.stream, err)
		}
		c := s.CachedInfo().Config
		if c.MaxAge != tt.maxAge || c.MaxBytes != tt.maxBytes || c.Discard != tt.discard {
			t.Errorf("%s: max age %v, max bytes %d, discard %v; want %v, %d, %v", tt.stream, c.MaxAge, c.MaxBytes, c.Discard, tt.maxAge, tt.maxBytes, tt.discard)
		}
	}
}

// TestEnqueue_Full: a stream at its limit refuses an enqueue with
// EUNAVAILABLE (503: retry later), not an error the gateway cannot place.
func TestEnqueue_Full(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus := natsbustest.MustOpenBus(t)
	if _, err := bus.JS.CreateStream(ctx, jetstream.StreamConfig{
		Name: "TEST_FULL", Subjects: []string{"test.full.>"}, Storage: jetstream.MemoryStorage,
		MaxBytes: 4096, Discard: jetstream.DiscardNew,
	}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1000)
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		err = bus.Enqueue(ctx, "test.full.x", "id-"+string(rune('a'+i)), data)
	}
	if got := gust.ErrorCode(err); got != gust.EUNAVAILABLE {
		t.Fatalf("enqueue on a full stream: %v (code %q), want %q", err, got, gust.EUNAVAILABLE)
	}
}
