package natsbus

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/spool"
	"github.com/nats-io/nats.go"
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
	msgs := func() uint64 {
		s, err := bus.JS.Stream(ctx, StreamMeter)
		if err != nil {
			return 0
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	wait := func(want uint64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for msgs() != want {
			if time.Now().After(deadline) {
				t.Fatalf("stream holds %d records, want %d", msgs(), want)
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
		swallowed <- msg.Header.Get(nats.MsgIdHdr)
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
	var held uint64
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		s, err := bus.JS.Stream(ctx, StreamMeter)
		if err != nil {
			continue
		}
		if info, err := s.Info(ctx); err == nil {
			if held = info.State.Msgs; held == n {
				break
			}
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
