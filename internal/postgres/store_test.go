package postgres_test

import (
	"context"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing/storetest"
	"github.com/gustfaas/gust/internal/postgres"
	"github.com/gustfaas/gust/internal/postgres/pgtest"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"
)

// MustOpen opens a store in a schema of its own (pgtest.MustSchema) and
// closes it when the test ends; it returns the store and its URL.
func MustOpen(t *testing.T) (*postgres.Store, string) {
	t.Helper()
	u := pgtest.MustSchema(t)
	s, err := postgres.Open(context.Background(), u, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, u
}

// TestStore_Conformance runs the billing store conformance suite, which
// internal/sqlite runs too.
func TestStore_Conformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) gust.BillingStore {
		s, _ := MustOpen(t)
		return s
	})
}

// TestOpen_Migrations: a second Open of a migrated database changes
// nothing and keeps the records; several opened at once (gateways
// started together) migrate once; a schema newer than this program is an
// error.
func TestOpen_Migrations(t *testing.T) {
	ctx := context.Background()
	s, u := MustOpen(t)
	storetest.MustAddCalls(t, s, storetest.Rec("c1", "a", "f", time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC),
		time.Millisecond, 128, gust.OutcomeOK, false))
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			s2, err := postgres.Open(ctx, u, zaptest.NewLogger(t))
			if err == nil {
				_, err = s2.Call(ctx, "c1")
				_ = s2.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("reopen: %v", err)
		}
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var rows, version int
	if err := conn.QueryRow(ctx, `SELECT COUNT(*), MAX(version) FROM gust_billing_schema`).Scan(&rows, &version); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || version < 1 {
		t.Errorf("gust_billing_schema: %d rows, version %d; want one row, version >= 1", rows, version)
	}
	if _, err := conn.Exec(ctx, `UPDATE gust_billing_schema SET version = 1000`); err != nil {
		t.Fatal(err)
	}
	if s3, err := postgres.Open(ctx, u, zaptest.NewLogger(t)); err == nil {
		_ = s3.Close()
		t.Error("Open of a schema newer than this program succeeded")
	}
}

// TestOpen_BadURL: an unparsable URL is an error that does not repeat
// the URL (it may hold a password).
func TestOpen_BadURL(t *testing.T) {
	_, err := postgres.Open(context.Background(), "postgres://u:secret@[::1", nil)
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("Open(bad URL) = %v, want an error without the password", err)
	}
}

// TestOpen_MigratesRetention: a database of schema version 1 (before
// retention) gets the retention table when opened, with no horizon, and
// keeps its records.
func TestOpen_MigratesRetention(t *testing.T) {
	ctx := context.Background()
	s, u := MustOpen(t)
	start := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	storetest.MustAddCalls(t, s, storetest.Rec("c1", "a", "f", start, time.Millisecond, 128, gust.OutcomeOK, false))
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, `DROP TABLE retention; ALTER TABLE instances DROP COLUMN paused_ms;
		ALTER TABLE instance_hours DROP COLUMN paused_ns; UPDATE gust_billing_schema SET version = 1`); err != nil {
		t.Fatal(err)
	}
	s2, err := postgres.Open(ctx, u, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s2.Close() }()
	if from, err := s2.RawFrom(ctx); err != nil || !from.IsZero() {
		t.Errorf("RawFrom after migration = %v, %v; want the zero time", from, err)
	}
	if _, err := s2.Call(ctx, "c1"); err != nil {
		t.Errorf("record after migration: %v", err)
	}
}

// TestOpen_MigratesPaused: a database of schema version 2 (before the
// paused tier) gets the paused columns when opened, its instances and
// rollups paused for none of their time, and stores and reports pauses
// from then on.
func TestOpen_MigratesPaused(t *testing.T) {
	ctx := context.Background()
	s, u := MustOpen(t)
	ready := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	inst := func(id string, at time.Duration, pausedMs int64) gust.InstanceRecord {
		return gust.InstanceRecord{Instance: id, Namespace: "a", Function: "f", Worker: "w1", MemoryMiB: 128,
			Ready: ready.Add(at), Stopped: ready.Add(at + time.Minute), PausedMs: pausedMs}
	}
	storetest.MustAddInstances(t, s, inst("i1", 0, 0))
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, `ALTER TABLE instances DROP COLUMN paused_ms;
		ALTER TABLE instance_hours DROP COLUMN paused_ns; UPDATE gust_billing_schema SET version = 2`); err != nil {
		t.Fatal(err)
	}
	s2, err := postgres.Open(ctx, u, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s2.Close() }()
	storetest.MustAddInstances(t, s2, inst("i2", 30*time.Minute, 15_000))
	// Whole hours from the rollups, a partial one from the records.
	for _, f := range []gust.CallFilter{{}, {From: ready.Add(time.Nanosecond), To: ready.Add(time.Hour)}} {
		_, got, err := s2.Usage(ctx, f, gust.GroupByNamespace)
		if err != nil {
			t.Fatal(err)
		}
		want := []gust.InstanceUsageRow{{Namespace: "a", Function: "f", MemoryMiB: 128, Instances: 2,
			HeldNs: int64(2 * time.Minute), PausedNs: int64(15 * time.Second)}}
		if !f.From.IsZero() {
			want[0].Instances, want[0].HeldNs = 1, int64(time.Minute)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("instance usage %+v after migration = %+v, want %+v", f, got, want)
		}
	}
}

// TestStore_SharedByGateways: two stores on one database (two gateways)
// add overlapping batches at once, in orders of their own, with
// redeliveries: every record is stored once and the reports, read from
// the rollups both upserted, equal the records' sums.
func TestStore_SharedByGateways(t *testing.T) {
	ctx := context.Background()
	s1, u := MustOpen(t)
	s2, err := postgres.Open(ctx, u, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s2.Close() }()
	// The gateways share one ingest consumer, named after the database.
	if s1.ConsumerID() != s2.ConsumerID() {
		t.Errorf("ConsumerID = %q and %q on one database, want equal", s1.ConsumerID(), s2.ConsumerID())
	}
	if other, _ := MustOpen(t); other.ConsumerID() == s1.ConsumerID() {
		t.Errorf("ConsumerID %q on another schema too, want another", other.ConsumerID())
	}
	rng := storetest.RNG(t, 29)
	calls, insts := storetest.RandomRecords(rng, 3000)
	const writers = 6
	errs := make(chan error, writers)
	for w := range writers {
		// Each writer adds every record, shuffled, in batches: all
		// overlap with all.
		order := rng.Perm(len(calls))
		iorder := rng.Perm(len(insts))
		seed := rng.Uint64()
		store := []*postgres.Store{s1, s2}[w%2]
		go func() {
			wrng := rand.New(rand.NewPCG(seed, 1))
			var err error
			for i := 0; i < len(order) && err == nil; {
				n := min(1+wrng.IntN(400), len(order)-i)
				batch := make([]gust.CallRecord, n)
				for j := range batch {
					batch[j] = calls[order[i+j]]
				}
				err = store.AddCalls(ctx, batch)
				i += n
			}
			for i := 0; i < len(iorder) && err == nil; {
				n := min(1+wrng.IntN(50), len(iorder)-i)
				batch := make([]gust.InstanceRecord, n)
				for j := range batch {
					batch[j] = insts[iorder[i+j]]
				}
				err = store.AddInstances(ctx, batch)
				i += n
			}
			errs <- err
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Which copy of a duplicated id won depends on which writer came
	// first: take the stored ones as the records.
	var stored []gust.CallRecord
	f := gust.CallFilter{Limit: 1000}
	for {
		recs, next, err := s1.Calls(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, recs...)
		if next == "" {
			break
		}
		f.Cursor = next
	}
	if want := len(storetest.FirstByID(calls, func(r *gust.CallRecord) string { return r.CallID })); len(stored) != want {
		t.Fatalf("stored %d calls, want %d distinct ids", len(stored), want)
	}
	// Instances: each distinct id once. Their copies differ and the
	// store lists no instance records, so only the count is checked.
	_, iu, err := s2.Usage(ctx, gust.CallFilter{}, gust.GroupByNamespace)
	if err != nil {
		t.Fatal(err)
	}
	var instances int64
	for _, r := range iu {
		instances += r.Instances
	}
	if want := len(storetest.FirstByID(insts, func(r *gust.InstanceRecord) string { return r.Instance })); instances != int64(want) {
		t.Errorf("instance report counts %d, want %d distinct ids", instances, want)
	}
	storetest.CheckCallUsage(t, rng, s2, stored, 60)
}
