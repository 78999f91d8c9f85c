package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap/zaptest"
)

// testRNG returns a generator seeded from GUST_TEST_SEED, or from the
// clock when it is unset, and logs the seed so that a failure repeats.
func testRNG(t *testing.T, stream uint64) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("GUST_TEST_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (GUST_TEST_SEED repeats it)", seed)
	return rand.New(rand.NewPCG(seed, stream))
}

// rollupWindow is where rollupRecords puts its records: six days across
// the end of February of a leap year and into March.
var rollupWindow = struct{ from, to time.Time }{
	time.Date(2024, 2, 27, 0, 0, 0, 0, time.UTC), time.Date(2024, 3, 4, 0, 0, 0, 0, time.UTC),
}

// randomInstant returns a time in rollupWindow: often exactly on an hour
// or a day boundary, or a nanosecond either side of one, otherwise
// anywhere.
func randomInstant(rng *rand.Rand) time.Time {
	span := rollupWindow.to.Sub(rollupWindow.from)
	t := rollupWindow.from.Add(time.Duration(rng.Int64N(int64(span))))
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

// rollupRecords returns n random call records and n/10 instance records,
// some of them sharing an id with an earlier one (with other contents:
// the store keeps the first).
func rollupRecords(rng *rand.Rand, n int) ([]gust.CallRecord, []gust.InstanceRecord) {
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
		r := rec(id, fmt.Sprintf("ns%d", rng.IntN(3)), fmt.Sprintf("fn%d", rng.IntN(4)), randomInstant(rng), dur,
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
		ready := randomInstant(rng)
		insts[i] = gust.InstanceRecord{Instance: id, Namespace: fmt.Sprintf("ns%d", rng.IntN(3)),
			Function: fmt.Sprintf("fn%d", rng.IntN(4)), Worker: "w1", MemoryMiB: mems[rng.IntN(len(mems))],
			Ready: ready, Stopped: ready.Add(time.Duration(rng.Int64N(int64(3*time.Hour))) - 10*time.Minute)}
	}
	return calls, insts
}

// addRedelivered adds calls and instances to s in random batches, and
// adds some batches again, whole or in part, as a redelivering meter
// would.
func addRedelivered(t *testing.T, rng *rand.Rand, s *Store, calls []gust.CallRecord, insts []gust.InstanceRecord) {
	t.Helper()
	ctx := context.Background()
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
		if err := s.AddInstances(ctx, insts[i:i+n]); err != nil {
			t.Fatal(err)
		}
		if rng.IntN(3) == 0 {
			if err := s.AddInstances(ctx, insts[rng.IntN(i+1):i+n]); err != nil {
				t.Fatal(err)
			}
		}
		i += n
	}
}

// firstByID keeps the first record of each id, in order.
func firstByID[R any](recs []R, id func(*R) string) []R {
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

// usageOf computes Usage from the records themselves, in Go: the oracle
// of the store's SQL over records and rollups.
func usageOf(calls []gust.CallRecord, insts []gust.InstanceRecord, f gust.CallFilter, groupBy string) ([]gust.UsageRow, []gust.InstanceUsageRow) {
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
		u.HeldNs += max(int64(r.Stopped.Sub(r.Ready)), 0)
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

// randomUsageFilter returns a filter with a random range (open, on a
// boundary, or anywhere; sometimes empty or reversed) and random
// namespace, function and outcome filters.
func randomUsageFilter(rng *rand.Rand) gust.CallFilter {
	var f gust.CallFilter
	if rng.IntN(5) > 0 {
		f.From = randomInstant(rng).Add(-12 * time.Hour)
	}
	if rng.IntN(5) > 0 {
		f.To = randomInstant(rng).Add(12 * time.Hour)
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

var groupings = []string{gust.GroupByNamespace, gust.GroupByFunction, gust.GroupByHour, gust.GroupByDay, gust.GroupByMonth}

// checkUsage compares s.Usage with the oracle on n random filters and
// every grouping.
func checkUsage(t *testing.T, rng *rand.Rand, s *Store, calls []gust.CallRecord, insts []gust.InstanceRecord, n int) {
	t.Helper()
	for range n {
		f := randomUsageFilter(rng)
		for _, g := range groupings {
			got, gotInst, err := s.Usage(context.Background(), f, g)
			if err != nil {
				t.Fatal(err)
			}
			want, wantInst := usageOf(calls, insts, f, g)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Usage(%+v, %s):\ngot  %+v\nwant %+v", f, g, got, want)
			}
			if !reflect.DeepEqual(gotInst, wantInst) {
				t.Fatalf("Usage(%+v, %s) instances:\ngot  %+v\nwant %+v", f, g, gotInst, wantInst)
			}
		}
	}
}

// TestStore_UsageFromRollups: reports, which read whole hours and days
// from the rollups and the edges from the records, equal the sums of the
// records themselves to the unit, on random ranges (open, on boundaries
// or anywhere), filters and groupings, after random batches of which
// some are delivered again.
func TestStore_UsageFromRollups(t *testing.T) {
	rng := testRNG(t, 17)
	s, _ := MustOpen(t)
	calls, insts := rollupRecords(rng, 4000)
	addRedelivered(t, rng, s, calls, insts)
	calls = firstByID(calls, func(r *gust.CallRecord) string { return r.CallID })
	insts = firstByID(insts, func(r *gust.InstanceRecord) string { return r.Instance })
	if got := countCalls(t, s); got != int64(len(calls)) {
		t.Fatalf("stored %d calls, want %d", got, len(calls))
	}
	checkUsage(t, rng, s, calls, insts, 150)
}

// TestOpen_BackfillsRollups: a store of schema version 3 with records
// gets rollups of them when it opens, and reports equal the records'
// sums.
func TestOpen_BackfillsRollups(t *testing.T) {
	rng := testRNG(t, 19)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "billing.db")
	s, err := Open(path, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	calls, insts := rollupRecords(rng, 2000)
	addRedelivered(t, rng, s, calls, insts)
	calls = firstByID(calls, func(r *gust.CallRecord) string { return r.CallID })
	insts = firstByID(insts, func(r *gust.InstanceRecord) string { return r.Instance })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Back to version 3: the records without rollups.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP TABLE call_hours`, `DROP TABLE call_days`, `DROP TABLE instance_hours`, `DROP TABLE retention`, `PRAGMA user_version = 3`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	var hours int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM call_hours`).Scan(&hours); err != nil || hours == 0 {
		t.Fatalf("call_hours after migration: %d rows, %v", hours, err)
	}
	checkUsage(t, rng, s, calls, insts, 50)
}
