package sqlite

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
)

// generateCalls makes the first limit of n call records like a small
// tenant's month and hands them to add in batches of 1000: 20 namespaces, 500 functions
// (function i in namespace i%20) of skewed popularity (cube of a uniform
// draw), over the 30 days of November 2026; 2% errors, 1% timeouts, 2%
// cold starts. The same n gives the same records.
func generateCalls(n, limit int, add func([]gust.CallRecord)) {
	rng := rand.New(rand.NewPCG(7, 7))
	const functions, namespaces = 500, 20
	step := 30 * 24 * time.Hour / time.Duration(n)
	batch := make([]gust.CallRecord, 0, 1000)
	for i := range min(n, limit) {
		u := rng.Float64()
		fn := int(u * u * u * functions)
		outcome := gust.OutcomeOK
		switch p := rng.IntN(100); {
		case p < 2:
			outcome = gust.OutcomeError
		case p < 3:
			outcome = gust.OutcomeTimeout
		}
		start := generatedMonth.Add(time.Duration(i)*step + time.Duration(rng.IntN(int(step))))
		batch = append(batch, rec(fmt.Sprintf("%016x", rng.Uint64()), fmt.Sprintf("ns%02d", fn%namespaces),
			fmt.Sprintf("fn%03d", fn), start, time.Duration(1+rng.IntN(500))*time.Millisecond, 256, outcome, rng.IntN(50) == 0))
		if len(batch) == cap(batch) || i == min(n, limit)-1 {
			add(batch)
			batch = batch[:0]
		}
	}
}

// generatedMonth is the first instant of generateCalls's month.
var generatedMonth = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// TestListingFigures measures pages 1 and 10 of the invocation listing
// on a store of GUST_BILLING_LISTING_RECORDS generated records, first with
// this package's query and indexes, then with the query and indexes of
// schema version 2 (the OR cursor condition, indexes on start and on
// namespace, function and start) on the same data. It reports figures
// and asserts none; it runs only when the variable is set:
//
//	GUST_BILLING_LISTING_RECORDS=1000000 go test ./internal/sqlite -run TestListingFigures -v -timeout 30m
func TestListingFigures(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("GUST_BILLING_LISTING_RECORDS"))
	if n <= 0 {
		t.Skip("set GUST_BILLING_LISTING_RECORDS to a record count to measure the listing")
	}
	ctx := context.Background()
	generate := func(s *Store, n int) time.Duration {
		began := time.Now()
		generateCalls(n, n, func(batch []gust.CallRecord) { MustAddCalls(t, s, batch...) })
		return time.Since(began)
	}
	// Insert rate of this schema and of version 2's, on fresh stores of
	// up to 100k records, alternately, twice each: the machine's noise
	// falls on both.
	m := min(n, 100000)
	for round := range 2 {
		v3, _ := MustOpen(t)
		d3 := generate(v3, m)
		v2 := openSchema2(t, true)
		began := time.Now()
		generateCalls(m, m, func(b []gust.CallRecord) { insertRawCalls(t, v2, b) })
		d2 := time.Since(began)
		t.Logf("insert rate (round %d), %d records in batches of 1000: schema 2 %.0f records/s, this schema %.0f records/s (%.2f×)",
			round+1, m, float64(m)/d2.Seconds(), float64(m)/d3.Seconds(), d2.Seconds()/d3.Seconds())
	}
	s, _ := MustOpen(t)
	elapsed := generate(s, n)
	t.Logf("inserted %d records in %v (%.0f records/s, batches of 1000)", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
	// Statistics as a store opened on this file would have them.
	if err := s.optimize(ctx); err != nil {
		t.Fatal(err)
	}

	filters := []struct {
		name string
		f    gust.CallFilter
	}{
		{"whole store", gust.CallFilter{}},
		{"namespace=ns00", gust.CallFilter{Namespace: "ns00"}},
		{"namespace=ns00&function=fn000", gust.CallFilter{Namespace: "ns00", Function: "fn000"}},
		{"function=fn000", gust.CallFilter{Function: "fn000"}},
		{"status=error", gust.CallFilter{Outcome: gust.OutcomeError}},
		{"namespace=ns00&status=error", gust.CallFilter{Namespace: "ns00", Outcome: gust.OutcomeError}},
	}
	// pages times pages 1 to 10 of f (DefaultLimit records each) with
	// page, which returns a page and the next cursor.
	// A filter with fewer than 10 full pages leaves the later ones 0.
	pages := func(f gust.CallFilter, page func(gust.CallFilter) ([]gust.CallRecord, string)) [10]time.Duration {
		var d [10]time.Duration
		f.Limit = billing.DefaultLimit
		for p := range d {
			t0 := time.Now()
			recs, next := page(f)
			d[p] = time.Since(t0)
			if len(recs) != f.Limit {
				break
			}
			f.Cursor = next
		}
		return d
	}
	after := func(f gust.CallFilter) ([]gust.CallRecord, string) {
		recs, next, err := s.Calls(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return recs, next
	}
	// before runs the SQL text of schema version 2's Calls.
	before := func(f gust.CallFilter) ([]gust.CallRecord, string) {
		where, args := filterWhere(f, `start_ns`, true)
		if f.Cursor != "" {
			startNs, callID, err := billing.DecodeCursor(f.Cursor)
			if err != nil {
				t.Fatal(err)
			}
			where = append(where, `(start_ns < ? OR (start_ns = ? AND call_id < ?))`)
			args = append(args, startNs, startNs, callID)
		}
		args = append(args, f.Limit+1)
		rows, err := s.db.QueryContext(ctx, `SELECT `+callColumns+` FROM calls`+whereClause(where)+
			` ORDER BY start_ns DESC, call_id DESC LIMIT ?`, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = rows.Close() }()
		var recs []gust.CallRecord
		for rows.Next() && len(recs) < f.Limit {
			r, err := scanCall(rows)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r)
		}
		if len(recs) == 0 {
			return nil, ""
		}
		last := recs[len(recs)-1]
		return recs, billing.EncodeCursor(unixNano(last.Start), last.CallID)
	}
	type figures struct{ p1, p10 time.Duration }
	res := map[string][2]figures{}
	// After: median of 5 runs of each filter's 10 pages.
	for _, fl := range filters {
		var p1, p10 []time.Duration
		for range 5 {
			d := pages(fl.f, after)
			p1, p10 = append(p1, d[0]), append(p10, d[9])
		}
		slices.Sort(p1)
		slices.Sort(p10)
		r := res[fl.name]
		r[1] = figures{p1[2], p10[2]}
		res[fl.name] = r
	}
	// Before: schema version 2's indexes and no statistics (no release
	// ran ANALYZE), one run of each filter.
	for _, q := range []string{
		`DELETE FROM sqlite_stat1`,
		`DROP INDEX calls_start_id`, `DROP INDEX calls_namespace_start_id`, `DROP INDEX calls_namespace_function_start_id`,
		`DROP INDEX calls_function_start_id`, `DROP INDEX calls_outcome_start_id`,
		`CREATE INDEX calls_start ON calls (start_ns)`,
		`CREATE INDEX calls_function_start ON calls (namespace, function, start_ns)`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, fl := range filters {
		d := pages(fl.f, before)
		r := res[fl.name]
		r[0] = figures{d[0], d[9]}
		res[fl.name] = r
	}
	pageMs := func(d time.Duration) string {
		if d == 0 {
			return "(fewer than 10 pages)"
		}
		return ms(d)
	}
	out := fmt.Sprintf("\n| listing (%d records, %d a page) | page 1 before | page 10 before | page 1 after | page 10 after |\n|---|---|---|---|---|\n",
		n, billing.DefaultLimit)
	for _, fl := range filters {
		r := res[fl.name]
		out += fmt.Sprintf("| `%s` | %s | %s | %s | %s |\n", fl.name, pageMs(r[0].p1), pageMs(r[0].p10), pageMs(r[1].p1), pageMs(r[1].p10))
	}
	t.Log(out)
}
