package natsbus_test

import (
	"bytes"
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
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"
)

// memStore keeps the records an ingest commits; the rest of
// gust.BillingStore is not used by the ingest.
type memStore struct {
	gust.BillingStore
	mu    sync.Mutex
	calls map[string]gust.CallRecord
	insts map[string]gust.InstanceRecord // nil: not kept
}

func (s *memStore) AddCalls(_ context.Context, recs []gust.CallRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		s.calls[r.CallID] = r
	}
	return nil
}

func (s *memStore) AddInstances(_ context.Context, recs []gust.InstanceRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		if s.insts != nil {
			s.insts[r.Instance] = r
		}
	}
	return nil
}

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

// TestIngest_SingleAndBatchedMessages: the ingest stores records from
// messages of one record (as workers before batches sent them) and from
// batches of lines alike, the same record sent both ways once; a bad line
// of a batch costs that record only, and a message of an unknown format is
// dropped, not redelivered for ever.
func TestIngest_SingleAndBatchedMessages(t *testing.T) {
	b := natsbustest.MustOpenBus(t)
	ctx := context.Background()
	if err := natsbus.EnsureMeterStream(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 5, 0, 0, 123456789, time.UTC)
	call := func(i int) []byte {
		r := gust.CallRecord{CallID: fmt.Sprintf("call-%d", i), Namespace: "ns", Function: "f", Trigger: gust.TriggerHTTP,
			Start: now, End: now.Add(time.Millisecond), DurationNs: 1e6, BilledNs: 1e6, Status: 200, Outcome: gust.OutcomeOK}
		return r.AppendJSON(nil)
	}
	inst := func(i int) []byte {
		data, err := json.Marshal(gust.InstanceRecord{Instance: fmt.Sprintf("inst-%d", i), Namespace: "ns", Function: "f",
			MemoryMiB: 128, Ready: now, Stopped: now.Add(time.Minute), PausedMs: 5})
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	lines := func(recs ...[]byte) *nats.Msg {
		return &nats.Msg{Data: bytes.Join(recs, []byte{'\n'}), Header: nats.Header{natsbus.MeterFormatHeader: []string{natsbus.MeterFormatLines}}}
	}
	publish := func(subject string, msg *nats.Msg, opts ...jetstream.PublishOpt) {
		t.Helper()
		msg.Subject = subject
		if _, err := b.JS.PublishMsg(ctx, msg, opts...); err != nil {
			t.Fatal(err)
		}
	}
	publish(natsbus.SubjectMeterCalls, &nats.Msg{Data: call(0)}, jetstream.WithMsgID("call-0"))
	publish(natsbus.SubjectMeterCalls, &nats.Msg{Data: call(1)})
	publish(natsbus.SubjectMeterCalls, lines(call(1), call(2), call(3)))
	publish(natsbus.SubjectMeterCalls, lines(call(4), []byte(`{"callId":"torn","namesp`), call(5)))
	publish(natsbus.SubjectMeterCalls, &nats.Msg{Data: call(6), Header: nats.Header{natsbus.MeterFormatHeader: []string{"protobuf"}}})
	publish(natsbus.SubjectMeterInstances, &nats.Msg{Data: inst(0)})
	publish(natsbus.SubjectMeterInstances, lines(inst(1), inst(2)))

	store := &memStore{calls: map[string]gust.CallRecord{}, insts: map[string]gust.InstanceRecord{}}
	in := natsbus.NewIngest(b, store, "billing-formats", nil, zaptest.NewLogger(t))
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	in.Drain(dctx)
	if dctx.Err() != nil {
		t.Fatal("the ingest did not take in every message within 10s")
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	for i := range 6 {
		id := fmt.Sprintf("call-%d", i)
		r, ok := store.calls[id]
		var want gust.CallRecord
		if err := json.Unmarshal(call(i), &want); err != nil {
			t.Fatal(err)
		}
		if !ok || r != want {
			t.Errorf("record %s stored as %+v (%v), want %+v", id, r, ok, want)
		}
	}
	if len(store.calls) != 6 {
		t.Errorf("%d call records stored, want 6 (call-0..call-5)", len(store.calls))
	}
	for i := range 3 {
		if r, ok := store.insts[fmt.Sprintf("inst-%d", i)]; !ok || r.PausedMs != 5 || !r.Stopped.Equal(now.Add(time.Minute)) {
			t.Errorf("instance record inst-%d stored as %+v (%v)", i, r, ok)
		}
	}
	if len(store.insts) != 3 {
		t.Errorf("%d instance records stored, want 3", len(store.insts))
	}
}
