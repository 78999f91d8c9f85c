package sqlite

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing/storetest"
	"go.uber.org/zap/zaptest"
)

// The random records, the redelivering adder and the Go oracle of the
// reports are the conformance suite's (internal/billing/storetest), one
// copy for both stores; these names keep this package's tests short.

func testRNG(t *testing.T, stream uint64) *rand.Rand { return storetest.RNG(t, stream) }

var rollupWindow = struct{ from, to time.Time }{storetest.Window.From, storetest.Window.To}

func rollupRecords(rng *rand.Rand, n int) ([]gust.CallRecord, []gust.InstanceRecord) {
	return storetest.RandomRecords(rng, n)
}

func addRedelivered(t *testing.T, rng *rand.Rand, s *Store, calls []gust.CallRecord, insts []gust.InstanceRecord) {
	t.Helper()
	storetest.AddRedelivered(t, rng, s, calls, insts)
}

func firstByID[R any](recs []R, id func(*R) string) []R { return storetest.FirstByID(recs, id) }

func usageOf(calls []gust.CallRecord, insts []gust.InstanceRecord, f gust.CallFilter, groupBy string) ([]gust.UsageRow, []gust.InstanceUsageRow) {
	return storetest.UsageOf(calls, insts, f, groupBy)
}

func randomUsageFilter(rng *rand.Rand) gust.CallFilter { return storetest.RandomUsageFilter(rng) }

var groupings = storetest.Groupings

func checkUsage(t *testing.T, rng *rand.Rand, s *Store, calls []gust.CallRecord, insts []gust.InstanceRecord, n int) {
	t.Helper()
	storetest.CheckUsage(t, rng, s, calls, insts, n)
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
	// Back to version 3: the records without rollups, and without the
	// pauses that version did not have.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range insts {
		insts[i].PausedMs = 0
	}
	for _, q := range []string{`DROP TABLE call_hours`, `DROP TABLE call_days`, `DROP TABLE instance_hours`, `DROP TABLE retention`,
		`ALTER TABLE instances DROP COLUMN paused_ms`, `PRAGMA user_version = 3`} {
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

// TestOpen_MigratesPaused: a store of schema version 5 (before the paused
// tier) gets the paused columns when it opens, its records and rollups
// paused for none of their time, and stores and reports pauses from
// then on, from the records and the rollups alike.
func TestOpen_MigratesPaused(t *testing.T) {
	rng := testRNG(t, 31)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "billing.db")
	s, err := Open(path, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	calls, insts := rollupRecords(rng, 2000)
	for i := range insts {
		insts[i].PausedMs = 0
	}
	older, newer := insts[:len(insts)/2], insts[len(insts)/2:]
	addRedelivered(t, rng, s, calls, older)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`ALTER TABLE instances DROP COLUMN paused_ms`, `ALTER TABLE instance_hours DROP COLUMN paused_ns`,
		`PRAGMA user_version = 5`} {
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
	var paused int64
	if err := s.db.QueryRowContext(ctx, `SELECT (SELECT COALESCE(SUM(paused_ms), 0) FROM instances) +
		(SELECT COALESCE(SUM(paused_ns), 0) FROM instance_hours)`).Scan(&paused); err != nil || paused != 0 {
		t.Fatalf("paused after migration: %d, %v; want 0", paused, err)
	}
	// From now on, instances pause.
	for i := range newer {
		newer[i].PausedMs = rng.Int64N(max(newer[i].Stopped.Sub(newer[i].Ready).Milliseconds(), 0) + 2)
	}
	storetest.AddRedelivered(t, rng, s, nil, newer)
	calls = firstByID(calls, func(r *gust.CallRecord) string { return r.CallID })
	all := firstByID(insts, func(r *gust.InstanceRecord) string { return r.Instance })
	checkUsage(t, rng, s, calls, all, 50)
	_, iu, err := s.Usage(ctx, gust.CallFilter{}, gust.GroupByFunction)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, u := range iu {
		sum += u.PausedNs
	}
	if sum == 0 {
		t.Error("no paused time reported after the migration")
	}
}
