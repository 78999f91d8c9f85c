package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/gustfaas/gust/scheduler"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zaptest"
)

// MustDeploySized puts a function of memory mem with the given scale
// labels in the registry and returns its key.
func MustDeploySized(tb testing.TB, st *gust.State, name, mem string, labels map[string]string) string {
	tb.Helper()
	fn := gust.Function{
		Spec: gust.FunctionSpec{Service: name, Namespace: gust.DefaultNamespace, Image: "img:" + name, Labels: labels,
			Limits: &gust.FunctionResources{Memory: mem}},
		Version: 1,
	}
	MustPut(tb, st.Functions, fn.Key(), fn)
	return fn.Key()
}

// scale returns the scale labels of min and max.
func scale(minScale, maxScale int) map[string]string {
	return map[string]string{gust.LabelScaleMin: fmt.Sprint(minScale), gust.LabelScaleMax: fmt.Sprint(maxScale)}
}

// mustPlace places key and returns its workers.
func mustPlace(tb testing.TB, s *scheduler.Scheduler, key string) []string {
	tb.Helper()
	pl, err := s.Place(context.Background(), key)
	if err != nil {
		tb.Fatalf("Place %s: %v", key, err)
	}
	return pl.Workers
}

// TestScheduler_PlaceCapacity: placements fill two workers of 512Mi with
// the warm minimums of functions of 256Mi, spread over both, and the next
// one is refused with an error naming the memory, counted in the
// placement failures metric; nothing is placed for it.
func TestScheduler_PlaceCapacity(t *testing.T) {
	ctx := context.Background()
	st, bus := natsbustest.MustOpenState(t)
	MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w1", MemoryBytes: 512 << 20}, gust.Reply{})
	MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w2", MemoryBytes: 512 << 20}, gust.Reply{})
	f1 := MustDeploySized(t, st, "f1", "256Mi", scale(2, 4))
	f2 := MustDeploySized(t, st, "f2", "256Mi", scale(2, 4))
	f3 := MustDeploySized(t, st, "f3", "256Mi", scale(1, 4))
	m := metrics.New()
	s := MustStartScheduler(t, st, bus)
	s.WithMetrics(m)

	if got, want := fmt.Sprint(mustPlace(t, s, f1)), "[w1 w2]"; got != want {
		t.Errorf("f1 placed on %s, want %s (spread: one warm instance each)", got, want)
	}
	if got, want := fmt.Sprint(mustPlace(t, s, f2)), "[w1 w2]"; got != want {
		t.Errorf("f2 placed on %s, want %s (each has 256Mi left)", got, want)
	}
	_, err := s.Place(ctx, f3)
	if gust.ErrorCode(err) != gust.EUNAVAILABLE || gust.ErrorField(err) != "memory" || !strings.Contains(gust.ErrorMessage(err), "0 MiB free") {
		t.Errorf("Place f3 = %v, want EUNAVAILABLE on memory saying 0 MiB free", err)
	}
	if _, _, err := st.Placements.Get(ctx, f3); !errors.Is(err, gust.ErrNotFound) {
		t.Errorf("placement of f3 = %v, want none", err)
	}
	if got := value(t, m.PlacementFailures.WithLabelValues("memory")); got != 1 {
		t.Errorf("gust_scheduler_placement_failures_total{reason=memory} = %v, want 1", got)
	}

	// Placing f1 again keeps it where it is: its own reservation does
	// not count against it.
	if got, want := fmt.Sprint(mustPlace(t, s, f1)), "[w1 w2]"; got != want {
		t.Errorf("f1 placed again on %s, want %s", got, want)
	}
}

// TestScheduler_PlaceHeldMemory: the instances a worker holds take its
// memory, even above the warm minimums placed there (a burst).
func TestScheduler_PlaceHeldMemory(t *testing.T) {
	st, bus := natsbustest.MustOpenState(t)
	MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w1", MemoryBytes: 1 << 30,
		Pools: []gust.HeldPool{{Function: "openfaas-fn.busy", Instances: 7, MemoryBytes: 128 << 20}}}, gust.Reply{})
	MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w2", MemoryBytes: 1 << 30}, gust.Reply{})
	key := MustDeploySized(t, st, "f", "256Mi", scale(1, 4))
	s := MustStartScheduler(t, st, bus)
	if got, want := fmt.Sprint(mustPlace(t, s, key)), "[w2]"; got != want {
		t.Errorf("placed on %s, want %s (w1 holds 896Mi of its 1Gi)", got, want)
	}
}

// TestScheduler_PlaceImageAffinity: a worker that holds the image is
// preferred to one that would have to pull it.
func TestScheduler_PlaceImageAffinity(t *testing.T) {
	st, bus := natsbustest.MustOpenState(t)
	w1 := MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w1", MemoryBytes: 1 << 30}, gust.Reply{})
	w2 := MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w2", MemoryBytes: 1 << 30, Images: []string{"img:f"}}, gust.Reply{})
	key := MustDeploySized(t, st, "f", "128Mi", scale(1, 4))
	s := MustStartScheduler(t, st, bus)
	if got, want := fmt.Sprint(mustPlace(t, s, key)), "[w2]"; got != want {
		t.Errorf("placed on %s, want %s (it holds img:f)", got, want)
	}
	if len(w1.calls()) != 0 || len(w2.calls()) != 1 {
		t.Errorf("prepare calls w1=%d w2=%d, want 0 and 1", len(w1.calls()), len(w2.calls()))
	}
}

// TestScheduler_PlaceSpread: a function's warm instances go to distinct
// workers, the least loaded first; a draining worker gets none.
func TestScheduler_PlaceSpread(t *testing.T) {
	ctx := context.Background()
	st, bus := natsbustest.MustOpenState(t)
	for _, id := range []string{"w1", "w2", "w3"} {
		MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: id, MemoryBytes: 1 << 30}, gust.Reply{})
	}
	MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w0", MemoryBytes: 1 << 30, Draining: true}, gust.Reply{})
	MustPut(t, st.Placements, "openfaas-fn.other", gust.Placement{Workers: []string{"w1"}})
	key := MustDeploySized(t, st, "f", "128Mi", scale(2, 4))
	s := MustStartScheduler(t, st, bus)
	if got, want := fmt.Sprint(mustPlace(t, s, key)), "[w2 w3]"; got != want {
		t.Errorf("placed on %s, want %s (w1 holds a placement, w0 drains)", got, want)
	}
	// Three warm instances on three workers, one each, none on w0.
	fn, _, _ := st.Functions.Get(ctx, key)
	fn.Scaled = &gust.ScaleOrder{Replicas: 3, At: time.Now()}
	fn.Version++
	MustPut(t, st.Functions, key, fn)
	if got, want := fmt.Sprint(mustPlace(t, s, key)), "[w2 w3 w1]"; got != want {
		t.Errorf("placed on %s, want %s", got, want)
	}
}

// TestScheduler_GrowsUnderLoad: a function with a warm minimum of one
// and a max of four sits on one worker; when that worker's pool holds its
// whole share of the max with every slot busy, the reconcile loop places
// it on a second worker too (so that it can scale past one worker), and
// once the demand is gone, back on one.
func TestScheduler_GrowsUnderLoad(t *testing.T) {
	ctx := context.Background()
	st, bus := natsbustest.MustOpenState(t)
	MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w1", MemoryBytes: 1 << 30}, gust.Reply{})
	MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w2", MemoryBytes: 1 << 30}, gust.Reply{})
	labels := scale(1, 4)
	labels[gust.LabelConcurrency] = "2"
	key := MustDeploySized(t, st, "f", "128Mi", labels)
	s := MustStartScheduler(t, st, bus)
	if got, want := fmt.Sprint(mustPlace(t, s, key)), "[w1]"; got != want {
		t.Fatalf("placed on %s, want %s", got, want)
	}
	placedOn := func(want string) {
		t.Helper()
		check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
			if err := s.Reconcile(ctx); err != nil {
				return err
			}
			pl, _, err := st.Placements.Get(ctx, key)
			if got := fmt.Sprint(pl.Workers); err != nil || got != want {
				return fmt.Errorf("placement %s (%v), want %s", got, err, want)
			}
			return nil
		})
	}

	// Three of four instances, all busy: w1 may still grow.
	MustPut(t, st.Status, key+".w1", gust.PoolStatus{Worker: "w1", Replicas: 3, Available: 3, InFlight: 6})
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	placedOn("[w1]")
	// Four of four, all busy: onto w2.
	MustPut(t, st.Status, key+".w1", gust.PoolStatus{Worker: "w1", Replicas: 4, Available: 4, InFlight: 8})
	placedOn("[w1 w2]")
	// Busy, but not full (w2 has room to grow): stays.
	MustPut(t, st.Status, key+".w2", gust.PoolStatus{Worker: "w2", Replicas: 1, Available: 1, InFlight: 2})
	placedOn("[w1 w2]")
	// Idle, back to the warm minimum: back on w1 alone.
	MustPut(t, st.Status, key+".w1", gust.PoolStatus{Worker: "w1", Replicas: 1, Available: 1})
	MustPut(t, st.Status, key+".w2", gust.PoolStatus{Worker: "w2"})
	placedOn("[w1]")
}

// TestScheduler_GrowsByDecider: a pool that holds its whole share of the
// max and whose decider (internal/autoscale) wants more than that share
// grows the placement onto another worker, though its slots are not all
// busy (a target scales before gust.concurrency is reached).
func TestScheduler_GrowsByDecider(t *testing.T) {
	ctx := context.Background()
	st, bus := natsbustest.MustOpenState(t)
	MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w1", MemoryBytes: 1 << 30}, gust.Reply{})
	MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w2", MemoryBytes: 1 << 30}, gust.Reply{})
	labels := scale(1, 4)
	labels[gust.LabelScaleType] = gust.ScaleRPS
	key := MustDeploySized(t, st, "f", "128Mi", labels)
	s := MustStartScheduler(t, st, bus)
	if got, want := fmt.Sprint(mustPlace(t, s, key)), "[w1]"; got != want {
		t.Fatalf("placed on %s, want %s", got, want)
	}
	// Its whole share, wanting no more: stays.
	MustPut(t, st.Status, key+".w1", gust.PoolStatus{Worker: "w1", Replicas: 4, Available: 4, InFlight: 4, Desired: 4, Want: 4})
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if pl, _, _ := st.Placements.Get(ctx, key); fmt.Sprint(pl.Workers) != "[w1]" {
		t.Fatalf("placement %v, want [w1] (the pool wants no more than its share)", pl.Workers)
	}
	// Wanting 6 of a share of 4: onto w2.
	MustPut(t, st.Status, key+".w1", gust.PoolStatus{Worker: "w1", Replicas: 4, Available: 4, InFlight: 4, Desired: 4, Want: 6})
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if err := s.Reconcile(ctx); err != nil {
			return err
		}
		pl, _, err := st.Placements.Get(ctx, key)
		if got := fmt.Sprint(pl.Workers); err != nil || got != "[w1 w2]" {
			return fmt.Errorf("placement %s (%v), want [w1 w2]", got, err)
		}
		return nil
	})
}

// TestScheduler_ReplacesDeadWorker: when a worker of a placement stops
// beating, the reconcile loop gives its share of the warm minimum to
// another worker.
func TestScheduler_ReplacesDeadWorker(t *testing.T) {
	ctx := context.Background()
	st, bus := natsbustest.MustOpenState(t)
	// w0 beat once, long enough ago to be silent.
	MustPut(t, st.Workers, "w0", gust.WorkerInfo{ID: "w0", MemoryBytes: 1 << 30})
	time.Sleep(2 * staleAfter)
	MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w1", MemoryBytes: 1 << 30}, gust.Reply{})
	w2 := MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w2", MemoryBytes: 1 << 30}, gust.Reply{})
	key := MustDeploySized(t, st, "f", "128Mi", scale(2, 4))
	MustPut(t, st.Placements, key, gust.Placement{Workers: []string{"w0", "w1"}, Version: 1})
	s := mustStartScheduler(t, st, bus, staleAfter)
	// Keep w1 and w2 beating while the scheduler judges.
	beat := time.NewTicker(staleAfter / 4)
	defer beat.Stop()
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-beat.C:
			MustPut(t, st.Workers, "w1", gust.WorkerInfo{ID: "w1", MemoryBytes: 1 << 30})
			MustPut(t, st.Workers, "w2", gust.WorkerInfo{ID: "w2", MemoryBytes: 1 << 30})
		default:
		}
		if err := s.Reconcile(ctx); err != nil {
			return err
		}
		pl, _, err := st.Placements.Get(ctx, key)
		if got, want := fmt.Sprint(pl.Workers), "[w1 w2]"; err != nil || got != want {
			return fmt.Errorf("placement %s (%v), want %s", got, err, want)
		}
		return nil
	})
	if len(w2.calls()) == 0 {
		t.Error("w2 was not asked to prepare the function")
	}
}

// TestScheduler_NoRoomMetricReasons: no live worker at all counts as
// no_worker, not memory.
func TestScheduler_NoRoomMetricReasons(t *testing.T) {
	st, bus := natsbustest.MustOpenState(t)
	key := MustDeploy(t, st, "hello", 1, nil)
	m := metrics.New()
	cfg := scheduler.DefaultConfig()
	cfg.ReconcileInterval = time.Hour
	s := scheduler.New(cfg, st, bus, zaptest.NewLogger(t)).WithMetrics(m)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.Place(context.Background(), key); gust.ErrorCode(err) != gust.EUNAVAILABLE || gust.ErrorField(err) != "" {
		t.Errorf("Place = %v, want EUNAVAILABLE on no field", err)
	}
	if got := value(t, m.PlacementFailures.WithLabelValues("no_worker")); got != 1 {
		t.Errorf("failures{reason=no_worker} = %v, want 1", got)
	}
}

// value is the value of counter c.
func value(tb testing.TB, c prometheus.Counter) float64 {
	tb.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestScheduler_HearsPlainBeats: a worker whose entry in the workers'
// table is not rewritten (in a NATS cluster, while the table's stream
// elects a new leader) stays alive as long as its plain beats arrive
// (gust.Beats), and is gone once they stop too.
func TestScheduler_HearsPlainBeats(t *testing.T) {
	st, bus := natsbustest.MustOpenState(t)
	MustFakeWorkerInfo(t, st, bus, gust.WorkerInfo{ID: "w1", MemoryBytes: 1 << 30}, gust.Reply{})
	s := mustStartScheduler(t, st, bus, staleAfter)
	beating := make(chan struct{})
	go func() {
		tick := time.NewTicker(staleAfter / 4)
		defer tick.Stop()
		for {
			select {
			case <-beating:
				return
			case <-tick.C:
				_ = bus.Beat("w1")
			}
		}
	}()
	time.Sleep(3 * staleAfter)
	key := MustDeploySized(t, st, "f", "128Mi", scale(1, 1))
	if got := fmt.Sprint(mustPlace(t, s, key)); got != "[w1]" {
		t.Errorf("placed on %s while w1 beat, want [w1]", got)
	}
	close(beating)
	time.Sleep(3 * staleAfter)
	other := MustDeploySized(t, st, "g", "128Mi", scale(1, 1))
	if _, err := s.Place(context.Background(), other); gust.ErrorCode(err) != gust.EUNAVAILABLE {
		t.Errorf("Place with w1 silent = %v, want EUNAVAILABLE", err)
	}
}
