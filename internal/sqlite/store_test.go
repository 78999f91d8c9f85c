package sqlite

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/shopspring/decimal"
	"go.uber.org/zap/zaptest"
)

// MustOpen opens a store on a new file in tb's temporary directory and
// closes it when the test ends.
func MustOpen(tb testing.TB) (*Store, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "billing.db")
	s, err := Open(path, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s, path
}

// MustAddCalls adds recs or fails the test.
func MustAddCalls(tb testing.TB, s *Store, recs ...gust.CallRecord) {
	tb.Helper()
	if err := s.AddCalls(context.Background(), recs); err != nil {
		tb.Fatalf("AddCalls: %v", err)
	}
}

// rec builds a call record that ran for dur, billed per millisecond (or
// not at all when rejected).
func rec(id, ns, fn string, start time.Time, dur time.Duration, memMiB int64, outcome string, cold bool) gust.CallRecord {
	billed := gust.BilledDuration(dur, time.Millisecond)
	if outcome == gust.OutcomeRejected {
		billed = 0
	}
	return gust.CallRecord{
		CallID: id, Namespace: ns, Function: fn, Version: 1, Image: "img:" + fn, Worker: "w1",
		Instance: "i-" + fn, Trigger: gust.TriggerHTTP, Start: start.UTC(), End: start.Add(dur).UTC(),
		DurationNs: int64(dur), BilledNs: int64(billed), MemoryMiB: memMiB, ColdStart: cold,
		Status: 200, Outcome: outcome, BytesIn: 10, BytesOut: 20,
	}
}

func mustTime(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		tb.Fatal(err)
	}
	return t.UTC()
}

func countCalls(tb testing.TB, s *Store) int64 {
	tb.Helper()
	rows, _, err := s.Usage(context.Background(), gust.CallFilter{}, gust.GroupByNamespace)
	if err != nil {
		tb.Fatalf("Usage: %v", err)
	}
	var n int64
	for _, r := range rows {
		n += r.Requests
	}
	return n
}

func TestOpen(t *testing.T) {
	t.Run("WALAndSchemaVersion", func(t *testing.T) {
		s, _ := MustOpen(t)
		var mode string
		if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" {
			t.Errorf("journal_mode = %q, want wal", mode)
		}
		var version int
		if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
			t.Fatal(err)
		}
		if version != len(migrations) {
			t.Errorf("user_version = %d, want %d", version, len(migrations))
		}
	})
	t.Run("NewerSchema", func(t *testing.T) {
		s, path := MustOpen(t)
		if _, err := s.db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, len(migrations)+1)); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, zaptest.NewLogger(t)); err == nil {
			t.Fatal("Open of a newer schema: got nil error")
		}
	})
	t.Run("BadPath", func(t *testing.T) {
		if _, err := Open("", nil); err == nil {
			t.Error("empty path: got nil error")
		}
		if _, err := Open(filepath.Join(t.TempDir(), "a?b.db"), nil); err == nil {
			t.Error("path with '?': got nil error")
		}
	})
}

func TestStore_Reopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "billing.db")
	s, err := Open(path, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	start := mustTime(t, "2024-05-01T10:00:00Z")
	MustAddCalls(t, s, rec("c1", "a", "f", start, 5*time.Millisecond, 128, gust.OutcomeOK, true))
	inst := gust.InstanceRecord{Instance: "i1", Namespace: "a", Function: "f", Worker: "w1", MemoryMiB: 128,
		Ready: start, Stopped: start.Add(time.Minute)}
	if err := s.AddInstances(context.Background(), []gust.InstanceRecord{inst}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer func() { _ = s.Close() }()
	if _, err := s.Call(context.Background(), "c1"); err != nil {
		t.Errorf("Call after reopen: %v", err)
	}
	_, iu, err := s.Usage(context.Background(), gust.CallFilter{}, gust.GroupByNamespace)
	if err != nil {
		t.Fatal(err)
	}
	want := []gust.InstanceUsageRow{{Namespace: "a", Function: "f", MemoryMiB: 128, Instances: 1, HeldNs: int64(time.Minute)}}
	if !reflect.DeepEqual(iu, want) {
		t.Errorf("instance usage after reopen = %+v, want %+v", iu, want)
	}
}

func TestStore_AddCalls(t *testing.T) {
	ctx := context.Background()
	start := mustTime(t, "2024-05-01T10:00:00Z")

	t.Run("Idempotent", func(t *testing.T) {
		s, _ := MustOpen(t)
		batch := []gust.CallRecord{
			rec("c1", "a", "f", start, time.Millisecond, 128, gust.OutcomeOK, true),
			rec("c2", "a", "f", start.Add(time.Second), time.Millisecond, 128, gust.OutcomeOK, false),
			rec("c3", "b", "g", start.Add(2*time.Second), time.Millisecond, 256, gust.OutcomeError, false),
		}
		MustAddCalls(t, s, batch...)
		first, _, err := s.Usage(ctx, gust.CallFilter{}, gust.GroupByFunction)
		if err != nil {
			t.Fatal(err)
		}
		MustAddCalls(t, s, batch...)
		second, _, err := s.Usage(ctx, gust.CallFilter{}, gust.GroupByFunction)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(first, second) {
			t.Errorf("usage after the same batch twice = %+v, want %+v", second, first)
		}
		if got := countCalls(t, s); got != 3 {
			t.Errorf("calls = %d, want 3", got)
		}
	})

	t.Run("DuplicateInBatchCommitsTheRest", func(t *testing.T) {
		s, _ := MustOpen(t)
		orig := rec("c1", "a", "f", start, time.Millisecond, 128, gust.OutcomeOK, true)
		MustAddCalls(t, s, orig)
		dup := orig
		dup.MemoryMiB = 4096 // a changed copy must not overwrite the stored record
		MustAddCalls(t, s,
			rec("c2", "a", "f", start.Add(time.Second), time.Millisecond, 128, gust.OutcomeOK, false),
			dup,
			rec("c3", "a", "f", start.Add(2*time.Second), time.Millisecond, 128, gust.OutcomeOK, false),
		)
		if got := countCalls(t, s); got != 3 {
			t.Errorf("calls = %d, want 3", got)
		}
		got, err := s.Call(ctx, "c1")
		if err != nil {
			t.Fatal(err)
		}
		if got.MemoryMiB != 128 {
			t.Errorf("stored c1 memory = %d, want 128 (first write wins)", got.MemoryMiB)
		}
	})

	t.Run("Empty", func(t *testing.T) {
		s, _ := MustOpen(t)
		if err := s.AddCalls(ctx, nil); err != nil {
			t.Errorf("AddCalls(nil) = %v", err)
		}
		if err := s.AddInstances(ctx, nil); err != nil {
			t.Errorf("AddInstances(nil) = %v", err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		s, _ := MustOpen(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Go(func() {
				// Workers overlap: worker w adds calls w*10 .. w*10+19.
				var batch []gust.CallRecord
				for i := w * 10; i < w*10+20; i++ {
					batch = append(batch, rec(fmt.Sprintf("c%03d", i), "a", "f",
						start.Add(time.Duration(i)*time.Second), time.Millisecond, 128, gust.OutcomeOK, false))
				}
				errs <- s.AddCalls(ctx, batch)
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("AddCalls: %v", err)
			}
		}
		if got := countCalls(t, s); got != 90 {
			t.Errorf("calls = %d, want 90", got)
		}
	})
}

func TestStore_AddInstances_Idempotent(t *testing.T) {
	ctx := context.Background()
	s, _ := MustOpen(t)
	ready := mustTime(t, "2024-05-01T10:00:00Z")
	i1 := gust.InstanceRecord{Instance: "i1", Namespace: "a", Function: "f", Worker: "w1", MemoryMiB: 128,
		Ready: ready, Stopped: ready.Add(10 * time.Second)}
	i2 := i1
	i2.Instance, i2.Stopped = "i2", ready.Add(5*time.Second)
	if err := s.AddInstances(ctx, []gust.InstanceRecord{i1}); err != nil {
		t.Fatal(err)
	}
	changed := i1
	changed.Stopped = ready.Add(time.Hour)
	if err := s.AddInstances(ctx, []gust.InstanceRecord{changed, i2}); err != nil {
		t.Fatal(err)
	}
	_, got, err := s.Usage(ctx, gust.CallFilter{}, gust.GroupByNamespace)
	if err != nil {
		t.Fatal(err)
	}
	want := []gust.InstanceUsageRow{{Namespace: "a", Function: "f", MemoryMiB: 128, Instances: 2, HeldNs: int64(15 * time.Second)}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("instance usage = %+v, want %+v", got, want)
	}
}

func TestStore_Call(t *testing.T) {
	ctx := context.Background()
	s, _ := MustOpen(t)
	want := gust.CallRecord{
		CallID: "c-1", Namespace: "team-a", Function: "resize", Version: 1<<63 + 5, Image: "resize:v3",
		Worker: "w7", Instance: "inst-9", Trigger: gust.TriggerAsync,
		Start:      mustTime(t, "2024-05-01T10:00:00.123456789Z"),
		End:        mustTime(t, "2024-05-01T10:00:01.623456789Z"),
		DurationNs: 1_500_000_000, BilledNs: 1_500_000_000, MemoryMiB: 256, ColdStart: true,
		InitNs: 350_000_000, Status: 503, Outcome: gust.OutcomeError, BytesIn: 1234, BytesOut: 5678,
	}
	MustAddCalls(t, s, want)

	t.Run("OK", func(t *testing.T) {
		got, err := s.Call(ctx, "c-1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Call = %+v\nwant %+v", got, want)
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		_, err := s.Call(ctx, "nope")
		if !errors.Is(err, gust.ErrNotFound) {
			t.Errorf("err = %v, want ErrNotFound", err)
		}
	})
}

func TestStore_Calls(t *testing.T) {
	ctx := context.Background()
	s, _ := MustOpen(t)
	base := mustTime(t, "2024-05-01T10:00:00Z")
	var all []gust.CallRecord
	for i := range 25 {
		ns, fn, outcome := "a", "f", gust.OutcomeOK
		if i%5 == 0 {
			ns = "b"
		}
		if i%2 == 0 {
			fn = "g"
		}
		if i%3 == 0 {
			outcome = gust.OutcomeTimeout
		}
		// Pairs share a start time, so the order must fall back to call id.
		start := base.Add(time.Duration(i/2) * time.Second)
		all = append(all, rec(fmt.Sprintf("c%02d", i), ns, fn, start, time.Millisecond, 128, outcome, false))
	}
	MustAddCalls(t, s, all...)
	newestFirst := func(recs []gust.CallRecord) []string {
		sorted := append([]gust.CallRecord(nil), recs...)
		sort.Slice(sorted, func(i, j int) bool {
			if !sorted[i].Start.Equal(sorted[j].Start) {
				return sorted[i].Start.After(sorted[j].Start)
			}
			return sorted[i].CallID > sorted[j].CallID
		})
		ids := make([]string, len(sorted))
		for i, r := range sorted {
			ids[i] = r.CallID
		}
		return ids
	}
	// pages lists every page of f and returns the ids and page sizes.
	pages := func(t *testing.T, f gust.CallFilter) ([]string, []int) {
		t.Helper()
		var ids []string
		var sizes []int
		for range 100 {
			recs, next, err := s.Calls(ctx, f)
			if err != nil {
				t.Fatalf("Calls: %v", err)
			}
			sizes = append(sizes, len(recs))
			for _, r := range recs {
				ids = append(ids, r.CallID)
			}
			if next == "" {
				return ids, sizes
			}
			f.Cursor = next
		}
		t.Fatal("pagination did not end")
		return nil, nil
	}

	t.Run("Pages", func(t *testing.T) {
		ids, sizes := pages(t, gust.CallFilter{Limit: 10})
		if want := []int{10, 10, 5}; !reflect.DeepEqual(sizes, want) {
			t.Errorf("page sizes = %v, want %v", sizes, want)
		}
		if want := newestFirst(all); !reflect.DeepEqual(ids, want) {
			t.Errorf("ids = %v\nwant %v", ids, want)
		}
	})
	t.Run("ExactMultiple", func(t *testing.T) {
		ids, sizes := pages(t, gust.CallFilter{Limit: 5})
		if want := []int{5, 5, 5, 5, 5}; !reflect.DeepEqual(sizes, want) {
			t.Errorf("page sizes = %v, want %v (no empty last page)", sizes, want)
		}
		if want := newestFirst(all); !reflect.DeepEqual(ids, want) {
			t.Errorf("ids = %v\nwant %v", ids, want)
		}
	})
	t.Run("DefaultLimit", func(t *testing.T) {
		recs, next, err := s.Calls(ctx, gust.CallFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 25 || next != "" {
			t.Errorf("got %d records, cursor %q; want 25 and none", len(recs), next)
		}
	})
	t.Run("Filters", func(t *testing.T) {
		from, to := base.Add(3*time.Second), base.Add(9*time.Second)
		tests := []struct {
			name string
			f    gust.CallFilter
			keep func(gust.CallRecord) bool
		}{
			{"Namespace", gust.CallFilter{Namespace: "b"}, func(r gust.CallRecord) bool { return r.Namespace == "b" }},
			{"Function", gust.CallFilter{Namespace: "a", Function: "g"}, func(r gust.CallRecord) bool {
				return r.Namespace == "a" && r.Function == "g"
			}},
			{"Outcome", gust.CallFilter{Outcome: gust.OutcomeTimeout}, func(r gust.CallRecord) bool {
				return r.Outcome == gust.OutcomeTimeout
			}},
			{"FromTo", gust.CallFilter{From: from, To: to}, func(r gust.CallRecord) bool {
				return !r.Start.Before(from) && r.Start.Before(to)
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var want []gust.CallRecord
				for _, r := range all {
					if tt.keep(r) {
						want = append(want, r)
					}
				}
				f := tt.f
				f.Limit = 3
				ids, _ := pages(t, f)
				if w := newestFirst(want); !reflect.DeepEqual(ids, w) || len(w) == 0 {
					t.Errorf("ids = %v, want %v", ids, w)
				}
			})
		}
	})
	t.Run("ErrBadCursor", func(t *testing.T) {
		for _, c := range []string{
			"!!!",
			base64.RawURLEncoding.EncodeToString([]byte("no-colon")),
			base64.RawURLEncoding.EncodeToString([]byte("x:c01")),
			base64.RawURLEncoding.EncodeToString([]byte("123:")),
		} {
			_, _, err := s.Calls(ctx, gust.CallFilter{Cursor: c})
			if gust.ErrorCode(err) != gust.EINVALID || gust.ErrorField(err) != "cursor" {
				t.Errorf("cursor %q: err = %v, want EINVALID on field cursor", c, err)
			}
		}
	})
}

// usageFixture is the data set of TestStore_Usage. Its expected values
// below are computed by hand.
func usageFixture(t *testing.T) *Store {
	t.Helper()
	s, _ := MustOpen(t)
	MustAddCalls(t, s,
		// c1: last nanosecond of January.
		rec("c1", "a", "f", mustTime(t, "2024-01-31T23:59:59.999999999Z"), time.Millisecond, 128, gust.OutcomeOK, true),
		rec("c2", "a", "f", mustTime(t, "2024-02-01T00:00:00Z"), 1500*time.Millisecond, 128, gust.OutcomeError, false),
		rec("c3", "a", "g", mustTime(t, "2024-02-01T00:59:59Z"), 100*time.Millisecond, 1024, gust.OutcomeOK, false),
		// c4: 0.5 ms billed as 1 ms.
		rec("c4", "b", "f", mustTime(t, "2024-02-01T01:00:00Z"), 500*time.Microsecond, 256, gust.OutcomeTimeout, true),
		// c5: leap day.
		rec("c5", "b", "h", mustTime(t, "2024-02-29T23:30:00Z"), 2*time.Millisecond, 512, gust.OutcomeOK, false),
		// c6: rejected, waited 5 ms, billed nothing.
		rec("c6", "a", "f", mustTime(t, "2024-03-01T00:00:00Z"), 5*time.Millisecond, 128, gust.OutcomeRejected, false),
	)
	ready := mustTime(t, "2024-02-01T00:00:00Z")
	insts := []gust.InstanceRecord{
		{Instance: "i1", Namespace: "a", Function: "f", MemoryMiB: 128, Ready: ready, Stopped: ready.Add(10 * time.Minute)},
		{Instance: "i2", Namespace: "a", Function: "f", MemoryMiB: 128, Ready: ready.Add(30 * time.Minute), Stopped: ready.Add(30*time.Minute + 90*time.Second)},
		{Instance: "i3", Namespace: "a", Function: "f", MemoryMiB: 256, Ready: ready.Add(59 * time.Minute), Stopped: ready.Add(60 * time.Minute)},
		// i4: ready before the range used below.
		{Instance: "i4", Namespace: "b", Function: "h", MemoryMiB: 512, Ready: ready.Add(-time.Hour), Stopped: ready.Add(time.Hour)},
		// i5: ready exactly at the (exclusive) end of the range used below; stop before ready holds nothing.
		{Instance: "i5", Namespace: "a", Function: "g", MemoryMiB: 1024, Ready: ready.Add(time.Hour), Stopped: ready},
	}
	if err := s.AddInstances(context.Background(), insts); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStore_Usage(t *testing.T) {
	ctx := context.Background()
	s := usageFixture(t)
	const ms = int64(time.Millisecond)
	// MiB × billed µs of each call.
	const (
		m1 = 128 * 1_000
		m2 = 128 * 1_500_000
		m3 = 1024 * 100_000
		m4 = 256 * 1_000
		m5 = 512 * 2_000
	)
	row := func(group, ns string, req, errs, cold, durNs, billedNs, mib int64) gust.UsageRow {
		return gust.UsageRow{Group: group, Namespace: ns, Requests: req, Errors: errs, ColdStarts: cold,
			DurationNs: durNs, BilledNs: billedNs, MiBMicros: mib}
	}
	tests := []struct {
		groupBy string
		f       gust.CallFilter
		want    []gust.UsageRow
	}{
		{gust.GroupByNamespace, gust.CallFilter{}, []gust.UsageRow{
			row("a", "a", 4, 2, 1, 1606*ms, 1601*ms, m1+m2+m3),
			row("b", "b", 2, 1, 1, 2500*int64(time.Microsecond), 3*ms, m4+m5),
		}},
		{gust.GroupByFunction, gust.CallFilter{}, []gust.UsageRow{
			row("a/f", "a", 3, 2, 1, 1506*ms, 1501*ms, m1+m2),
			row("a/g", "a", 1, 0, 0, 100*ms, 100*ms, m3),
			row("b/f", "b", 1, 1, 1, 500*int64(time.Microsecond), ms, m4),
			row("b/h", "b", 1, 0, 0, 2*ms, 2*ms, m5),
		}},
		{gust.GroupByHour, gust.CallFilter{}, []gust.UsageRow{
			row("2024-01-31T23:00Z", "a", 1, 0, 1, ms, ms, m1),
			row("2024-02-01T00:00Z", "a", 2, 1, 0, 1600*ms, 1600*ms, m2+m3),
			row("2024-02-01T01:00Z", "b", 1, 1, 1, 500*int64(time.Microsecond), ms, m4),
			row("2024-02-29T23:00Z", "b", 1, 0, 0, 2*ms, 2*ms, m5),
			row("2024-03-01T00:00Z", "a", 1, 1, 0, 5*ms, 0, 0),
		}},
		{gust.GroupByDay, gust.CallFilter{}, []gust.UsageRow{
			row("2024-01-31", "a", 1, 0, 1, ms, ms, m1),
			row("2024-02-01", "a", 2, 1, 0, 1600*ms, 1600*ms, m2+m3),
			row("2024-02-01", "b", 1, 1, 1, 500*int64(time.Microsecond), ms, m4),
			row("2024-02-29", "b", 1, 0, 0, 2*ms, 2*ms, m5),
			row("2024-03-01", "a", 1, 1, 0, 5*ms, 0, 0),
		}},
		{gust.GroupByMonth, gust.CallFilter{}, []gust.UsageRow{
			row("2024-01", "a", 1, 0, 1, ms, ms, m1),
			row("2024-02", "a", 2, 1, 0, 1600*ms, 1600*ms, m2+m3),
			row("2024-02", "b", 2, 1, 1, 2500*int64(time.Microsecond), 3*ms, m4+m5),
			row("2024-03", "a", 1, 1, 0, 5*ms, 0, 0),
		}},
		// From is inclusive (c2 in, c1 out), To exclusive (c4 out).
		{gust.GroupByNamespace, gust.CallFilter{
			From: mustTime(t, "2024-02-01T00:00:00Z"), To: mustTime(t, "2024-02-01T01:00:00Z"),
		}, []gust.UsageRow{
			row("a", "a", 2, 1, 0, 1600*ms, 1600*ms, m2+m3),
		}},
		{gust.GroupByFunction, gust.CallFilter{Namespace: "a", Function: "f"}, []gust.UsageRow{
			row("a/f", "a", 3, 2, 1, 1506*ms, 1501*ms, m1+m2),
		}},
		{gust.GroupByMonth, gust.CallFilter{Outcome: gust.OutcomeOK}, []gust.UsageRow{
			row("2024-01", "a", 1, 0, 1, ms, ms, m1),
			row("2024-02", "a", 1, 0, 0, 100*ms, 100*ms, m3),
			row("2024-02", "b", 1, 0, 0, 2*ms, 2*ms, m5),
		}},
		{gust.GroupByDay, gust.CallFilter{From: mustTime(t, "2025-01-01T00:00:00Z")}, []gust.UsageRow{}},
	}
	for _, tt := range tests {
		name := tt.groupBy
		if tt.f != (gust.CallFilter{}) {
			name += "/filtered"
		}
		t.Run(name, func(t *testing.T) {
			got, _, err := s.Usage(ctx, tt.f, tt.groupBy)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}

	t.Run("Instances", func(t *testing.T) {
		f := gust.CallFilter{From: mustTime(t, "2024-02-01T00:00:00Z"), To: mustTime(t, "2024-02-01T01:00:00Z")}
		_, got, err := s.Usage(ctx, f, gust.GroupByDay)
		if err != nil {
			t.Fatal(err)
		}
		want := []gust.InstanceUsageRow{
			{Namespace: "a", Function: "f", MemoryMiB: 128, Instances: 2, HeldNs: int64(11*time.Minute + 30*time.Second)},
			{Namespace: "a", Function: "f", MemoryMiB: 256, Instances: 1, HeldNs: int64(time.Minute)},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ranged: got %+v\nwant %+v", got, want)
		}

		_, got, err = s.Usage(ctx, gust.CallFilter{}, gust.GroupByDay)
		if err != nil {
			t.Fatal(err)
		}
		want = []gust.InstanceUsageRow{
			{Namespace: "a", Function: "f", MemoryMiB: 128, Instances: 2, HeldNs: int64(11*time.Minute + 30*time.Second)},
			{Namespace: "a", Function: "f", MemoryMiB: 256, Instances: 1, HeldNs: int64(time.Minute)},
			{Namespace: "a", Function: "g", MemoryMiB: 1024, Instances: 1, HeldNs: 0},
			{Namespace: "b", Function: "h", MemoryMiB: 512, Instances: 1, HeldNs: int64(2 * time.Hour)},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("all: got %+v\nwant %+v", got, want)
		}

		_, got, err = s.Usage(ctx, gust.CallFilter{Namespace: "b", Function: "h", Outcome: gust.OutcomeError}, gust.GroupByDay)
		if err != nil {
			t.Fatal(err)
		}
		want = []gust.InstanceUsageRow{{Namespace: "b", Function: "h", MemoryMiB: 512, Instances: 1, HeldNs: int64(2 * time.Hour)}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("by function (outcome ignored): got %+v\nwant %+v", got, want)
		}
	})

	t.Run("ErrGroupBy", func(t *testing.T) {
		_, _, err := s.Usage(ctx, gust.CallFilter{}, "week")
		if gust.ErrorCode(err) != gust.EINVALID || gust.ErrorField(err) != "group_by" {
			t.Errorf("err = %v, want EINVALID on field group_by", err)
		}
	})
}

// TestStore_Usage_Buckets checks the SQL time buckets against Go's UTC
// formatting around boundaries.
func TestStore_Usage_Buckets(t *testing.T) {
	ctx := context.Background()
	s, _ := MustOpen(t)
	times := []string{
		"1999-12-31T23:59:59.999999999Z", "2000-01-01T00:00:00Z",
		"2023-12-31T23:00:00Z", "2024-02-29T12:34:56.5Z", "2024-06-30T23:59:59.000000001Z",
		"2024-07-01T00:00:00.000000001Z", "2038-01-19T03:14:08Z",
	}
	// A non-UTC start must still bucket by UTC.
	tokyo := time.FixedZone("JST", 9*3600)
	var recs []gust.CallRecord
	for i, ts := range times {
		r := rec(fmt.Sprintf("c%d", i), "a", "f", mustTime(t, ts), time.Millisecond, 128, gust.OutcomeOK, false)
		r.Start = r.Start.In(tokyo)
		recs = append(recs, r)
	}
	MustAddCalls(t, s, recs...)
	for groupBy, layout := range map[string]string{
		gust.GroupByHour: "2006-01-02T15:00Z", gust.GroupByDay: "2006-01-02", gust.GroupByMonth: "2006-01",
	} {
		got, _, err := s.Usage(ctx, gust.CallFilter{}, groupBy)
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int64{}
		for _, ts := range times {
			count[mustTime(t, ts).Format(layout)]++
		}
		var want []gust.UsageRow
		for g, n := range count {
			want = append(want, gust.UsageRow{Group: g, Namespace: "a", Requests: n})
		}
		sort.Slice(want, func(i, j int) bool { return want[i].Group < want[j].Group })
		var gotKeys []gust.UsageRow
		for _, r := range got {
			gotKeys = append(gotKeys, gust.UsageRow{Group: r.Group, Namespace: r.Namespace, Requests: r.Requests})
		}
		if !reflect.DeepEqual(gotKeys, want) {
			t.Errorf("%s: got %+v\nwant %+v", groupBy, gotKeys, want)
		}
	}
}

// TestReport_FromStore prices what the store sums with internal/billing:
// the report's request count is the number of stored calls.
func TestReport_FromStore(t *testing.T) {
	s := usageFixture(t)
	rows, inst, err := s.Usage(context.Background(), gust.CallFilter{}, gust.GroupByMonth)
	if err != nil {
		t.Fatal(err)
	}
	r := billing.DefaultPricing().Report(rows, inst, gust.GroupByMonth, nil, nil)
	if r.Total.Requests != 6 || r.Total.Errors != 3 || r.Total.ColdStarts != 2 {
		t.Errorf("total = %+v, want 6 requests, 3 errors, 2 cold starts", r.Total)
	}
	// Billed: 1 + 1500 + 100 + 1 + 2 + 0 ms.
	if want := decimal.RequireFromString("1.604"); !r.Total.BilledSeconds.Equal(want) {
		t.Errorf("billedSeconds = %s, want %s", r.Total.BilledSeconds, want)
	}
	// 128×1 + 128×1500 + 1024×100 + 256×1 + 512×2 = 295808 MiB-ms;
	// 295.808 MiB-s / 1024 = 0.288875 GB-s.
	if want := decimal.RequireFromString("0.288875"); !r.Total.GBSeconds.Equal(want) {
		t.Errorf("gbSeconds = %s, want %s", r.Total.GBSeconds, want)
	}
	if len(r.Groups) != 3 {
		t.Errorf("groups = %+v, want 3 months", r.Groups)
	}
}
