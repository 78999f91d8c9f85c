package natsbus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/spool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
)

// TestMeterBuffersWhileNATSIsDown: records made while the server is away
// wait in the spool and are published, each once, when it is back.
func TestMeterBuffersWhileNATSIsDown(t *testing.T) {
	logger := zaptest.NewLogger(t)
	store := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv, err := RunServer(ServerConfig{Listen: addr, StoreDir: store, Users: testUsers}, logger)
	if err != nil {
		t.Fatal(err)
	}
	bus, err := ConnectWith(testConfig(srv, "meter-test"), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.NC.Close()
	ctx := context.Background()
	if err := EnsureMeterStream(ctx, bus, 0); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMeter(bus, sp, nil, logger)
	m.Start()
	record := func(i int) {
		now := time.Now()
		m.RecordCall(&gust.CallRecord{CallID: fmt.Sprintf("call-%d", i), Namespace: "ns", Function: "f",
			Trigger: gust.TriggerHTTP, Start: now, End: now, Status: 200, Outcome: gust.OutcomeOK})
	}
	wait := func(want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ids, n := streamRecords(t, bus)
			if n == want && len(ids) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("stream holds %d records (%d distinct), want %d once each", n, len(ids), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i := 0; i < 10; i++ {
		record(i)
	}
	wait(10)

	srv.Shutdown()
	for i := 10; i < 60; i++ {
		record(i)
	}
	time.Sleep(300 * time.Millisecond) // the publisher tries, and fails
	if n, _ := sp.Len(); n != 50 {
		t.Errorf("spool holds %d records while NATS is down, want 50", n)
	}

	srv2, err := RunServer(ServerConfig{Listen: addr, StoreDir: store, Users: testUsers}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Shutdown()
	wait(60) // every record once: none lost, none twice
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := sp.Len(); n != 0 {
		t.Errorf("spool holds %d records after they were published", n)
	}
}

// TestMeterRetriesEveryUnacknowledgedRecord: when the acknowledgements of
// several records of a batch are lost (nothing answers the publishes: here
// a plain subscriber takes them where the stream will be), every one of
// them is sent again after the ack wait, not only the first, and all reach
// the stream once it answers.
func TestMeterRetriesEveryUnacknowledgedRecord(t *testing.T) {
	logger := zaptest.NewLogger(t)
	srv, err := RunServer(ServerConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Users: testUsers}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	bus, err := ConnectWith(testConfig(srv, "meter-lost-acks"), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.NC.Close()
	ctx := context.Background()
	if _, err := bus.JS.Stream(ctx, StreamMeter); err == nil {
		t.Fatal("the metering stream exists before the test makes it")
	}
	swallowed := make(chan string, 1000)
	sub, err := bus.NC.Subscribe("gust.meter.>", func(msg *nats.Msg) {
		for _, id := range messageRecords(t, msg.Header, msg.Data) {
			swallowed <- id
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMeter(bus, sp, nil, logger)
	m.ackWait = 200 * time.Millisecond
	m.Start()
	const n = 5
	now := time.Now()
	for i := 0; i < n; i++ {
		m.RecordCall(&gust.CallRecord{CallID: fmt.Sprintf("lost-%d", i), Namespace: "ns", Function: "f",
			Trigger: gust.TriggerHTTP, Start: now, End: now, Status: 200, Outcome: gust.OutcomeOK})
	}
	// Each record is sent at least twice while nobody acknowledges: the
	// first send and a retry after the ack wait.
	sent := map[string]int{}
	deadline := time.After(20 * time.Second)
	for twice := 0; twice < n; {
		select {
		case id := <-swallowed:
			sent[id]++
			if sent[id] == 2 {
				twice++
			}
		case <-deadline:
			t.Fatalf("records sent while unacknowledged: %v; want each of the %d at least twice", sent, n)
		}
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := EnsureMeterStream(ctx, bus, 0); err != nil {
		t.Fatal(err)
	}
	var held int
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, held = streamRecords(t, bus); held == n {
			break
		}
	}
	if held != n {
		t.Fatalf("stream holds %d records, want %d", held, n)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if k, _ := sp.Len(); k != 0 {
		t.Errorf("spool holds %d records after they were published", k)
	}
}

// TestMeterSyncRecordIsInTheStreamOnReturn: in sync mode RecordCall
// returns only once the stream holds the record, for each of several
// concurrent callers; with the server gone it returns after the wait,
// counting the call as unsynced, and the record is published from the
// spool when the server is back.
func TestMeterSyncRecordIsInTheStreamOnReturn(t *testing.T) {
	logger := zaptest.NewLogger(t)
	store := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv, err := RunServer(ServerConfig{Listen: addr, StoreDir: store, Users: testUsers}, logger)
	if err != nil {
		t.Fatal(err)
	}
	bus, err := ConnectWith(testConfig(srv, "meter-sync"), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.NC.Close()
	ctx := context.Background()
	if err := EnsureMeterStream(ctx, bus, 0); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	mets := metrics.New()
	m := NewMeter(bus, sp, mets, logger)
	const wait = 700 * time.Millisecond
	m.SetSync(wait)
	m.Start()
	rec := func(id string) *gust.CallRecord {
		now := time.Now()
		return &gust.CallRecord{CallID: id, Namespace: "ns", Function: "f",
			Trigger: gust.TriggerHTTP, Start: now, End: now, Status: 200, Outcome: gust.OutcomeOK}
	}
	held := func() int {
		t.Helper()
		_, n := streamRecords(t, bus)
		return n
	}
	// One caller at a time: each record is in the stream on return.
	for i := range 20 {
		m.RecordCall(rec(fmt.Sprintf("one-%d", i)))
		if n := held(); n != i+1 {
			t.Fatalf("stream holds %d records when RecordCall %d returned, want %d", n, i+1, i+1)
		}
	}
	// Concurrent callers share publishes; each still waits for its own.
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.RecordCall(rec(fmt.Sprintf("many-%d", i)))
		}()
	}
	wg.Wait()
	if n := held(); n != 60 {
		t.Fatalf("stream holds %d records when 40 concurrent RecordCalls returned, want 60", n)
	}
	if n := testutil.ToFloat64(mets.RecordsUnsynced); n != 0 {
		t.Errorf("%v calls counted as unsynced with the server up", n)
	}

	srv.Shutdown()
	began := time.Now()
	m.RecordCall(rec("while-down"))
	if took := time.Since(began); took < wait {
		t.Errorf("RecordCall returned after %s with the server down, want the wait of %s", took, wait)
	}
	// The next call does not wait: the meter knows NATS is away.
	began = time.Now()
	m.RecordCall(rec("while-down-2"))
	if took := time.Since(began); took >= wait {
		t.Errorf("a second RecordCall with the server down took %s, want no wait", took)
	}
	if n := testutil.ToFloat64(mets.RecordsUnsynced); n != 2 {
		t.Errorf("%v calls counted as unsynced, want 2", n)
	}
	srv2, err := RunServer(ServerConfig{Listen: addr, StoreDir: store, Users: testUsers}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Shutdown()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := m.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if k, _ := sp.Len(); k != 0 {
		t.Errorf("spool holds %d records after the server came back", k)
	}
}

// messageRecords returns the call or instance ids of the records in one
// metering message, in either format.
func messageRecords(t *testing.T, h nats.Header, data []byte) []string {
	t.Helper()
	lines := [][]byte{data}
	if h.Get(MeterFormatHeader) == MeterFormatLines {
		lines = bytes.Split(data, []byte{'\n'})
	}
	var ids []string
	for _, l := range lines {
		var r struct{ CallID, Instance string }
		if err := json.Unmarshal(l, &r); err != nil {
			t.Errorf("metering message record %q: %v", l, err)
			continue
		}
		ids = append(ids, r.CallID+r.Instance)
	}
	return ids
}

// streamRecords reads the whole metering stream and returns how many
// times each record is in it, and how many records it holds in all.
func streamRecords(t *testing.T, bus *Bus) (map[string]int, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := bus.JS.Stream(ctx, StreamMeter)
	if err != nil {
		return nil, 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, 0
	}
	ids := map[string]int{}
	n := 0
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("metering stream message %d: %v", seq, err)
		}
		for _, id := range messageRecords(t, msg.Header, msg.Data) {
			ids[id]++
			n++
		}
	}
	return ids, n
}

// TestMeterBatchesRecords: a burst of records goes to the stream in a few
// messages, each within meterBatchBytes and of one kind, every record
// once; the spool is empty once they are acknowledged.
func TestMeterBatchesRecords(t *testing.T) {
	logger := zaptest.NewLogger(t)
	srv, err := RunServer(ServerConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Users: testUsers}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	bus, err := ConnectWith(testConfig(srv, "meter-batches"), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.NC.Close()
	ctx := context.Background()
	if err := EnsureMeterStream(ctx, bus, 0); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMeter(bus, sp, nil, logger)
	m.Start()
	const calls, instances = 5000, 7
	now := time.Now()
	for i := range calls {
		m.RecordCall(&gust.CallRecord{CallID: fmt.Sprintf("batched-%d", i), Namespace: "openfaas-fn", Function: "hello",
			Image: "gust-test/hello:e2e", Worker: "worker-1", Instance: "gust-hello-1", Trigger: gust.TriggerHTTP,
			Start: now, End: now, Status: 200, Outcome: gust.OutcomeOK})
		if i%1000 == 0 {
			m.RecordInstance(&gust.InstanceRecord{Instance: fmt.Sprintf("inst-%d", i), Namespace: "ns", Function: "f", Ready: now, Stopped: now})
		}
	}
	for i := range instances - calls/1000 {
		m.RecordInstance(&gust.InstanceRecord{Instance: fmt.Sprintf("inst-late-%d", i), Namespace: "ns", Function: "f", Ready: now, Stopped: now})
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := m.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if k, _ := sp.Len(); k != 0 {
		t.Fatalf("spool holds %d records after Close", k)
	}
	ids, n := streamRecords(t, bus)
	if n != calls+instances || len(ids) != calls+instances {
		t.Fatalf("stream holds %d records (%d distinct), want %d once each", n, len(ids), calls+instances)
	}
	s, err := bus.JS.Stream(ctx, StreamMeter)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if f := msg.Header.Get(MeterFormatHeader); f != MeterFormatLines {
			t.Errorf("message %d has format %q, want %q", seq, f, MeterFormatLines)
		}
		if len(msg.Data) > meterBatchBytes {
			t.Errorf("message %d holds %d bytes, over the bound of %d", seq, len(msg.Data), meterBatchBytes)
		}
		for _, id := range messageRecords(t, msg.Header, msg.Data) {
			if inst := strings.HasPrefix(id, "inst-"); inst != (msg.Subject == SubjectMeterInstances) {
				t.Errorf("record %s in a message on %s", id, msg.Subject)
			}
		}
	}
	// 5000 call records of about 300 bytes fill several messages of
	// meterBatchBytes; a message per record would be 5007.
	if info.State.Msgs > 100 {
		t.Errorf("%d records went in %d messages, want a few", n, info.State.Msgs)
	}
	t.Logf("%d records in %d messages, %d bytes", n, info.State.Msgs, info.State.Bytes)
}
