package natsbus

import (
	"context"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/spool"
	"go.uber.org/zap"
)

// BenchmarkRecordCall is the metering work on the invoke path: encode one
// call record and append it to the spool (one write). The publisher runs
// in the background against a real embedded JetStream.
func BenchmarkRecordCall(b *testing.B) {
	srv, err := RunServer(ServerConfig{Listen: "127.0.0.1:0", StoreDir: b.TempDir(), Users: testUsers}, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	bus, err := ConnectWith(testConfig(srv, "bench"), zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	if err := EnsureMeterStream(b.Context(), bus, 0); err != nil {
		b.Fatal(err)
	}
	sp, err := spool.Open(b.TempDir(), 1<<30)
	if err != nil {
		b.Fatal(err)
	}
	m := NewMeter(bus, sp, nil, zap.NewNop())
	m.Start()
	now := time.Now()
	rec := gust.CallRecord{CallID: "0123456789abcdef0123456789abcdef", Namespace: "openfaas-fn", Function: "hello",
		Version: 1, Image: "hello:latest", Worker: "worker-1", Instance: "abcdef012345", Trigger: gust.TriggerHTTP,
		Start: now, End: now.Add(time.Millisecond), DurationNs: 1e6, BilledNs: 1e6, MemoryMiB: 128, Status: 200,
		Outcome: gust.OutcomeOK, BytesIn: 10, BytesOut: 20}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.RecordCall(&rec)
	}
	b.StopTimer()
	ctx, cancel := contextWithTimeout(30 * time.Second)
	defer cancel()
	_ = m.Close(ctx)
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
