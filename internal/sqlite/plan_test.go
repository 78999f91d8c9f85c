package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
	"go.uber.org/zap/zaptest"
)

// queryPlan returns the detail column of EXPLAIN QUERY PLAN of query.
func queryPlan(tb testing.TB, db *sql.DB, query string, args ...any) []string {
	tb.Helper()
	rows, err := db.QueryContext(context.Background(), `EXPLAIN QUERY PLAN `+query, args...)
	if err != nil {
		tb.Fatalf("explain: %v", err)
	}
	defer func() { _ = rows.Close() }()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			tb.Fatalf("explain: scan: %v", err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("explain: %v", err)
	}
	return plan
}

// listingFilters are the filter combinations users give
// GET /system/invocations.
var listingFilters = []struct {
	name string
	f    gust.CallFilter
}{
	{"None", gust.CallFilter{}},
	{"Namespace", gust.CallFilter{Namespace: "ns1"}},
	{"NamespaceFunction", gust.CallFilter{Namespace: "ns1", Function: "fn2"}},
	{"Function", gust.CallFilter{Function: "fn2"}},
	{"StatusError", gust.CallFilter{Outcome: gust.OutcomeError}},
	{"NamespaceStatus", gust.CallFilter{Namespace: "ns1", Outcome: gust.OutcomeError}},
	{"NamespaceFunctionStatus", gust.CallFilter{Namespace: "ns1", Function: "fn2", Outcome: gust.OutcomeError}},
	{"FunctionStatus", gust.CallFilter{Function: "fn2", Outcome: gust.OutcomeError}},
	{"StatusOK", gust.CallFilter{Outcome: gust.OutcomeOK}},
	{"StatusTimeout", gust.CallFilter{Outcome: gust.OutcomeTimeout}},
}

// randomCalls returns n call records over 3 namespaces, 5 function names
// (shared between namespaces), every outcome, and starts drawn from few
// distinct values so that many records share one and the order falls
// back to call id.
func randomCalls(rng *rand.Rand, n int, base time.Time) []gust.CallRecord {
	outcomes := []string{gust.OutcomeOK, gust.OutcomeOK, gust.OutcomeOK, gust.OutcomeError, gust.OutcomeTimeout,
		gust.OutcomeCrashed, gust.OutcomeRejected}
	recs := make([]gust.CallRecord, n)
	for i := range recs {
		start := base.Add(time.Duration(rng.IntN(n/4+1)) * time.Millisecond)
		recs[i] = rec(fmt.Sprintf("c%08x-%d", rng.Uint32(), i), fmt.Sprintf("ns%d", rng.IntN(3)),
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

// TestStore_CallsPlan: every page of the listing, with each filter
// combination and with or without a time range, seeks an index whose
// order is the listing's: no sort into a temporary b-tree and no scan of
// the whole table. Checked on a store without statistics (just created)
// and with them (after PRAGMA optimize on open).
func TestStore_CallsPlan(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "billing.db")
	s, err := Open(path, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	base := mustTime(t, "2024-05-01T10:00:00Z")
	MustAddCalls(t, s, randomCalls(rand.New(rand.NewPCG(1, 2)), 2000, base)...)
	check := func(t *testing.T, s *Store) {
		cursor := billing.EncodeCursor(unixNano(base.Add(time.Second)), "c8")
		for _, tt := range listingFilters {
			for _, timed := range []bool{false, true} {
				for _, c := range []string{"", cursor} {
					f := tt.f
					f.Cursor = c
					if timed {
						f.From, f.To = base.Add(10*time.Millisecond), base.Add(time.Hour)
					}
					query, args, err := callsQuery(f, 100)
					if err != nil {
						t.Fatal(err)
					}
					plan := queryPlan(t, s.db, query, args...)
					name := fmt.Sprintf("%s timed=%v cursor=%v", tt.name, timed, c != "")
					joined := strings.Join(plan, "; ")
					if strings.Contains(joined, "TEMP B-TREE") {
						t.Errorf("%s: plan sorts: %s", name, joined)
					}
					// The first page of the whole listing reads the start
					// index from its end (SCAN ... USING INDEX) and stops
					// after a page; every other page seeks.
					seek := strings.Contains(joined, "SEARCH calls USING INDEX calls_") ||
						strings.Contains(joined, "SEARCH calls USING COVERING INDEX calls_")
					firstOfAll := c == "" && !timed && (tt.f == gust.CallFilter{} || tt.f == gust.CallFilter{Outcome: gust.OutcomeOK})
					if firstOfAll {
						seek = joined == "SCAN calls USING INDEX calls_start_id"
					}
					if !seek || len(plan) != 1 {
						t.Errorf("%s: plan %q, want one index search", name, joined)
					}
					if testing.Verbose() {
						t.Logf("%s: %s", name, joined)
					}
				}
			}
		}
	}
	t.Run("NoStatistics", func(t *testing.T) { check(t, s) })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	var stats int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_stat1 WHERE tbl = 'calls'`).Scan(&stats); err != nil || stats == 0 {
		t.Fatalf("statistics of calls after reopening: %d rows, err %v; want some (PRAGMA optimize on open)", stats, err)
	}
	t.Run("Statistics", func(t *testing.T) { check(t, s) })
}

// TestStore_CallsPaging: paging through a few thousand random records
// (inserted in batches) with each filter combination, with a random page
// size and sometimes a time range, returns every matching record exactly
// once, newest first, the same as one unpaged query and as the records
// filtered and sorted here.
func TestStore_CallsPaging(t *testing.T) {
	ctx := context.Background()
	s, _ := MustOpen(t)
	rng := testRNG(t, 13)
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
	for _, tt := range listingFilters {
		for round := range 3 {
			f := tt.f
			if round > 0 {
				// A random range, sometimes open on one side.
				a, b := rng.IntN(800), rng.IntN(800)
				from, to := base.Add(time.Duration(min(a, b))*time.Millisecond), base.Add(time.Duration(max(a, b))*time.Millisecond)
				f.From, f.To = from, to
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
				t.Fatalf("%s: unpaged: cursor %q, err %v", tt.name, next, err)
			}
			if !reflect.DeepEqual(ids(unpaged), ids(want)) {
				t.Fatalf("%s %+v: unpaged listing differs from the records filtered and sorted (%d vs %d)",
					tt.name, f, len(unpaged), len(want))
			}
			f.Limit = 1 + rng.IntN(150)
			if !f.To.IsZero() {
				// A cursor past To (To narrowed between pages) still
				// honours To: the first page.
				c := f
				c.Cursor = billing.EncodeCursor(unixNano(f.To.Add(time.Millisecond)), "c")
				recs, _, err := s.Calls(ctx, c)
				if err != nil {
					t.Fatal(err)
				}
				if first := unpaged[:min(f.Limit, len(unpaged))]; !reflect.DeepEqual(ids(recs), ids(first)) {
					t.Errorf("%s %+v: cursor past To: %d records, want the first page (%d)", tt.name, c, len(recs), len(first))
				}
			}
			var paged []gust.CallRecord
			for pages := 0; ; pages++ {
				if pages > len(all)+1 {
					t.Fatalf("%s: paging does not end", tt.name)
				}
				recs, next, err := s.Calls(ctx, f)
				if err != nil {
					t.Fatalf("%s: page %d: %v", tt.name, pages, err)
				}
				if len(recs) > f.Limit || (next != "" && len(recs) != f.Limit) {
					t.Fatalf("%s: page %d has %d records (limit %d, next %q)", tt.name, pages, len(recs), f.Limit, next)
				}
				paged = append(paged, recs...)
				if next == "" {
					break
				}
				f.Cursor = next
			}
			// An empty listing is nil when paged and an empty slice when not.
			if (len(paged) != 0 || len(unpaged) != 0) && !reflect.DeepEqual(paged, unpaged) {
				t.Errorf("%s %+v limit %d: paged listing (%d records) differs from the unpaged one (%d)",
					tt.name, f, f.Limit, len(paged), len(unpaged))
			}
		}
	}
}

// TestOpen_MigratesListingIndexes: a store written by schema version 2
// gets the listing indexes (and loses the two they extend) when opened.
func TestOpen_MigratesListingIndexes(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "billing.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range migrations[:2] {
		if _, err := db.ExecContext(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `PRAGMA user_version = 2`); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'calls'
		AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	want := []string{"calls_caller", "calls_function_start_id", "calls_namespace_function_start_id",
		"calls_namespace_start_id", "calls_outcome_start_id", "calls_start_id"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("indexes on calls = %v, want %v", names, want)
	}
}
