// Package storetest is the conformance suite of gust.BillingStore: the
// behaviour every billing store must have, run against each of them
// (internal/sqlite, internal/postgres) by a test of its own package, so
// that the stores answer alike and a new one is held to the same
// contract. Listings and reports are checked against oracles computed in
// Go from the records themselves, on random data (GUST_TEST_SEED repeats
// a run).
package storetest

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
)

// Run runs the suite. open returns a new, empty store that the test owns
// (and closes in its cleanup); it is called once per subtest.
func Run(t *testing.T, open func(t *testing.T) gust.BillingStore) {
	t.Run("AddCalls", func(t *testing.T) { testAddCalls(t, open) })
	t.Run("AddInstances", func(t *testing.T) { testAddInstances(t, open) })
	t.Run("Paused", func(t *testing.T) { testPaused(t, open) })
	t.Run("Call", func(t *testing.T) { testCall(t, open) })
	t.Run("Calls", func(t *testing.T) { testCalls(t, open) })
	t.Run("CallsPaging", func(t *testing.T) { testCallsPaging(t, open) })
	t.Run("Usage", func(t *testing.T) { testUsage(t, open) })
	t.Run("UsageOracle", func(t *testing.T) { testUsageOracle(t, open) })
	t.Run("Prune", func(t *testing.T) { testPrune(t, open) })
}

// Rec builds a call record that ran for dur, billed per millisecond (or
// not at all when rejected).
func Rec(id, ns, fn string, start time.Time, dur time.Duration, memMiB int64, outcome string, cold bool) gust.CallRecord {
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

// MustAddCalls adds recs to s or fails the test.
func MustAddCalls(tb testing.TB, s gust.BillingStore, recs ...gust.CallRecord) {
	tb.Helper()
	if err := s.AddCalls(context.Background(), recs); err != nil {
		tb.Fatalf("AddCalls: %v", err)
	}
}

// MustAddInstances adds recs to s or fails the test.
func MustAddInstances(tb testing.TB, s gust.BillingStore, recs ...gust.InstanceRecord) {
	tb.Helper()
	if err := s.AddInstances(context.Background(), recs); err != nil {
		tb.Fatalf("AddInstances: %v", err)
	}
}

// RNG returns a generator seeded from GUST_TEST_SEED, or from the clock
// when it is unset, and logs the seed so that a failure repeats.
func RNG(t testing.TB, stream uint64) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("GUST_TEST_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (GUST_TEST_SEED repeats it)", seed)
	return rand.New(rand.NewPCG(seed, stream))
}

func mustTime(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		tb.Fatal(err)
	}
	return t.UTC()
}

// countCalls is the number of calls s holds, by its report.
func countCalls(tb testing.TB, s gust.BillingStore) int64 {
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

func testAddCalls(t *testing.T, open func(t *testing.T) gust.BillingStore) {
	ctx := context.Background()
	start := mustTime(t, "2024-05-01T10:00:00Z")

	t.Run("Idempotent", func(t *testing.T) {
		s := open(t)
		batch := []gust.CallRecord{
			Rec("c1", "a", "f", start, time.Millisecond, 128, gust.OutcomeOK, true),
			Rec("c2", "a", "f", start.Add(time.Second), time.Millisecond, 128, gust.OutcomeOK, false),
			Rec("c3", "b", "g", start.Add(2*time.Second), time.Millisecond, 256, gust.OutcomeError, false),
		}
		MustAddCalls(t, s, batch...)
		first, _, err := s.Usage(ctx, gust.CallFilter{}, gust.GroupByFunction)
		if err != nil {
			t.Fatal(err)
		}
		MustAddCalls(t, s, batch...)
		MustAddCalls(t, s, batch[1])
		second, _, err := s.Usage(ctx, gust.CallFilter{}, gust.GroupByFunction)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(first, second) {
			t.Errorf("usage after redelivery = %+v, want %+v", second, first)
		}
		if got := countCalls(t, s); got != 3 {
			t.Errorf("calls = %d, want 3", got)
		}
	})

	t.Run("DuplicatesCommitTheRestFirstWins", func(t *testing.T) {
		s := open(t)
		orig := Rec("c1", "a", "f", start, time.Millisecond, 128, gust.OutcomeOK, true)
		MustAddCalls(t, s, orig)
		stored := orig
		stored.MemoryMiB = 4096 // a changed copy must not overwrite the stored record
		inBatch := Rec("c2", "a", "f", start.Add(time.Second), time.Millisecond, 128, gust.OutcomeOK, false)
		inBatchDup := inBatch
		inBatchDup.MemoryMiB, inBatchDup.Outcome = 2048, gust.OutcomeError // later in the batch: skipped
		MustAddCalls(t, s, inBatch, stored, inBatchDup,
			Rec("c3", "a", "f", start.Add(2*time.Second), time.Millisecond, 128, gust.OutcomeOK, false))
		if got := countCalls(t, s); got != 3 {
			t.Errorf("calls = %d, want 3", got)
		}
		for _, want := range []gust.CallRecord{orig, inBatch} {
			got, err := s.Call(ctx, want.CallID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("stored %s = %+v, want the first written %+v", want.CallID, got, want)
			}
		}
		rows, _, err := s.Usage(ctx, gust.CallFilter{}, gust.GroupByFunction)
		if err != nil {
			t.Fatal(err)
		}
		want := []gust.UsageRow{{Group: "a/f", Namespace: "a", Requests: 3, ColdStarts: 1,
			DurationNs: int64(3 * time.Millisecond), BilledNs: int64(3 * time.Millisecond), MiBMicros: 3 * 128 * 1000}}
		if !reflect.DeepEqual(rows, want) {
			t.Errorf("usage = %+v, want %+v (rollups of the records kept only)", rows, want)
		}
	})

	t.Run("Empty", func(t *testing.T) {
		s := open(t)
		if err := s.AddCalls(ctx, nil); err != nil {
			t.Errorf("AddCalls(nil) = %v", err)
		}
		if err := s.AddInstances(ctx, nil); err != nil {
			t.Errorf("AddInstances(nil) = %v", err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		s := open(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Go(func() {
				// Writers overlap: writer w adds calls w*10 .. w*10+19,
				// in an order of its own.
				var batch []gust.CallRecord
				for i := w * 10; i < w*10+20; i++ {
					batch = append(batch, Rec(fmt.Sprintf("c%03d", i), "a", "f",
						start.Add(time.Duration(i)*time.Second), time.Millisecond, 128, gust.OutcomeOK, false))
				}
				if w%2 == 1 {
					slices.Reverse(batch)
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
		rows, _, err := s.Usage(ctx, gust.CallFilter{From: start, To: start.Add(time.Hour)}, gust.GroupByHour)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 || rows[0].Requests != 90 {
			t.Errorf("hourly rollup after concurrent writers = %+v, want 90 requests", rows)
		}
	})
}

func testAddInstances(t *testing.T, open func(t *testing.T) gust.BillingStore) {
	ctx := context.Background()
	s := open(t)
	ready := mustTime(t, "2024-05-01T10:00:00Z")
	i1 := gust.InstanceRecord{Instance: "i1", Namespace: "a", Function: "f", Worker: "w1", MemoryMiB: 128,
		Ready: ready, Stopped: ready.Add(10 * time.Second), PausedMs: 4000}
	i2 := i1
	i2.Instance, i2.Stopped, i2.PausedMs = "i2", ready.Add(5*time.Second), 0
	MustAddInstances(t, s, i1)
	changed := i1
	changed.Stopped, changed.PausedMs = ready.Add(time.Hour), 50_000
	i2dup := i2
	i2dup.Stopped, i2dup.PausedMs = ready.Add(time.Hour), 1000
	MustAddInstances(t, s, changed, i2, i2dup)
	MustAddInstances(t, s, i1, i2)
	want := []gust.InstanceUsageRow{{Namespace: "a", Function: "f", MemoryMiB: 128, Instances: 2,
		HeldNs: int64(15 * time.Second), PausedNs: int64(4 * time.Second)}}
	for _, f := range []gust.CallFilter{{}, {From: ready, To: ready.Add(time.Hour)}} {
		_, got, err := s.Usage(ctx, f, gust.GroupByNamespace)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("instance usage %+v = %+v, want %+v", f, got, want)
		}
	}
}

// testPaused: the paused part of held capacity (the paused tier: memory
// held, no CPU) sums per function and memory size, each record's bounded
// by its held time, alike from the records (a range with partial hours)
// and from the hourly rollups (whole hours, or open), and a priced report
// shows it in seconds and GB-seconds.
func testPaused(t *testing.T, open func(t *testing.T) gust.BillingStore) {
	ctx := context.Background()
	s := open(t)
	ready := mustTime(t, "2024-05-01T10:00:00Z")
	inst := func(id, fn string, mem int64, at, held time.Duration, pausedMs int64) gust.InstanceRecord {
		return gust.InstanceRecord{Instance: id, Namespace: map[string]string{"f": "a", "g": "b"}[fn], Function: fn,
			Worker: "w1", MemoryMiB: mem, Ready: ready.Add(at), Stopped: ready.Add(at + held), PausedMs: pausedMs}
	}
	MustAddInstances(t, s,
		inst("p1", "f", 128, 0, 10*time.Minute, 420_000),                   // 7 of 10 minutes paused
		inst("p2", "f", 128, 20*time.Minute, 5*time.Minute, 0),             // never paused
		inst("p3", "f", 128, 30*time.Minute, time.Minute, 61_000),          // past its held minute: the minute
		inst("p4", "f", 128, 40*time.Minute, -time.Second, 1000),           // stopped before ready: nothing
		inst("p5", "f", 128, 50*time.Minute, 2*time.Minute, math.MaxInt64), // overflows in ns: its 2 minutes
		inst("p6", "f", 128, 55*time.Minute, time.Minute, -5),              // negative: nothing
		inst("p7", "g", 1024, 75*time.Minute, time.Hour, 1_800_500),        // the next hour: 1800.5 s
	)
	whole := []gust.InstanceUsageRow{
		{Namespace: "a", Function: "f", MemoryMiB: 128, Instances: 6, HeldNs: int64(19 * time.Minute), PausedNs: int64(10 * time.Minute)},
		{Namespace: "b", Function: "g", MemoryMiB: 1024, Instances: 1, HeldNs: int64(time.Hour), PausedNs: int64(1800500 * time.Millisecond)},
	}
	for _, tt := range []struct {
		name string
		f    gust.CallFilter
		want []gust.InstanceUsageRow
	}{
		{"Open", gust.CallFilter{}, whole},
		{"WholeHours", gust.CallFilter{From: ready, To: ready.Add(2 * time.Hour)}, whole},
		// Partial hours, from the records: p1 (ready on the hour) is out.
		{"Records", gust.CallFilter{From: ready.Add(time.Nanosecond), To: ready.Add(90 * time.Minute)}, []gust.InstanceUsageRow{
			{Namespace: "a", Function: "f", MemoryMiB: 128, Instances: 5, HeldNs: int64(9 * time.Minute), PausedNs: int64(3 * time.Minute)},
			whole[1],
		}},
		{"Function", gust.CallFilter{Namespace: "b", Function: "g", From: ready, To: ready.Add(80 * time.Minute)}, whole[1:]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, got, err := s.Usage(ctx, tt.f, gust.GroupByFunction)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("instance usage = %+v\nwant %+v", got, tt.want)
			}
		})
	}
	t.Run("Report", func(t *testing.T) {
		_, iu, err := s.Usage(ctx, gust.CallFilter{From: ready, To: ready.Add(2 * time.Hour)}, gust.GroupByFunction)
		if err != nil {
			t.Fatal(err)
		}
		r := billing.DefaultPricing().Report(nil, iu, gust.GroupByFunction, nil, nil)
		// a/f: 600 s of 1140 paused, 0.125 GiB: 75 of 142.5 GB-s.
		// b/g: 1800.5 s of 3600 paused, 1 GiB: 1800.5 of 3600 GB-s.
		want := [][4]string{{"1140", "600", "142.5", "75"}, {"3600", "1800.5", "3600", "1800.5"}}
		if len(r.Instances) != len(want) {
			t.Fatalf("report instances = %+v, want %d rows", r.Instances, len(want))
		}
		for i, row := range r.Instances {
			got := [4]string{row.InstanceSeconds.String(), row.PausedSeconds.String(), row.GBSeconds.String(),
				row.PausedGBSeconds.String()}
			if got != want[i] {
				t.Errorf("%s/%s: instance, paused seconds, GB-s, paused GB-s = %v, want %v",
					row.Namespace, row.Function, got, want[i])
			}
		}
	})
}

func testCall(t *testing.T, open func(t *testing.T) gust.BillingStore) {
	ctx := context.Background()
	s := open(t)
	want := gust.CallRecord{
		CallID: "c-1", CallerID: "req-42", Namespace: "team-a", Function: "resize", Version: 1<<63 + 5,
		Image: "resize:v3", Worker: "w7", Instance: "inst-9", Trigger: gust.TriggerAsync,
		Start:      mustTime(t, "2024-05-01T10:00:00.123456789Z"),
		End:        mustTime(t, "2024-05-01T10:00:01.623456789Z"),
		DurationNs: 1_500_000_000, BilledNs: 1_500_000_000, MemoryMiB: 256, ColdStart: true,
		InitNs: 350_000_000, Status: 503, Outcome: gust.OutcomeError, BytesIn: 1234, BytesOut: 5678,
	}
	// Two later calls sent the same X-Call-Id; the latest is the answer.
	retry := Rec("c-2", "team-a", "resize", want.Start.Add(time.Minute), time.Millisecond, 256, gust.OutcomeOK, false)
	retry.CallerID = "req-7"
	latest := retry
	latest.CallID, latest.Start = "c-3", retry.Start.Add(time.Second)
	MustAddCalls(t, s, want, retry, latest)

	t.Run("OK", func(t *testing.T) {
		got, err := s.Call(ctx, "c-1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Call = %+v\nwant %+v", got, want)
		}
	})
	t.Run("CallerID", func(t *testing.T) {
		for id, wantID := range map[string]string{"req-42": "c-1", "req-7": "c-3"} {
			got, err := s.Call(ctx, id)
			if err != nil {
				t.Fatalf("Call(%s): %v", id, err)
			}
			if got.CallID != wantID {
				t.Errorf("Call(%s) = %s, want %s", id, got.CallID, wantID)
			}
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		for _, id := range []string{"nope", ""} {
			_, err := s.Call(ctx, id)
			if !errors.Is(err, gust.ErrNotFound) {
				t.Errorf("Call(%q): err = %v, want ErrNotFound", id, err)
			}
		}
	})
}

func testCalls(t *testing.T, open func(t *testing.T) gust.BillingStore) {
	ctx := context.Background()
	s := open(t)
	base := mustTime(t, "2024-05-01T10:00:00Z")
	var all []gust.CallRecord
	for i := range 25 {
		// Pairs share a start time, so the order falls back to call id.
		all = append(all, Rec(fmt.Sprintf("c%02d", i), "a", "f", base.Add(time.Duration(i/2)*time.Second),
			time.Millisecond, 128, gust.OutcomeOK, false))
	}
	MustAddCalls(t, s, all...)

	t.Run("Pages", func(t *testing.T) {
		f := gust.CallFilter{Limit: 10}
		var sizes []int
		var last gust.CallRecord
		for {
			recs, next, err := s.Calls(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, len(recs))
			if next == "" {
				break
			}
			// Every store writes the one cursor format, so that a page
			// continues on a gateway of another kind.
			last = recs[len(recs)-1]
			ns, id, err := billing.DecodeCursor(next)
			if err != nil || ns != last.Start.UnixNano() || id != last.CallID {
				t.Fatalf("cursor %q = (%d, %q, %v), want the last record (%d, %q)", next, ns, id, err,
					last.Start.UnixNano(), last.CallID)
			}
			f.Cursor = next
		}
		if want := []int{10, 10, 5}; !reflect.DeepEqual(sizes, want) {
			t.Errorf("page sizes = %v, want %v", sizes, want)
		}
	})
	t.Run("ExactMultiple", func(t *testing.T) {
		f := gust.CallFilter{Limit: 5}
		pages := 0
		for {
			recs, next, err := s.Calls(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 5 {
				t.Fatalf("page %d has %d records, want 5 (no empty last page)", pages, len(recs))
			}
			pages++
			if next == "" {
				break
			}
			f.Cursor = next
		}
		if pages != 5 {
			t.Errorf("pages = %d, want 5", pages)
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
	t.Run("ErrBadGroupBy", func(t *testing.T) {
		_, _, err := s.Usage(ctx, gust.CallFilter{}, "week")
		if gust.ErrorCode(err) != gust.EINVALID || gust.ErrorField(err) != "group_by" {
			t.Errorf("err = %v, want EINVALID on field group_by", err)
		}
	})
}

// randomCalls returns n call records over 3 namespaces, 5 function names
// (shared between namespaces), every outcome, and starts drawn from few
// distinct values so that many records share one and the order falls
// back to call id. Some ids differ in case and have a '~' (an attempt's
// id), so that byte order is what is tested.
func randomCalls(rng *rand.Rand, n int, base time.Time) []gust.CallRecord {
	outcomes := []string{gust.OutcomeOK, gust.OutcomeOK, gust.OutcomeOK, gust.OutcomeError, gust.OutcomeTimeout,
		gust.OutcomeCrashed, gust.OutcomeRejected}
	recs := make([]gust.CallRecord, n)
	for i := range recs {
		start := base.Add(time.Duration(rng.IntN(n/4+1)) * time.Millisecond)
		id := fmt.Sprintf("c%08x-%d", rng.Uint32(), i)
		switch rng.IntN(6) {
		case 0:
			id = strings.ToUpper(id)
		case 1:
			id = gust.AttemptID(id, 2+rng.IntN(3))
		}
		recs[i] = Rec(id, fmt.Sprintf("ns%d", rng.IntN(3)),
			fmt.Sprintf("fn%d", rng.IntN(5)), start, time.Duration(1+rng.IntN(1000))*time.Microsecond, 128,
			outcomes[rng.IntN(len(outcomes))], rng.IntN(10) == 0)
	}
	return recs
}

// matches reports whether r passes f's filters (not its cursor or limit).
func matches(f gust.CallFilter, r gust.CallRecord) bool {
	return (f.Namespace == "" || r.Namespace == f.Namespace) &&
		(f.Function == "" || r.Function == f.Function) &&
		(f.Outcome == "" || r.Outcome == f.Outcome) &&
		(f.From.IsZero() || !r.Start.Before(f.From)) &&
		(f.To.IsZero() || r.Start.Before(f.To))
}

// testCallsPaging: with every combination of the namespace, function
// and outcome filters, and no range, a random range or one open below,
// the unpaged listing is the records filtered and sorted newest first
// (start, then call id in byte order), and paging it with a random limit
// gives the same records.
func testCallsPaging(t *testing.T, open func(t *testing.T) gust.BillingStore) {
	ctx := context.Background()
	s := open(t)
	rng := RNG(t, 13)
	base := mustTime(t, "2024-05-01T10:00:00Z")
	all := randomCalls(rng, 3000, base)
	for i := 0; i < len(all); {
		n := min(1+rng.IntN(700), len(all)-i)
		MustAddCalls(t, s, all[i:i+n]...)
		i += n
	}
	slices.SortFunc(all, func(a, b gust.CallRecord) int {
		return cmp.Or(b.Start.Compare(a.Start), strings.Compare(b.CallID, a.CallID))
	})
	ids := func(recs []gust.CallRecord) []string {
		out := make([]string, len(recs))
		for i, r := range recs {
			out[i] = r.CallID
		}
		return out
	}
	for _, ns := range []string{"", "ns1"} {
		for _, fn := range []string{"", "fn2"} {
			for _, outcome := range []string{"", gust.OutcomeOK, gust.OutcomeError} {
				for round := range 3 {
					f := gust.CallFilter{Namespace: ns, Function: fn, Outcome: outcome}
					if round > 0 {
						// A random range, open below in the last round.
						a, b := rng.IntN(800), rng.IntN(800)
						f.From = base.Add(time.Duration(min(a, b)) * time.Millisecond)
						f.To = base.Add(time.Duration(max(a, b)) * time.Millisecond)
						if round == 2 {
							f.From = time.Time{}
						}
					}
					var want []gust.CallRecord
					for _, r := range all {
						if matches(f, r) {
							want = append(want, r)
						}
					}
					whole := f
					whole.Limit = len(all) + 1
					unpaged, next, err := s.Calls(ctx, whole)
					if err != nil || next != "" {
						t.Fatalf("%+v: unpaged: cursor %q, err %v", f, next, err)
					}
					if !reflect.DeepEqual(ids(unpaged), ids(want)) {
						t.Fatalf("%+v: unpaged listing differs from the records filtered and sorted (%d vs %d)",
							f, len(unpaged), len(want))
					}
					f.Limit = 1 + rng.IntN(150)
					if !f.To.IsZero() {
						// A cursor past To (To narrowed between pages)
						// still honours To: the first page.
						c := f
						c.Cursor = billing.EncodeCursor(f.To.Add(time.Millisecond).UnixNano(), "c")
						recs, _, err := s.Calls(ctx, c)
						if err != nil {
							t.Fatal(err)
						}
						if first := unpaged[:min(f.Limit, len(unpaged))]; !reflect.DeepEqual(ids(recs), ids(first)) {
							t.Errorf("%+v: cursor past To: %d records, want the first page (%d)", c, len(recs), len(first))
						}
					}
					var paged []gust.CallRecord
					for pages := 0; ; pages++ {
						if pages > len(all)+1 {
							t.Fatalf("%+v: paging does not end", f)
						}
						recs, next, err := s.Calls(ctx, f)
						if err != nil {
							t.Fatalf("%+v: page %d: %v", f, pages, err)
						}
						if len(recs) > f.Limit || (next != "" && len(recs) != f.Limit) {
							t.Fatalf("%+v: page %d has %d records (next %q)", f, pages, len(recs), next)
						}
						paged = append(paged, recs...)
						if next == "" {
							break
						}
						f.Cursor = next
					}
					if (len(paged) != 0 || len(unpaged) != 0) && !reflect.DeepEqual(paged, unpaged) {
						t.Errorf("%+v: paged listing (%d records) differs from the unpaged one (%d)",
							f, len(paged), len(unpaged))
					}
				}
			}
		}
	}
}

// testUsage checks reports on a small data set whose sums are computed by
// hand: month, leap day and hour edges, a rejected call, instances at
// the range's ends and one that stopped before it was ready.
func testUsage(t *testing.T, open func(t *testing.T) gust.BillingStore) {
	ctx := context.Background()
	s := open(t)
	MustAddCalls(t, s,
		Rec("c1", "a", "f", mustTime(t, "2024-01-31T23:59:59.999999999Z"), time.Millisecond, 128, gust.OutcomeOK, true),
		Rec("c2", "a", "f", mustTime(t, "2024-02-01T00:00:00Z"), 1500*time.Millisecond, 128, gust.OutcomeError, false),
		Rec("c3", "a", "g", mustTime(t, "2024-02-01T00:59:59Z"), 100*time.Millisecond, 1024, gust.OutcomeOK, false),
		Rec("c4", "b", "f", mustTime(t, "2024-02-01T01:00:00Z"), 500*time.Microsecond, 256, gust.OutcomeTimeout, true),
		Rec("c5", "b", "h", mustTime(t, "2024-02-29T23:30:00Z"), 2*time.Millisecond, 512, gust.OutcomeOK, false),
		Rec("c6", "a", "f", mustTime(t, "2024-03-01T00:00:00Z"), 5*time.Millisecond, 128, gust.OutcomeRejected, false),
	)
	ready := mustTime(t, "2024-02-01T00:00:00Z")
	MustAddInstances(t, s,
		gust.InstanceRecord{Instance: "i1", Namespace: "a", Function: "f", MemoryMiB: 128, Ready: ready, Stopped: ready.Add(10 * time.Minute)},
		gust.InstanceRecord{Instance: "i2", Namespace: "a", Function: "f", MemoryMiB: 128, Ready: ready.Add(30 * time.Minute), Stopped: ready.Add(30*time.Minute + 90*time.Second)},
		gust.InstanceRecord{Instance: "i4", Namespace: "b", Function: "h", MemoryMiB: 512, Ready: ready.Add(-time.Hour), Stopped: ready.Add(time.Hour)},
		gust.InstanceRecord{Instance: "i5", Namespace: "a", Function: "g", MemoryMiB: 1024, Ready: ready.Add(time.Hour), Stopped: ready},
	)
	feb := gust.CallFilter{From: ready, To: mustTime(t, "2024-03-01T00:00:00Z")}
	tests := []struct {
		name    string
		f       gust.CallFilter
		groupBy string
		want    []gust.UsageRow
	}{
		{"MonthAll", gust.CallFilter{}, gust.GroupByMonth, []gust.UsageRow{
			{Group: "2024-01", Namespace: "a", Requests: 1, ColdStarts: 1, DurationNs: 1e6, BilledNs: 1e6, MiBMicros: 128 * 1000},
			{Group: "2024-02", Namespace: "a", Requests: 2, Errors: 1, DurationNs: 1600e6, BilledNs: 1600e6, MiBMicros: 128*1500000 + 1024*100000},
			{Group: "2024-02", Namespace: "b", Requests: 2, Errors: 1, ColdStarts: 1, DurationNs: 2.5e6, BilledNs: 3e6, MiBMicros: 256*1000 + 512*2000},
			{Group: "2024-03", Namespace: "a", Requests: 1, Errors: 1, DurationNs: 5e6},
		}},
		{"FebByFunction", feb, gust.GroupByFunction, []gust.UsageRow{
			{Group: "a/f", Namespace: "a", Requests: 1, Errors: 1, DurationNs: 1500e6, BilledNs: 1500e6, MiBMicros: 128 * 1500000},
			{Group: "a/g", Namespace: "a", Requests: 1, DurationNs: 100e6, BilledNs: 100e6, MiBMicros: 1024 * 100000},
			{Group: "b/f", Namespace: "b", Requests: 1, Errors: 1, ColdStarts: 1, DurationNs: 0.5e6, BilledNs: 1e6, MiBMicros: 256 * 1000},
			{Group: "b/h", Namespace: "b", Requests: 1, DurationNs: 2e6, BilledNs: 2e6, MiBMicros: 512 * 2000},
		}},
		{"FebByHourOfB", gust.CallFilter{Namespace: "b", From: feb.From, To: feb.To}, gust.GroupByHour, []gust.UsageRow{
			{Group: "2024-02-01T01:00Z", Namespace: "b", Requests: 1, Errors: 1, ColdStarts: 1, DurationNs: 0.5e6, BilledNs: 1e6, MiBMicros: 256 * 1000},
			{Group: "2024-02-29T23:00Z", Namespace: "b", Requests: 1, DurationNs: 2e6, BilledNs: 2e6, MiBMicros: 512 * 2000},
		}},
		{"DayOfOutcome", gust.CallFilter{Outcome: gust.OutcomeOK}, gust.GroupByDay, []gust.UsageRow{
			{Group: "2024-01-31", Namespace: "a", Requests: 1, ColdStarts: 1, DurationNs: 1e6, BilledNs: 1e6, MiBMicros: 128 * 1000},
			{Group: "2024-02-01", Namespace: "a", Requests: 1, DurationNs: 100e6, BilledNs: 100e6, MiBMicros: 1024 * 100000},
			{Group: "2024-02-29", Namespace: "b", Requests: 1, DurationNs: 2e6, BilledNs: 2e6, MiBMicros: 512 * 2000},
		}},
		{"Empty", gust.CallFilter{Namespace: "nobody"}, gust.GroupByNamespace, []gust.UsageRow{}},
		{"Reversed", gust.CallFilter{From: feb.To, To: feb.From}, gust.GroupByNamespace, []gust.UsageRow{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := s.Usage(ctx, tt.f, tt.groupBy)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Usage = %+v\nwant %+v", got, tt.want)
			}
		})
	}
	t.Run("Instances", func(t *testing.T) {
		_, got, err := s.Usage(ctx, gust.CallFilter{From: ready, To: ready.Add(time.Hour)}, gust.GroupByNamespace)
		if err != nil {
			t.Fatal(err)
		}
		want := []gust.InstanceUsageRow{{Namespace: "a", Function: "f", MemoryMiB: 128, Instances: 2, HeldNs: int64(11*time.Minute + 30*time.Second)}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("instance usage = %+v, want %+v", got, want)
		}
		_, got, err = s.Usage(ctx, gust.CallFilter{Namespace: "a", Function: "g"}, gust.GroupByNamespace)
		if err != nil {
			t.Fatal(err)
		}
		want = []gust.InstanceUsageRow{{Namespace: "a", Function: "g", MemoryMiB: 1024, Instances: 1}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("instance usage of a/g = %+v, want %+v (stopped before ready holds nothing)", got, want)
		}
	})
}

// testUsageOracle: reports, which read whole hours and days from the
// rollups and the edges from the records, equal the sums of the records
// themselves to the unit, on random ranges (open, on boundaries or
// anywhere), filters and groupings, after random batches of which some
// are delivered again.
func testUsageOracle(t *testing.T, open func(t *testing.T) gust.BillingStore) {
	rng := RNG(t, 17)
	s := open(t)
	calls, insts := RandomRecords(rng, 4000)
	AddRedelivered(t, rng, s, calls, insts)
	calls = FirstByID(calls, func(r *gust.CallRecord) string { return r.CallID })
	insts = FirstByID(insts, func(r *gust.InstanceRecord) string { return r.Instance })
	if got := countCalls(t, s); got != int64(len(calls)) {
		t.Fatalf("stored %d calls, want %d", got, len(calls))
	}
	CheckUsage(t, rng, s, calls, insts, 150)
}

// Window is where RandomRecords puts its records: six days across the
// end of February of a leap year and into March.
var Window = struct{ From, To time.Time }{
	time.Date(2024, 2, 27, 0, 0, 0, 0, time.UTC), time.Date(2024, 3, 4, 0, 0, 0, 0, time.UTC),
}

// RandomInstant returns a time in Window: often exactly on an hour or a
// day boundary, or a nanosecond either side of one, otherwise anywhere.
func RandomInstant(rng *rand.Rand) time.Time {
	span := Window.To.Sub(Window.From)
	t := Window.From.Add(time.Duration(rng.Int64N(int64(span))))
	switch rng.IntN(8) {
	case 0:
		return t.Truncate(time.Hour)
	case 1:
		return t.Truncate(24 * time.Hour)
	case 2:
		return t.Truncate(time.Hour).Add(-time.Nanosecond)
	case 3:
		return t.Truncate(24 * time.Hour).Add(time.Nanosecond)
	}
	return t
}

// RandomRecords returns n random call records and n/10 instance records,
// some of them sharing an id with an earlier one (with other contents:
// the store keeps the first).
func RandomRecords(rng *rand.Rand, n int) ([]gust.CallRecord, []gust.InstanceRecord) {
	outcomes := []string{gust.OutcomeOK, gust.OutcomeOK, gust.OutcomeOK, gust.OutcomeError, gust.OutcomeTimeout,
		gust.OutcomeCrashed, gust.OutcomeRejected}
	mems := []int64{128, 256, 1024}
	calls := make([]gust.CallRecord, n)
	for i := range calls {
		id := fmt.Sprintf("c%d", i)
		if i > 0 && rng.IntN(50) == 0 {
			id = calls[rng.IntN(i)].CallID
		}
		// Durations of any nanosecond count; billed per millisecond or
		// per microsecond, as the granularity may be either.
		dur := time.Duration(1 + rng.Int64N(int64(3*time.Second)))
		r := Rec(id, fmt.Sprintf("ns%d", rng.IntN(3)), fmt.Sprintf("fn%d", rng.IntN(4)), RandomInstant(rng), dur,
			mems[rng.IntN(len(mems))], outcomes[rng.IntN(len(outcomes))], rng.IntN(7) == 0)
		if rng.IntN(2) == 0 && r.BilledNs > 0 {
			r.BilledNs = int64(gust.BilledDuration(dur, time.Microsecond))
		}
		calls[i] = r
	}
	insts := make([]gust.InstanceRecord, n/10)
	for i := range insts {
		id := fmt.Sprintf("i%d", i)
		if i > 0 && rng.IntN(20) == 0 {
			id = insts[rng.IntN(i)].Instance
		}
		ready := RandomInstant(rng)
		insts[i] = gust.InstanceRecord{Instance: id, Namespace: fmt.Sprintf("ns%d", rng.IntN(3)),
			Function: fmt.Sprintf("fn%d", rng.IntN(4)), Worker: "w1", MemoryMiB: mems[rng.IntN(len(mems))],
			Ready: ready, Stopped: ready.Add(time.Duration(rng.Int64N(int64(3*time.Hour))) - 10*time.Minute)}
		// Paused for none, part or all of the held time, and counts the
		// stores must bound: past the held time, negative.
		heldMs := max(insts[i].Stopped.Sub(ready).Milliseconds(), 0)
		switch rng.IntN(6) {
		case 1, 2:
			insts[i].PausedMs = rng.Int64N(heldMs + 1)
		case 3:
			insts[i].PausedMs = heldMs
		case 4:
			insts[i].PausedMs = heldMs + 1 + rng.Int64N(int64(time.Hour/time.Millisecond))
		case 5:
			insts[i].PausedMs = -1 - rng.Int64N(1000)
		}
	}
	return calls, insts
}

// AddRedelivered adds calls and instances to s in random batches, and
// adds some batches again, whole or in part, as a redelivering meter
// would.
func AddRedelivered(t testing.TB, rng *rand.Rand, s gust.BillingStore, calls []gust.CallRecord, insts []gust.InstanceRecord) {
	t.Helper()
	for i := 0; i < len(calls); {
		n := min(1+rng.IntN(300), len(calls)-i)
		MustAddCalls(t, s, calls[i:i+n]...)
		if rng.IntN(4) == 0 {
			// Again, from an earlier point, up to the end of this batch.
			MustAddCalls(t, s, calls[rng.IntN(i+1):i+n]...)
		}
		i += n
	}
	for i := 0; i < len(insts); {
		n := min(1+rng.IntN(40), len(insts)-i)
		MustAddInstances(t, s, insts[i:i+n]...)
		if rng.IntN(3) == 0 {
			MustAddInstances(t, s, insts[rng.IntN(i+1):i+n]...)
		}
		i += n
	}
}

// FirstByID keeps the first record of each id, in order.
func FirstByID[R any](recs []R, id func(*R) string) []R {
	seen := map[string]bool{}
	var out []R
	for i := range recs {
		if k := id(&recs[i]); !seen[k] {
			seen[k] = true
			out = append(out, recs[i])
		}
	}
	return out
}

// UsageOf computes Usage from the records themselves, in Go: the oracle
// of a store's SQL over records and rollups.
func UsageOf(calls []gust.CallRecord, insts []gust.InstanceRecord, f gust.CallFilter, groupBy string) ([]gust.UsageRow, []gust.InstanceUsageRow) {
	type key struct{ group, ns string }
	sums := map[key]*gust.UsageRow{}
	for _, r := range calls {
		if !matches(f, r) {
			continue
		}
		var g string
		switch groupBy {
		case gust.GroupByNamespace:
			g = r.Namespace
		case gust.GroupByFunction:
			g = r.Namespace + "/" + r.Function
		case gust.GroupByHour:
			g = r.Start.UTC().Format("2006-01-02T15:00Z")
		case gust.GroupByDay:
			g = r.Start.UTC().Format("2006-01-02")
		case gust.GroupByMonth:
			g = r.Start.UTC().Format("2006-01")
		}
		u := sums[key{g, r.Namespace}]
		if u == nil {
			u = &gust.UsageRow{Group: g, Namespace: r.Namespace}
			sums[key{g, r.Namespace}] = u
		}
		u.Requests++
		if r.Outcome != gust.OutcomeOK {
			u.Errors++
		}
		if r.ColdStart {
			u.ColdStarts++
		}
		u.DurationNs += r.DurationNs
		u.BilledNs += r.BilledNs
		u.MiBMicros += r.MemoryMiB * (r.BilledNs / 1000)
	}
	rows := []gust.UsageRow{}
	for _, u := range sums {
		rows = append(rows, *u)
	}
	slices.SortFunc(rows, func(a, b gust.UsageRow) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Namespace, b.Namespace))
	})

	type ikey struct {
		ns, fn string
		mem    int64
	}
	isums := map[ikey]*gust.InstanceUsageRow{}
	for _, r := range insts {
		if (f.Namespace != "" && r.Namespace != f.Namespace) || (f.Function != "" && r.Function != f.Function) ||
			(!f.From.IsZero() && r.Ready.Before(f.From)) || (!f.To.IsZero() && !r.Ready.Before(f.To)) {
			continue
		}
		k := ikey{r.Namespace, r.Function, r.MemoryMiB}
		u := isums[k]
		if u == nil {
			u = &gust.InstanceUsageRow{Namespace: r.Namespace, Function: r.Function, MemoryMiB: r.MemoryMiB}
			isums[k] = u
		}
		u.Instances++
		held := max(int64(r.Stopped.Sub(r.Ready)), 0)
		u.HeldNs += held
		// Paused: PausedMs, at least none and at most the held time
		// (compared in milliseconds, as a count past it may overflow in
		// nanoseconds).
		switch ms := int64(time.Millisecond); {
		case r.PausedMs <= 0:
		case r.PausedMs > held/ms:
			u.PausedNs += held
		default:
			u.PausedNs += r.PausedMs * ms
		}
	}
	irows := []gust.InstanceUsageRow{}
	for _, u := range isums {
		irows = append(irows, *u)
	}
	slices.SortFunc(irows, func(a, b gust.InstanceUsageRow) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Function, b.Function),
			cmp.Compare(a.MemoryMiB, b.MemoryMiB))
	})
	return rows, irows
}

// RandomUsageFilter returns a filter with a random range (open, on a
// boundary, or anywhere; sometimes empty or reversed) and random
// namespace, function and outcome filters.
func RandomUsageFilter(rng *rand.Rand) gust.CallFilter {
	var f gust.CallFilter
	if rng.IntN(5) > 0 {
		f.From = RandomInstant(rng).Add(-12 * time.Hour)
	}
	if rng.IntN(5) > 0 {
		f.To = RandomInstant(rng).Add(12 * time.Hour)
	}
	if !f.From.IsZero() && !f.To.IsZero() && f.To.Before(f.From) && rng.IntN(4) > 0 {
		f.From, f.To = f.To, f.From
	}
	if rng.IntN(3) == 0 {
		f.Namespace = fmt.Sprintf("ns%d", rng.IntN(3))
	}
	if rng.IntN(3) == 0 {
		f.Function = fmt.Sprintf("fn%d", rng.IntN(4))
	}
	if rng.IntN(4) == 0 {
		f.Outcome = []string{gust.OutcomeOK, gust.OutcomeError, gust.OutcomeRejected}[rng.IntN(3)]
	}
	return f
}

// Groupings are every Usage grouping.
var Groupings = []string{gust.GroupByNamespace, gust.GroupByFunction, gust.GroupByHour, gust.GroupByDay, gust.GroupByMonth}

// CheckCallUsage compares the call rows of s.Usage with the oracle
// (UsageOf) on n random filters and every grouping, for stores whose
// instance records are not known exactly.
func CheckCallUsage(t testing.TB, rng *rand.Rand, s gust.BillingStore, calls []gust.CallRecord, n int) {
	t.Helper()
	for range n {
		f := RandomUsageFilter(rng)
		for _, g := range Groupings {
			got, _, err := s.Usage(context.Background(), f, g)
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := UsageOf(calls, nil, f, g); !reflect.DeepEqual(got, want) {
				t.Fatalf("Usage(%+v, %s):\ngot  %+v\nwant %+v", f, g, got, want)
			}
		}
	}
}

// CheckUsage compares s.Usage with the oracle (UsageOf) on n random
// filters and every grouping.
func CheckUsage(t testing.TB, rng *rand.Rand, s gust.BillingStore, calls []gust.CallRecord, insts []gust.InstanceRecord, n int) {
	t.Helper()
	for range n {
		f := RandomUsageFilter(rng)
		for _, g := range Groupings {
			got, gotInst, err := s.Usage(context.Background(), f, g)
			if err != nil {
				t.Fatal(err)
			}
			want, wantInst := UsageOf(calls, insts, f, g)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Usage(%+v, %s):\ngot  %+v\nwant %+v", f, g, got, want)
			}
			if !reflect.DeepEqual(gotInst, wantInst) {
				t.Fatalf("Usage(%+v, %s) instances:\ngot  %+v\nwant %+v", f, g, gotInst, wantInst)
			}
		}
	}
}

// testPrune, for a store that prunes (gust.PruningStore): Prune deletes
// the call records before the hour of its argument and no others, and
// moves the horizon there (never back); listings no longer show them;
// reports over whole hours still count them, from the rollups; records
// from before the horizon delivered again change nothing.
func testPrune(t *testing.T, open func(t *testing.T) gust.BillingStore) {
	ctx := context.Background()
	s, ok := open(t).(gust.PruningStore)
	if !ok {
		t.Skip("the store does not prune")
	}
	rng := RNG(t, 23)
	calls, insts := RandomRecords(rng, 2000)
	AddRedelivered(t, rng, s, calls, insts)
	calls = FirstByID(calls, func(r *gust.CallRecord) string { return r.CallID })
	insts = FirstByID(insts, func(r *gust.InstanceRecord) string { return r.Instance })

	if from, err := s.RawFrom(ctx); err != nil || !from.IsZero() {
		t.Fatalf("RawFrom before pruning = %v, %v; want the zero time", from, err)
	}
	horizon := RandomInstant(rng).Truncate(time.Hour)
	var older int64
	var kept []gust.CallRecord
	for _, r := range calls {
		if r.Start.Before(horizon) {
			older++
		} else {
			kept = append(kept, r)
		}
	}
	n, err := s.Prune(ctx, horizon.Add(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if n != older {
		t.Errorf("Prune deleted %d records, want %d (those before %s)", n, older, horizon)
	}
	if n, err := s.Prune(ctx, horizon.Add(-48*time.Hour)); err != nil || n != 0 {
		t.Errorf("Prune before the horizon = %d, %v; want 0, nil", n, err)
	}
	if from, err := s.RawFrom(ctx); err != nil || !from.Equal(horizon) {
		t.Fatalf("RawFrom = %v, %v; want %v (never moved back)", from, err, horizon)
	}
	listed, next, err := s.Calls(ctx, gust.CallFilter{Limit: len(calls) + 1})
	if err != nil || next != "" {
		t.Fatalf("Calls: cursor %q, %v", next, err)
	}
	if len(listed) != len(kept) {
		t.Errorf("listing after Prune has %d records, want the %d kept", len(listed), len(kept))
	}
	for _, r := range listed {
		if r.Start.Before(horizon) {
			t.Fatalf("record %s of %s listed after Prune before %s", r.CallID, r.Start, horizon)
		}
	}
	// Over ranges of whole hours (or open), reports count the pruned
	// records too, to the unit; a partial hour below the horizon would
	// be counted whole.
	check := func() {
		t.Helper()
		for range 60 {
			f := RandomUsageFilter(rng)
			f.From, f.To = f.From.Truncate(time.Hour), f.To.Truncate(time.Hour)
			for _, g := range Groupings {
				got, gotInst, err := s.Usage(ctx, f, g)
				if err != nil {
					t.Fatal(err)
				}
				want, wantInst := UsageOf(calls, insts, f, g)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("Usage(%+v, %s) after Prune:\ngot  %+v\nwant %+v", f, g, got, want)
				}
				if !reflect.DeepEqual(gotInst, wantInst) {
					t.Fatalf("Usage(%+v, %s) instances after Prune:\ngot  %+v\nwant %+v", f, g, gotInst, wantInst)
				}
			}
		}
	}
	check()
	MustAddCalls(t, s, calls...)
	check()
	if got := countCalls(t, s); got != int64(len(calls)) {
		t.Errorf("report counts %d calls after redelivery, want %d", got, len(calls))
	}
}
