package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/gustfaas/gust/scheduler"
	"go.uber.org/zap/zaptest"
)

// candidates returns candidates with the given ids, no capacity bound
// and no placements.
func candidates(ids ...string) []scheduler.Candidate {
	out := make([]scheduler.Candidate, 0, len(ids))
	for _, id := range ids {
		out = append(out, scheduler.Candidate{WorkerInfo: gust.WorkerInfo{ID: id, Seen: time.Now()}})
	}
	return out
}

// loaded sets the placements each candidate holds.
func loaded(cs []scheduler.Candidate, load map[string]int) []scheduler.Candidate {
	for i := range cs {
		cs[i].Placements = load[cs[i].ID]
	}
	return cs
}

func TestCapacityPlacer_Place(t *testing.T) {
	for _, tt := range []struct {
		name    string
		n       int
		current []string
		alive   []scheduler.Candidate
		load    map[string]int
		want    []string
	}{
		{name: "New", n: 1, alive: candidates("w1", "w2"), want: []string{"w1"}},
		{name: "NewTwo", n: 2, alive: candidates("w1", "w2", "w3"), want: []string{"w1", "w2"}},
		{name: "KeepsCurrent", n: 1, current: []string{"w2"}, alive: candidates("w1", "w2", "w3"), want: []string{"w2"}},
		{name: "KeepsCurrentEvenIfLoaded", n: 1, current: []string{"w2"}, alive: candidates("w1", "w2"), load: map[string]int{"w2": 9}, want: []string{"w2"}},
		{name: "KeepsCurrentOrder", n: 2, current: []string{"w3", "w1"}, alive: candidates("w1", "w2", "w3"), want: []string{"w3", "w1"}},
		{name: "DropsDead", n: 1, current: []string{"w9"}, alive: candidates("w1", "w2"), want: []string{"w1"}},
		{name: "DropsDeadKeepsLive", n: 2, current: []string{"w9", "w2"}, alive: candidates("w1", "w2", "w3"), load: map[string]int{"w1": 5}, want: []string{"w2", "w3"}},
		{name: "LeastLoaded", n: 2, alive: candidates("w1", "w2", "w3"), load: map[string]int{"w1": 3, "w2": 1, "w3": 0}, want: []string{"w3", "w2"}},
		{name: "TiesById", n: 2, alive: candidates("w1", "w2", "w3"), load: map[string]int{"w1": 1, "w2": 1, "w3": 1}, want: []string{"w1", "w2"}},
		{name: "FillsWithLeastLoaded", n: 3, current: []string{"w1"}, alive: candidates("w1", "w2", "w3", "w4"), load: map[string]int{"w1": 0, "w2": 4, "w3": 2, "w4": 1}, want: []string{"w1", "w4", "w3"}},
		{name: "ShrinksToN", n: 1, current: []string{"w1", "w2"}, alive: candidates("w1", "w2"), want: []string{"w1"}},
		{name: "FewerAliveThanN", n: 5, alive: candidates("w1", "w2"), want: []string{"w1", "w2"}},
		{name: "Zero", n: 0, current: []string{"w1"}, alive: candidates("w1"), want: []string{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fn := &gust.Function{Spec: gust.FunctionSpec{Service: "f", Namespace: "ns"}}
			got, err := scheduler.CapacityPlacer{}.Place(fn, tt.n, tt.current, loaded(tt.alive, tt.load))
			if err != nil {
				t.Fatalf("Place: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Place(n=%d, current=%v) = %v, want %v", tt.n, tt.current, got, tt.want)
			}
		})
	}
}

// TestCapacityPlacer_Place_DuplicateCurrent checks that a placement never
// names one worker twice, even when the current one does.
func TestCapacityPlacer_Place_DuplicateCurrent(t *testing.T) {
	got, err := scheduler.CapacityPlacer{}.Place(&gust.Function{}, 2, []string{"w1", "w1"}, candidates("w1", "w2"))
	if want := []string{"w1", "w2"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Place = %v, %v; want %v", got, err, want)
	}
}

const mib = 1 << 20

// sized returns a candidate offering memBytes, of which used is taken,
// holding images.
func sized(id string, memBytes, used int64, images ...string) scheduler.Candidate {
	return scheduler.Candidate{WorkerInfo: gust.WorkerInfo{ID: id, MemoryBytes: memBytes, Images: images}, Used: used}
}

// fnOf returns a function of image img with memory mem and the given
// scale.
func fnOf(img, mem string, minScale, maxScale int) *gust.Function {
	return &gust.Function{Spec: gust.FunctionSpec{
		Service: "f", Namespace: gust.DefaultNamespace, Image: img,
		Limits: &gust.FunctionResources{Memory: mem},
		Labels: map[string]string{gust.LabelScaleMin: fmt.Sprint(minScale), gust.LabelScaleMax: fmt.Sprint(maxScale)},
	}}
}

// TestCapacityPlacer_Capacity checks that no worker gets more of a
// function's warm minimum than its free memory holds, nor a function
// whose one instance does not fit.
func TestCapacityPlacer_Capacity(t *testing.T) {
	for _, tt := range []struct {
		name    string
		fn      *gust.Function
		n       int
		current []string
		alive   []scheduler.Candidate
		want    []string
	}{
		// w1 has room for one instance of 256Mi, w2 for four.
		{name: "SkipsFull", fn: fnOf("img", "256Mi", 1, 4), n: 1,
			alive: []scheduler.Candidate{sized("w1", 1024*mib, 900*mib), sized("w2", 1024*mib, 0)}, want: []string{"w2"}},
		{name: "OneInstanceEvenAtMinZero", fn: fnOf("img", "256Mi", 0, 4), n: 1,
			alive: []scheduler.Candidate{sized("w1", 1024*mib, 800*mib), sized("w2", 512*mib, 0)}, want: []string{"w2"}},
		{name: "SharesFit", fn: fnOf("img", "256Mi", 4, 4), n: 4,
			alive: []scheduler.Candidate{sized("w1", 512*mib, 0), sized("w2", 512*mib, 0)}, want: []string{"w1", "w2"}},
		// Three warm instances on two workers: 2 and 1. Only w2 has
		// room for two, so it takes the first place.
		{name: "LargerShareToRoomierWorker", fn: fnOf("img", "256Mi", 3, 3), n: 3,
			alive: []scheduler.Candidate{sized("w1", 256*mib, 0), sized("w2", 512*mib, 0)}, want: []string{"w2", "w1"}},
		// Four on two workers do not fit (w1 holds one); four on w2
		// alone do.
		{name: "FewerWorkersThatFit", fn: fnOf("img", "128Mi", 4, 4), n: 4,
			alive: []scheduler.Candidate{sized("w1", 128*mib, 0), sized("w2", 1024*mib, 0)}, want: []string{"w2"}},
		{name: "DropsCurrentThatNoLongerFits", fn: fnOf("img", "256Mi", 1, 4), n: 1, current: []string{"w1"},
			alive: []scheduler.Candidate{sized("w1", 512*mib, 400*mib), sized("w2", 512*mib, 0)}, want: []string{"w2"}},
		{name: "UnboundedWorker", fn: fnOf("img", "4Gi", 1, 1), n: 1,
			alive: []scheduler.Candidate{sized("w1", 1024*mib, 0), sized("w2", 0, 0)}, want: []string{"w2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := scheduler.CapacityPlacer{}.Place(tt.fn, tt.n, tt.current, tt.alive)
			if err != nil {
				t.Fatalf("Place: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Place = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCapacityPlacer_ImageAffinity checks that a worker holding the
// function's image comes first, ahead of a less loaded one, but not ahead
// of room.
func TestCapacityPlacer_ImageAffinity(t *testing.T) {
	fn := fnOf("img:1", "128Mi", 1, 4)
	alive := []scheduler.Candidate{sized("w1", 0, 0), sized("w2", 0, 0, "other:1", "img:1"), sized("w3", 0, 0)}
	alive[1].Placements = 5
	got, err := scheduler.CapacityPlacer{}.Place(fn, 2, nil, alive)
	if want := []string{"w2", "w1"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Place = %v, %v; want %v (w2 holds the image)", got, err, want)
	}
	alive[1] = sized("w2", 256*mib, 200*mib, "img:1")
	got, err = scheduler.CapacityPlacer{}.Place(fn, 1, nil, alive)
	if want := []string{"w1"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Place = %v, %v; want %v (w2 holds the image but has no room)", got, err, want)
	}
}

// TestCapacityPlacer_NoRoom checks the error when no worker has room: it
// names the memory, what the function needs and what is free.
func TestCapacityPlacer_NoRoom(t *testing.T) {
	fn := fnOf("img", "512Mi", 2, 4)
	_, err := scheduler.CapacityPlacer{}.Place(fn, 2, nil, []scheduler.Candidate{sized("w1", 1024*mib, 768*mib), sized("w2", 512*mib, 128*mib)})
	var ge *gust.Error
	if !errors.As(err, &ge) {
		t.Fatalf("Place = %v, want a *gust.Error", err)
	}
	if ge.Code != gust.EUNAVAILABLE || ge.Field != "memory" {
		t.Errorf("error = %q on %q, want %q on memory", ge.Code, ge.Field, gust.EUNAVAILABLE)
	}
	for _, want := range []string{"512 MiB", "1024 MiB", "384 MiB free", "w2"} {
		if !strings.Contains(ge.Message, want) {
			t.Errorf("message %q does not say %q", ge.Message, want)
		}
	}
}

// MustPut writes v at key.
func MustPut[T any](tb testing.TB, t gust.Table[T], key string, v T) {
	tb.Helper()
	if _, err := t.Put(context.Background(), key, v); err != nil {
		tb.Fatalf("put %s: %v", key, err)
	}
}

// MustStartScheduler starts a scheduler whose reconcile loop does not run
// during the test, and closes it when the test ends.
func MustStartScheduler(tb testing.TB, st *gust.State, bus *natsbus.Bus) *scheduler.Scheduler {
	tb.Helper()
	return mustStartScheduler(tb, st, bus, scheduler.DefaultConfig().WorkerTimeout)
}

// staleAfter is the worker timeout of the tests that need a worker to go
// silent: a worker written this long before the scheduler starts is stale.
const staleAfter = 300 * time.Millisecond

// mustStartScheduler starts a scheduler whose workers go stale after
// workerTimeout without a heartbeat.
func mustStartScheduler(tb testing.TB, st *gust.State, bus *natsbus.Bus, workerTimeout time.Duration) *scheduler.Scheduler {
	tb.Helper()
	cfg := scheduler.DefaultConfig()
	cfg.ReconcileInterval = time.Hour
	cfg.PrepareTimeout = 5 * time.Second
	cfg.WorkerTimeout = workerTimeout
	s := scheduler.New(cfg, st, bus, zaptest.NewLogger(tb))
	if err := s.Start(context.Background()); err != nil {
		tb.Fatalf("start scheduler: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// fakeWorker answers prepare requests for one worker id with reply and
// records the functions it was asked to prepare.
type fakeWorker struct {
	mu       sync.Mutex
	reply    gust.Reply
	prepared []gust.Function
}

func (w *fakeWorker) calls() []gust.Function {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.prepared)
}

// MustFakeWorker registers a worker in state (alive now) and serves its
// prepare subject.
func MustFakeWorker(tb testing.TB, st *gust.State, bus *natsbus.Bus, id string, reply gust.Reply) *fakeWorker {
	tb.Helper()
	return MustFakeWorkerInfo(tb, st, bus, gust.WorkerInfo{ID: id}, reply)
}

// MustFakeWorkerInfo is MustFakeWorker for a worker that advertises info
// (capacity, pools, images, draining).
func MustFakeWorkerInfo(tb testing.TB, st *gust.State, bus *natsbus.Bus, info gust.WorkerInfo, reply gust.Reply) *fakeWorker {
	tb.Helper()
	id := info.ID
	w := &fakeWorker{reply: reply}
	stop, err := bus.Handle(context.Background(), gust.SubjectPreparePrefix+id, "", func(_ context.Context, data []byte) any {
		var req gust.PrepareRequest
		if err := json.Unmarshal(data, &req); err != nil {
			return gust.ReplyOf(gust.Errorf(gust.EINVALID, "decode: %v", err))
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.prepared = append(w.prepared, req.Function)
		return w.reply
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = stop() })
	info.Addr, info.Seen = "http://127.0.0.1:1", time.Now()
	MustPut(tb, st.Workers, id, info)
	return w
}

// MustDeploy puts a function in the registry and returns its key.
func MustDeploy(tb testing.TB, st *gust.State, name string, version uint64, labels map[string]string) string {
	tb.Helper()
	fn := gust.Function{
		Spec:    gust.FunctionSpec{Service: name, Namespace: gust.DefaultNamespace, Image: "img:" + name, Labels: labels},
		Version: version,
	}
	MustPut(tb, st.Functions, fn.Key(), fn)
	return fn.Key()
}

func TestScheduler_Place(t *testing.T) {
	ctx := context.Background()

	t.Run("OK", func(t *testing.T) {
		st, bus := natsbustest.MustOpenState(t)
		w1 := MustFakeWorker(t, st, bus, "w1", gust.Reply{})
		key := MustDeploy(t, st, "hello", 3, nil)
		s := MustStartScheduler(t, st, bus)

		pl, err := s.Place(ctx, key)
		if err != nil {
			t.Fatalf("Place: %v", err)
		}
		if got, want := fmt.Sprint(pl.Workers, pl.Version), "[w1] 3"; got != want {
			t.Errorf("placement = %s, want %s", got, want)
		}
		stored, _, err := st.Placements.Get(ctx, key)
		if err != nil {
			t.Fatalf("stored placement: %v", err)
		}
		if got, want := fmt.Sprint(stored.Workers, stored.Version), "[w1] 3"; got != want {
			t.Errorf("stored placement = %s, want %s", got, want)
		}
		calls := w1.calls()
		if len(calls) != 1 {
			t.Fatalf("prepare calls = %d, want 1", len(calls))
		}
		if got, want := calls[0].Key(), key; got != want {
			t.Errorf("prepared %q, want %q", got, want)
		}
		if calls[0].Version != 3 || calls[0].Spec.Image != "img:hello" {
			t.Errorf("prepared function = %+v, want version 3 image img:hello", calls[0])
		}
	})

	t.Run("KeepsPlacement", func(t *testing.T) {
		st, bus := natsbustest.MustOpenState(t)
		MustFakeWorker(t, st, bus, "w1", gust.Reply{})
		MustFakeWorker(t, st, bus, "w2", gust.Reply{})
		key := MustDeploy(t, st, "hello", 1, nil)
		MustPut(t, st.Placements, key, gust.Placement{Workers: []string{"w2"}, Version: 1})
		s := MustStartScheduler(t, st, bus)

		pl, err := s.Place(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fmt.Sprint(pl.Workers), "[w2]"; got != want {
			t.Errorf("workers = %s, want %s (the current placement)", got, want)
		}
	})

	t.Run("SpreadsToMin", func(t *testing.T) {
		st, bus := natsbustest.MustOpenState(t)
		w1 := MustFakeWorker(t, st, bus, "w1", gust.Reply{})
		w2 := MustFakeWorker(t, st, bus, "w2", gust.Reply{})
		key := MustDeploy(t, st, "hello", 1, map[string]string{gust.LabelScaleMin: "2"})
		s := MustStartScheduler(t, st, bus)

		pl, err := s.Place(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fmt.Sprint(pl.Workers), "[w1 w2]"; got != want {
			t.Errorf("workers = %s, want %s", got, want)
		}
		if len(w1.calls()) != 1 || len(w2.calls()) != 1 {
			t.Errorf("prepare calls = %d, %d; want 1, 1", len(w1.calls()), len(w2.calls()))
		}
	})

	t.Run("PicksLiveWorker", func(t *testing.T) {
		st, bus := natsbustest.MustOpenState(t)
		// w0's last heartbeat says it was sent just now, but it reached
		// NATS long ago: the time it was received is what counts.
		MustPut(t, st.Workers, "w0", gust.WorkerInfo{ID: "w0", Seen: time.Now().Add(time.Hour)})
		time.Sleep(2 * staleAfter)
		MustFakeWorker(t, st, bus, "w1", gust.Reply{})
		key := MustDeploy(t, st, "hello", 1, nil)
		s := mustStartScheduler(t, st, bus, staleAfter)

		pl, err := s.Place(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fmt.Sprint(pl.Workers), "[w1]"; got != want {
			t.Errorf("workers = %s, want %s (w0 is stale)", got, want)
		}
	})

	t.Run("ErrNoWorker", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			worker *gust.WorkerInfo
		}{
			{"None", nil},
			{"Stale", &gust.WorkerInfo{ID: "w1", Seen: time.Now().Add(time.Hour)}},
			{"Draining", &gust.WorkerInfo{ID: "w1", Seen: time.Now(), Draining: true}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				st, bus := natsbustest.MustOpenState(t)
				if tt.worker != nil {
					MustPut(t, st.Workers, tt.worker.ID, *tt.worker)
				}
				// Every worker written above was last heard before now.
				time.Sleep(2 * staleAfter)
				key := MustDeploy(t, st, "hello", 1, nil)
				s := mustStartScheduler(t, st, bus, staleAfter)

				_, err := s.Place(ctx, key)
				if got, want := gust.ErrorCode(err), gust.EUNAVAILABLE; got != want {
					t.Fatalf("Place code = %q (err %v), want %q", got, err, want)
				}
				if _, _, err := st.Placements.Get(ctx, key); !errors.Is(err, gust.ErrNotFound) {
					t.Errorf("placement stored = %v, want none", err)
				}
			})
		}
	})

	t.Run("ErrUnknownFunction", func(t *testing.T) {
		st, bus := natsbustest.MustOpenState(t)
		MustFakeWorker(t, st, bus, "w1", gust.Reply{})
		s := MustStartScheduler(t, st, bus)

		_, err := s.Place(ctx, gust.FunctionKey(gust.DefaultNamespace, "nope"))
		if got, want := gust.ErrorCode(err), gust.ENOTFOUND; got != want {
			t.Fatalf("Place code = %q (err %v), want %q", got, err, want)
		}
	})

	t.Run("ErrPrepare", func(t *testing.T) {
		st, bus := natsbustest.MustOpenState(t)
		w1 := MustFakeWorker(t, st, bus, "w1", gust.ReplyOf(gust.Invalidf("image", "pull img:hello: denied")))
		key := MustDeploy(t, st, "hello", 1, nil)
		s := MustStartScheduler(t, st, bus)

		_, err := s.Place(ctx, key)
		var ge *gust.Error
		if !errors.As(err, &ge) {
			t.Fatalf("Place = %T %v, want *gust.Error", err, err)
		}
		if ge.Code != gust.EINVALID || ge.Field != "image" || ge.Message != "pull img:hello: denied" {
			t.Errorf("Place error = %+v, want the worker's {invalid image \"pull img:hello: denied\"}", *ge)
		}
		if len(w1.calls()) != 1 {
			t.Errorf("prepare calls = %d, want 1", len(w1.calls()))
		}
	})

	t.Run("ErrWorkerSilent", func(t *testing.T) {
		st, bus := natsbustest.MustOpenState(t)
		// Alive by heartbeat, but nothing serves its prepare subject.
		MustPut(t, st.Workers, "w1", gust.WorkerInfo{ID: "w1", Seen: time.Now()})
		key := MustDeploy(t, st, "hello", 1, nil)
		s := MustStartScheduler(t, st, bus)

		_, err := s.Place(ctx, key)
		if got, want := gust.ErrorCode(err), gust.EUNAVAILABLE; got != want {
			t.Fatalf("Place code = %q (err %v), want %q", got, err, want)
		}
	})

	t.Run("WorkerJoinsLater", func(t *testing.T) {
		st, bus := natsbustest.MustOpenState(t)
		key := MustDeploy(t, st, "hello", 1, nil)
		s := MustStartScheduler(t, st, bus)
		if _, err := s.Place(ctx, key); gust.ErrorCode(err) != gust.EUNAVAILABLE {
			t.Fatalf("Place before any worker = %v, want EUNAVAILABLE", err)
		}
		MustFakeWorker(t, st, bus, "w1", gust.Reply{})
		check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
			_, err := s.Place(ctx, key)
			return err
		})
	})
}

// TestScheduler_PlaceRequest places through the bus, as the gateway does.
func TestScheduler_PlaceRequest(t *testing.T) {
	ctx := context.Background()
	st, bus := natsbustest.MustOpenState(t)
	MustFakeWorker(t, st, bus, "w1", gust.Reply{})
	MustDeploy(t, st, "hello", 2, nil)
	MustStartScheduler(t, st, bus)

	var rep gust.PlaceReply
	if err := bus.Request(ctx, gust.SubjectPlace, gust.PlaceRequest{Namespace: gust.DefaultNamespace, Name: "hello"}, &rep); err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatalf("reply error: %v", err)
	}
	if got, want := fmt.Sprint(rep.Placement.Workers, rep.Placement.Version), "[w1] 2"; got != want {
		t.Errorf("placement = %s, want %s", got, want)
	}

	rep = gust.PlaceReply{}
	if err := bus.Request(ctx, gust.SubjectPlace, gust.PlaceRequest{Namespace: gust.DefaultNamespace, Name: "nope"}, &rep); err != nil {
		t.Fatal(err)
	}
	if got, want := gust.ErrorCode(rep.Err()), gust.ENOTFOUND; got != want {
		t.Errorf("reply code for unknown function = %q, want %q", got, want)
	}
}
