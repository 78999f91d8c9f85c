package natsbus

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/spool"
	"github.com/gustfaas/gust/internal/sqlite"
	"github.com/prometheus/client_golang/prometheus/testutil"
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

// BenchmarkMeterPipeline is the whole metering pipeline of one process, as
// in `gust up`: b.N call records made (RecordCall), published to an
// embedded JetStream, taken in by the billing ingest and committed to a
// SQLite store. It reports the process CPU per record, from the first
// record to the last one committed: what metering costs beside the calls.
func BenchmarkMeterPipeline(b *testing.B) {
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
	store, err := sqlite.Open(filepath.Join(b.TempDir(), "billing.db"), zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	mets := metrics.New()
	in := NewIngest(bus, store, "bench", mets, zap.NewNop())
	if err := in.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	m := NewMeter(bus, sp, nil, zap.NewNop())
	m.Start()
	now := time.Now()
	rec := gust.CallRecord{Namespace: "openfaas-fn", Function: "hello",
		Version: 1, Image: "hello:latest", Worker: "worker-1", Instance: "abcdef012345", Trigger: gust.TriggerHTTP,
		Start: now, End: now.Add(time.Millisecond), DurationNs: 1e6, BilledNs: 1e6, MemoryMiB: 128, Status: 200,
		Outcome: gust.OutcomeOK, BytesIn: 10, BytesOut: 20}
	cpu0 := processCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec.CallID = fmt.Sprintf("%032x", i)
		m.RecordCall(&rec)
	}
	for int(testutil.ToFloat64(mets.RecordsStored)) < b.N {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/record")
	ctx, cancel := contextWithTimeout(30 * time.Second)
	defer cancel()
	_ = m.Close(ctx)
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
