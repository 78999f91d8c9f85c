package natsbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"
)

// memStore keeps the records an ingest commits; the rest of
// gust.BillingStore is not used by the ingest.
type memStore struct {
	gust.BillingStore
	mu    sync.Mutex
	calls map[string]gust.CallRecord
}

func (s *memStore) AddCalls(_ context.Context, recs []gust.CallRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		s.calls[r.CallID] = r
	}
	return nil
}

func (s *memStore) AddInstances(context.Context, []gust.InstanceRecord) error { return nil }

func (s *memStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// TestIngest_ContextBoundsStartOnly checks that the ingest keeps storing
// records after the ctx given to Start ended, until Close.
func TestIngest_ContextBoundsStartOnly(t *testing.T) {
	b := natsbustest.MustOpenBus(t)
	if err := natsbus.EnsureMeterStream(context.Background(), b, 0); err != nil {
		t.Fatal(err)
	}
	store := &memStore{calls: map[string]gust.CallRecord{}}
	in := natsbus.NewIngest(b, store, "billing-test", nil, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	cancel()

	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("call-%d", i)
		data, err := json.Marshal(gust.CallRecord{CallID: id, Namespace: "ns", Function: "f", Status: 200})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.JS.Publish(context.Background(), natsbus.SubjectMeterCalls, data, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := store.len(); n != 3 {
			return fmt.Errorf("stored %d records, want 3", n)
		}
		return nil
	})
	in.Close()
	in.Close() // a second Close returns at once
}
