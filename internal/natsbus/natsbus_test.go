package natsbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/nats-io/nats.go/jetstream"
)

// MustOpenTable opens a table of bucket on b.
func MustOpenTable[T any](tb testing.TB, b *natsbus.Bus, bucket string) *natsbus.Table[T] {
	tb.Helper()
	t, err := natsbus.OpenTable[T](context.Background(), b, natsbus.TableConfig{Bucket: bucket})
	if err != nil {
		tb.Fatalf("open table %s: %v", bucket, err)
	}
	return t
}

// MustPut writes v at key.
func MustPut[T any](tb testing.TB, t gust.Table[T], key string, v T) uint64 {
	tb.Helper()
	rev, err := t.Put(context.Background(), key, v)
	if err != nil {
		tb.Fatalf("put %s: %v", key, err)
	}
	return rev
}

type item struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

func TestTable_GetPut(t *testing.T) {
	ctx := context.Background()
	b := natsbustest.MustOpenBus(t)
	tbl := MustOpenTable[item](t, b, "test_getput")

	t.Run("ErrNotFound", func(t *testing.T) {
		_, _, err := tbl.Get(ctx, "missing")
		if !errors.Is(err, gust.ErrNotFound) {
			t.Fatalf("Get(missing) = %v, want an error wrapping gust.ErrNotFound", err)
		}
	})
	t.Run("OK", func(t *testing.T) {
		rev1 := MustPut(t, tbl, "ns.a", item{Name: "a", N: 1})
		got, rev, err := tbl.Get(ctx, "ns.a")
		if err != nil {
			t.Fatal(err)
		}
		if want := (item{Name: "a", N: 1}); got != want {
			t.Errorf("Get() = %+v, want %+v", got, want)
		}
		if rev != rev1 {
			t.Errorf("Get() revision = %d, want %d (Put's)", rev, rev1)
		}
		rev2 := MustPut(t, tbl, "ns.a", item{Name: "a", N: 2})
		if rev2 <= rev1 {
			t.Errorf("second Put revision = %d, want > %d", rev2, rev1)
		}
		got, rev, err = tbl.Get(ctx, "ns.a")
		if err != nil {
			t.Fatal(err)
		}
		if got.N != 2 || rev != rev2 {
			t.Errorf("Get() after second Put = N %d rev %d, want N 2 rev %d", got.N, rev, rev2)
		}
	})
	t.Run("ErrDecode", func(t *testing.T) {
		// Another table on the same bucket writes a value of another type.
		raw := MustOpenTable[string](t, b, "test_getput")
		MustPut[string](t, raw, "ns.str", "not an item")
		_, _, err := tbl.Get(ctx, "ns.str")
		if err == nil || errors.Is(err, gust.ErrNotFound) {
			t.Fatalf("Get(undecodable) = %v, want a decode error", err)
		}
	})
}

func TestTable_Create(t *testing.T) {
	ctx := context.Background()
	tbl := MustOpenTable[item](t, natsbustest.MustOpenBus(t), "test_create")

	if _, err := tbl.Create(ctx, "ns.a", item{N: 1}); err != nil {
		t.Fatalf("first Create: %v", err)
	}
	_, err := tbl.Create(ctx, "ns.a", item{N: 2})
	if !errors.Is(err, gust.ErrConflict) {
		t.Fatalf("second Create = %v, want an error wrapping gust.ErrConflict", err)
	}
	got, _, err := tbl.Get(ctx, "ns.a")
	if err != nil {
		t.Fatal(err)
	}
	if got.N != 1 {
		t.Errorf("after refused Create: N = %d, want 1", got.N)
	}

	// A deleted key can be created again.
	if err := tbl.Delete(ctx, "ns.a"); err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.Create(ctx, "ns.a", item{N: 3}); err != nil {
		t.Fatalf("Create after Delete: %v", err)
	}
	if got, _, err := tbl.Get(ctx, "ns.a"); err != nil || got.N != 3 {
		t.Errorf("Get after re-Create = %+v, %v; want N 3", got, err)
	}
}

func TestTable_Update(t *testing.T) {
	ctx := context.Background()
	tbl := MustOpenTable[item](t, natsbustest.MustOpenBus(t), "test_update")

	rev1 := MustPut(t, tbl, "ns.a", item{N: 1})
	rev2, err := tbl.Update(ctx, "ns.a", item{N: 2}, rev1)
	if err != nil {
		t.Fatalf("Update at current revision: %v", err)
	}
	if rev2 <= rev1 {
		t.Errorf("Update revision = %d, want > %d", rev2, rev1)
	}

	// rev1 is stale now.
	_, err = tbl.Update(ctx, "ns.a", item{N: 3}, rev1)
	if !errors.Is(err, gust.ErrConflict) {
		t.Fatalf("Update at stale revision = %v, want an error wrapping gust.ErrConflict", err)
	}
	got, rev, err := tbl.Get(ctx, "ns.a")
	if err != nil {
		t.Fatal(err)
	}
	if got.N != 2 || rev != rev2 {
		t.Errorf("after refused Update: N %d rev %d, want N 2 rev %d", got.N, rev, rev2)
	}

	// A revision of another key is stale too.
	other := MustPut(t, tbl, "ns.b", item{N: 9})
	if _, err := tbl.Update(ctx, "ns.a", item{N: 4}, other); !errors.Is(err, gust.ErrConflict) {
		t.Errorf("Update at another key's revision = %v, want gust.ErrConflict", err)
	}
}

func TestTable_Delete(t *testing.T) {
	ctx := context.Background()
	tbl := MustOpenTable[item](t, natsbustest.MustOpenBus(t), "test_delete")

	MustPut(t, tbl, "ns.a", item{N: 1})
	if err := tbl.Delete(ctx, "ns.a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, err := tbl.Get(ctx, "ns.a"); !errors.Is(err, gust.ErrNotFound) {
		t.Errorf("Get after Delete = %v, want gust.ErrNotFound", err)
	}
	if err := tbl.Delete(ctx, "ns.missing"); err != nil {
		t.Errorf("Delete(missing) = %v, want nil", err)
	}
	if err := tbl.Delete(ctx, "ns.a"); err != nil {
		t.Errorf("second Delete = %v, want nil", err)
	}
}

func TestTable_List(t *testing.T) {
	ctx := context.Background()
	tbl := MustOpenTable[item](t, natsbustest.MustOpenBus(t), "test_list")

	if got, err := tbl.List(ctx, ">"); err != nil || len(got) != 0 || got == nil {
		t.Fatalf("List on empty table = %v, %v; want an empty, non-nil map", got, err)
	}
	MustPut(t, tbl, "ns.a", item{N: 1})
	MustPut(t, tbl, "ns.b", item{N: 2})
	MustPut(t, tbl, "ns.b", item{N: 3})
	MustPut(t, tbl, "ns.c.w1", item{N: 4})
	MustPut(t, tbl, "other.a", item{N: 5})
	MustPut(t, tbl, "ns.gone", item{N: 6})
	if err := tbl.Delete(ctx, "ns.gone"); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		pattern string
		want    map[string]int
	}{
		{"ns.*", map[string]int{"ns.a": 1, "ns.b": 3}},
		{"ns.>", map[string]int{"ns.a": 1, "ns.b": 3, "ns.c.w1": 4}},
		{"*.a", map[string]int{"ns.a": 1, "other.a": 5}},
		{"ns.*.*", map[string]int{"ns.c.w1": 4}},
		{">", map[string]int{"ns.a": 1, "ns.b": 3, "ns.c.w1": 4, "other.a": 5}},
		{"ns.a", map[string]int{"ns.a": 1}},
		{"none.*", map[string]int{}},
	} {
		t.Run(tt.pattern, func(t *testing.T) {
			got, err := tbl.List(ctx, tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			gotN := map[string]int{}
			for k, v := range got {
				gotN[k] = v.N
			}
			if fmt.Sprint(gotN) != fmt.Sprint(tt.want) {
				t.Errorf("List(%q) = %v, want %v", tt.pattern, gotN, tt.want)
			}
		})
	}

	t.Run("ErrContext", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := tbl.List(cctx, ">"); err == nil {
			t.Errorf("List with ended ctx = nil error, want one")
		}
	})
}

// recorder collects the changes a watch delivers.
type recorder struct {
	mu      sync.Mutex
	changes []gust.Change[item]
}

func (r *recorder) add(c gust.Change[item]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
}

func (r *recorder) get() []gust.Change[item] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]gust.Change[item](nil), r.changes...)
}

// summary renders changes as "key=N" or "key deleted".
func summary(cs []gust.Change[item]) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		if c.Deleted {
			out = append(out, c.Key+" deleted")
		} else {
			out = append(out, fmt.Sprintf("%s=%d", c.Key, c.Value.N))
		}
	}
	return out
}

// consumers returns how many consumers the bucket's stream has; a watch
// holds one while it runs.
func consumers(tb testing.TB, b *natsbus.Bus, bucket string) int {
	tb.Helper()
	ctx := context.Background()
	st, err := b.JS.Stream(ctx, "KV_"+bucket)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Consumers
}

func TestTable_Watch(t *testing.T) {
	ctx := context.Background()
	b := natsbustest.MustOpenBus(t)
	const bucket = "test_watch"
	tbl := MustOpenTable[item](t, b, bucket)

	MustPut(t, tbl, "ns.a", item{N: 1})
	MustPut(t, tbl, "ns.b", item{N: 2})
	MustPut(t, tbl, "other.c", item{N: 3})

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rec := &recorder{}
	if err := tbl.Watch(wctx, "ns.*", rec.add); err != nil {
		t.Fatalf("Watch: %v", err)
	}

	// Watch returns once the current values have been delivered.
	if got, want := fmt.Sprint(summary(rec.get())), "[ns.a=1 ns.b=2]"; got != want {
		t.Fatalf("initial changes = %s, want %s", got, want)
	}

	MustPut(t, tbl, "ns.a", item{N: 10})
	MustPut(t, tbl, "other.d", item{N: 4}) // not matched
	if err := tbl.Delete(ctx, "ns.b"); err != nil {
		t.Fatal(err)
	}
	want := "[ns.a=1 ns.b=2 ns.a=10 ns.b deleted]"
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := fmt.Sprint(summary(rec.get())); got != want {
			return fmt.Errorf("changes = %s, want %s", got, want)
		}
		return nil
	})
	cs := rec.get()
	if !cs[3].Deleted || cs[3].Value != (item{}) {
		t.Errorf("delete change = %+v, want Deleted with a zero Value", cs[3])
	}
	if cs[2].Revision <= cs[1].Revision {
		t.Errorf("revisions %d then %d, want increasing", cs[1].Revision, cs[2].Revision)
	}

	// Ending ctx stops the watch: its consumer goes away and later
	// changes are not delivered.
	if n := consumers(t, b, bucket); n != 1 {
		t.Fatalf("consumers while watching = %d, want 1", n)
	}
	cancel()
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := consumers(t, b, bucket); n != 0 {
			return fmt.Errorf("consumers after ctx ended = %d, want 0", n)
		}
		return nil
	})
	MustPut(t, tbl, "ns.a", item{N: 11})
	if got := fmt.Sprint(summary(rec.get())); got != want {
		t.Errorf("changes after ctx ended = %s, want %s", got, want)
	}
}

func TestTable_Watch_Empty(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tbl := MustOpenTable[item](t, natsbustest.MustOpenBus(t), "test_watch_empty")
	rec := &recorder{}
	if err := tbl.Watch(ctx, ">", rec.add); err != nil {
		t.Fatalf("Watch on an empty table: %v", err)
	}
	MustPut(t, tbl, "ns.a", item{N: 1})
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got, want := fmt.Sprint(summary(rec.get())), "[ns.a=1]"; got != want {
			return fmt.Errorf("changes = %s, want %s", got, want)
		}
		return nil
	})
}

// TestTable_Watch_InitialSkipsDeleted checks that the initial delivery
// holds current values only, as gust.Table documents.
func TestTable_Watch_InitialSkipsDeleted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tbl := MustOpenTable[item](t, natsbustest.MustOpenBus(t), "test_watch_deleted")
	MustPut(t, tbl, "ns.a", item{N: 1})
	MustPut(t, tbl, "ns.gone", item{N: 2})
	if err := tbl.Delete(ctx, "ns.gone"); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	if err := tbl.Watch(ctx, ">", rec.add); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(summary(rec.get())), "[ns.a=1]"; got != want {
		t.Errorf("initial changes = %s, want %s", got, want)
	}
}

func TestBus_RequestHandle(t *testing.T) {
	ctx := context.Background()
	b := natsbustest.MustOpenBus(t)

	type req struct{ A, B int }
	type resp struct {
		Sum int
		gust.Reply
	}
	stop, err := b.Handle(ctx, "test.add", "adders", func(_ context.Context, data []byte) any {
		var r req
		if err := json.Unmarshal(data, &r); err != nil {
			return resp{Reply: gust.ReplyOf(gust.Errorf(gust.EINVALID, "decode: %v", err))}
		}
		if r.A < 0 {
			return resp{Reply: gust.ReplyOf(gust.Invalidf("A", "negative"))}
		}
		return resp{Sum: r.A + r.B}
	})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("OK", func(t *testing.T) {
		var got resp
		if err := b.Request(ctx, "test.add", req{A: 2, B: 3}, &got); err != nil {
			t.Fatal(err)
		}
		if got.Sum != 5 || got.Err() != nil {
			t.Errorf("reply = %+v, want Sum 5 and no error", got)
		}
	})
	t.Run("ErrorReply", func(t *testing.T) {
		var got resp
		if err := b.Request(ctx, "test.add", req{A: -1}, &got); err != nil {
			t.Fatal(err)
		}
		err := got.Err()
		if gust.ErrorCode(err) != gust.EINVALID || gust.ErrorField(err) != "A" {
			t.Errorf("reply error = %v, want EINVALID naming A", err)
		}
	})
	t.Run("ErrDecodeReply", func(t *testing.T) {
		var got string // the reply is an object
		err := b.Request(ctx, "test.add", req{A: 1}, &got)
		if err == nil {
			t.Fatalf("Request into a string = nil error, want a decode error")
		}
		if gust.ErrorCode(err) != gust.EINTERNAL {
			t.Errorf("code = %q, want %q", gust.ErrorCode(err), gust.EINTERNAL)
		}
	})
	t.Run("ErrEncodeRequest", func(t *testing.T) {
		var got resp
		if err := b.Request(ctx, "test.add", make(chan int), &got); err == nil {
			t.Errorf("Request with an unencodable request = nil error, want one")
		}
	})
	t.Run("ErrNoResponder", func(t *testing.T) {
		var got resp
		err := b.Request(ctx, "test.nobody", req{}, &got)
		var ge *gust.Error
		if !errors.As(err, &ge) {
			t.Fatalf("Request to nobody = %T %v, want *gust.Error", err, err)
		}
		if ge.Code != gust.EUNAVAILABLE {
			t.Errorf("code = %q, want %q", ge.Code, gust.EUNAVAILABLE)
		}
	})
	t.Run("ErrAfterStop", func(t *testing.T) {
		if err := stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
			var got resp
			err := b.Request(ctx, "test.add", req{A: 1}, &got)
			if gust.ErrorCode(err) != gust.EUNAVAILABLE {
				return fmt.Errorf("Request after stop = %v, want EUNAVAILABLE", err)
			}
			return nil
		})
	})
}

// TestBus_HandleQueue checks that in a queue group each request is
// answered once, by one of the handlers.
func TestBus_HandleQueue(t *testing.T) {
	ctx := context.Background()
	srv := natsbustest.MustRunServer(t, t.TempDir())
	b1, b2 := natsbustest.MustConnect(t, srv), natsbustest.MustConnect(t, srv)
	for i, b := range []*natsbus.Bus{b1, b2} {
		id := i + 1
		if _, err := b.Handle(ctx, "test.who", "q", func(context.Context, []byte) any { return id }); err != nil {
			t.Fatal(err)
		}
		// Handle returns before the server has the subscription; a caller
		// on another connection could otherwise find no responder.
		if err := b.NC.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	caller := natsbustest.MustConnect(t, srv)
	for i := 0; i < 10; i++ {
		var id int
		if err := caller.Request(ctx, "test.who", struct{}{}, &id); err != nil {
			t.Fatal(err)
		}
		if id != 1 && id != 2 {
			t.Fatalf("answer = %d, want 1 or 2", id)
		}
	}
}

// TestBus_CloseWaitsForHandlers checks Close's promise that
// subscriptions finish the messages they hold before the connection
// closes: a request being handled when Close starts still gets its answer.
func TestBus_CloseWaitsForHandlers(t *testing.T) {
	ctx := context.Background()
	srv := natsbustest.MustRunServer(t, t.TempDir())
	server := natsbustest.MustConnect(t, srv)
	caller := natsbustest.MustConnect(t, srv)

	entered, release := make(chan struct{}), make(chan struct{})
	if _, err := server.Handle(ctx, "test.slow", "", func(context.Context, []byte) any {
		close(entered)
		<-release
		return "done"
	}); err != nil {
		t.Fatal(err)
	}
	result := make(chan error, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var got string
		err := caller.Request(rctx, "test.slow", struct{}{}, &got)
		if err == nil && got != "done" {
			err = fmt.Errorf("answer = %q, want %q", got, "done")
		}
		result <- err
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- server.Close() }()
	select {
	case <-closed:
		t.Errorf("Close returned while a handler was still running")
	case <-time.After(time.Second):
	}
	close(release)
	if err := <-result; err != nil {
		t.Errorf("request in flight during Close: %v", err)
	}
}

func TestOpenState(t *testing.T) {
	ctx := context.Background()
	b := natsbustest.MustOpenBus(t)
	st, err := natsbus.OpenState(ctx, b)
	if err != nil {
		t.Fatalf("OpenState: %v", err)
	}
	if st.Functions == nil || st.Placements == nil || st.Workers == nil || st.Status == nil {
		t.Fatalf("OpenState left a table nil: %+v", st)
	}

	for _, tt := range []struct {
		bucket  string
		storage jetstream.StorageType
		ttl     time.Duration
	}{
		{natsbus.BucketFunctions, jetstream.FileStorage, 0},
		{natsbus.BucketPlacements, jetstream.FileStorage, 0},
		{natsbus.BucketWorkers, jetstream.MemoryStorage, time.Minute},
		{natsbus.BucketStatus, jetstream.MemoryStorage, time.Hour},
	} {
		t.Run(tt.bucket, func(t *testing.T) {
			s, err := b.JS.Stream(ctx, "KV_"+tt.bucket)
			if err != nil {
				t.Fatalf("bucket %s: %v", tt.bucket, err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.Config.Storage != tt.storage {
				t.Errorf("storage = %v, want %v", info.Config.Storage, tt.storage)
			}
			if info.Config.MaxAge != tt.ttl {
				t.Errorf("TTL = %v, want %v", info.Config.MaxAge, tt.ttl)
			}
		})
	}

	// Each table is usable and they do not share keys.
	fn := gust.Function{Spec: gust.FunctionSpec{Service: "f", Namespace: "ns", Image: "img"}, Version: 1}
	MustPut(t, st.Functions, "ns.f", fn)
	MustPut(t, st.Placements, "ns.f", gust.Placement{Workers: []string{"w1"}, Version: 1})
	MustPut(t, st.Workers, "w1", gust.WorkerInfo{ID: "w1"})
	MustPut(t, st.Status, "ns.f.w1", gust.PoolStatus{Worker: "w1", Replicas: 2})
	if _, _, err := st.Workers.Get(ctx, "ns.f"); !errors.Is(err, gust.ErrNotFound) {
		t.Errorf("Workers.Get(ns.f) = %v, want ErrNotFound", err)
	}
	if got, _, err := st.Status.Get(ctx, "ns.f.w1"); err != nil || got.Replicas != 2 {
		t.Errorf("Status.Get = %+v, %v; want Replicas 2", got, err)
	}

	// Opening again keeps the data.
	st2, err := natsbus.OpenState(ctx, b)
	if err != nil {
		t.Fatalf("second OpenState: %v", err)
	}
	if got, _, err := st2.Functions.Get(ctx, "ns.f"); err != nil || got.Spec.Image != "img" {
		t.Errorf("Functions.Get after second OpenState = %+v, %v", got, err)
	}
}

// TestOpenState_Restart checks that functions survive a restart of the
// server on the same store directory, and that heartbeats (memory) do not.
func TestOpenState_Restart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()

	srv1 := natsbustest.MustRunServer(t, dir)
	b1 := natsbustest.MustConnect(t, srv1)
	st1, err := natsbus.OpenState(ctx, b1)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	want := gust.Function{
		Spec:      gust.FunctionSpec{Service: "hello", Namespace: gust.DefaultNamespace, Image: "img:1", Labels: map[string]string{"a": "b"}},
		CreatedAt: created, UpdatedAt: created, Version: 4,
	}
	MustPut(t, st1.Functions, "openfaas-fn.hello", want)
	MustPut(t, st1.Placements, "openfaas-fn.hello", gust.Placement{Workers: []string{"w1"}, Version: 4})
	MustPut(t, st1.Workers, "w1", gust.WorkerInfo{ID: "w1", Seen: time.Now()})
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	srv1.Shutdown()

	srv2 := natsbustest.MustRunServer(t, dir)
	b2 := natsbustest.MustConnect(t, srv2)
	st2, err := natsbus.OpenState(ctx, b2)
	if err != nil {
		t.Fatalf("OpenState after restart: %v", err)
	}
	got, _, err := st2.Functions.Get(ctx, "openfaas-fn.hello")
	if err != nil {
		t.Fatalf("Functions.Get after restart: %v", err)
	}
	if got.Version != want.Version || got.Spec.Image != want.Spec.Image || !got.CreatedAt.Equal(want.CreatedAt) || got.Spec.Labels["a"] != "b" {
		t.Errorf("function after restart = %+v, want %+v", got, want)
	}
	if pl, _, err := st2.Placements.Get(ctx, "openfaas-fn.hello"); err != nil || fmt.Sprint(pl.Workers) != "[w1]" {
		t.Errorf("placement after restart = %+v, %v; want workers [w1]", pl, err)
	}
	if _, _, err := st2.Workers.Get(ctx, "w1"); !errors.Is(err, gust.ErrNotFound) {
		t.Errorf("Workers.Get after restart = %v, want ErrNotFound (memory storage)", err)
	}
}

// TestBus_CloseRefusesNewRequests checks that once Close has begun to wait
// for the requests in flight, no further request reaches a handler: it is
// answered EUNAVAILABLE instead. Handing it to the handler would add to
// the WaitGroup that Close is waiting on (Add concurrent with Wait), and a
// request arriving after that wait would run after Close returned.
func TestBus_CloseRefusesNewRequests(t *testing.T) {
	ctx := context.Background()
	srv := natsbustest.MustRunServer(t, t.TempDir())
	server := natsbustest.MustConnect(t, srv)
	caller := natsbustest.MustConnect(t, srv)

	type resp struct {
		N int
		gust.Reply
	}
	var mu sync.Mutex
	calls, closed, late := 0, false, 0
	entered, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the bus's cleanup closes it again
	if _, err := server.Handle(ctx, "test.h", "", func(context.Context, []byte) any {
		mu.Lock()
		calls++
		n := calls
		if closed {
			late++
		}
		mu.Unlock()
		if n == 1 {
			close(entered)
			<-release
		}
		return resp{N: n}
	}); err != nil {
		t.Fatal(err)
	}

	first := make(chan error, 1)
	go func() {
		var got resp
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := caller.Request(rctx, "test.h", struct{}{}, &got)
		if err == nil && (got.N != 1 || got.Err() != nil) {
			err = fmt.Errorf("first reply = %+v, want N 1 and no error", got)
		}
		first <- err
	}()
	<-entered

	closeDone := make(chan error, 1)
	go func() {
		err := server.Close()
		mu.Lock()
		closed = true
		mu.Unlock()
		closeDone <- err
	}()

	// Close is waiting for the first request. Requests sent from now on
	// may reach the handler only until Close has begun; after that they
	// must be refused.
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		var got resp
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := caller.Request(rctx, "test.h", struct{}{}, &got); err != nil {
			return fmt.Errorf("request while closing: %v", err)
		}
		if gust.ErrorCode(got.Err()) != gust.EUNAVAILABLE {
			return fmt.Errorf("request while Close waits: reply %+v handed to the handler, want EUNAVAILABLE", got)
		}
		return nil
	})

	unblock()
	if err := <-first; err != nil {
		t.Errorf("request in flight during Close: %v", err)
	}
	if err := <-closeDone; err != nil {
		t.Errorf("Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if late != 0 {
		t.Errorf("%d handlers started after Close returned", late)
	}
}

// TestTable_Watch_EndsWhenBusCloses checks that the bus owns a watch: one
// whose ctx never ends stops when the bus closes (the leak check of
// TestMain sees its goroutine gone), and no watch starts on a closed bus.
func TestTable_Watch_EndsWhenBusCloses(t *testing.T) {
	srv := natsbustest.MustRunServer(t, t.TempDir())
	b := natsbustest.MustConnect(t, srv)
	tbl := MustOpenTable[item](t, b, "test_watch_close")
	MustPut(t, tbl, "ns.a", item{N: 1})
	rec := &recorder{}
	if err := tbl.Watch(context.Background(), ">", rec.add); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, want := fmt.Sprint(summary(rec.get())), "[ns.a=1]"; got != want {
		t.Errorf("changes = %s, want %s", got, want)
	}
	if err := tbl.Watch(context.Background(), ">", rec.add); err == nil {
		t.Errorf("Watch on a closed bus = nil error, want one")
	}
}

// TestTable_Watch_CanceledContext checks that a watch whose ctx has ended
// fails and never calls fn.
func TestTable_Watch_CanceledContext(t *testing.T) {
	tbl := MustOpenTable[item](t, natsbustest.MustOpenBus(t), "test_watch_canceled")
	MustPut(t, tbl, "ns.a", item{N: 1})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := &recorder{}
	if err := tbl.Watch(ctx, ">", rec.add); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch(canceled ctx) = %v, want an error wrapping context.Canceled", err)
	}
	if got := rec.get(); len(got) != 0 {
		t.Errorf("changes after a failed Watch = %v, want none", summary(got))
	}
}
