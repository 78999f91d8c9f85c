package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
)

// TestBillingFigures measures the billing store at each record count in
// GUST_BILLING_BENCH_RECORDS (comma-separated, e.g. 1000000,10000000)
// with generateCalls's month, against baselines measured in the same
// run: the insert rate against the store of schema version 2 (as issue
// 13 measured it: fewer indexes, no rollups), reports from rollups against the same
// reports summed over the records, invocation pages, and lookups by call
// id. It prints a table with the targets and asserts none (these
// machines are shared); it runs only when the variable is set, as
// `make bench-billing` sets it (GUST_BILLING_BENCH_ONLY=insert measures
// the inserts alone):
//
//	GUST_BILLING_BENCH_RECORDS=1000000,10000000 go test ./internal/sqlite -run TestBillingFigures -v -timeout 60m
func TestBillingFigures(t *testing.T) {
	var counts []int
	for _, f := range strings.Split(os.Getenv("GUST_BILLING_BENCH_RECORDS"), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			counts = append(counts, n)
		}
	}
	if len(counts) == 0 {
		t.Skip("set GUST_BILLING_BENCH_RECORDS to record counts to measure the billing store")
	}
	out := "\n| figure | " + strings.Join(mapSlice(counts, func(n int) string { return humanCount(n) + " records" }), " | ") +
		" | target at 10M |\n|---|" + strings.Repeat("---|", len(counts)) + "---|\n"
	var rows []billingFigures
	for _, n := range counts {
		rows = append(rows, measureBilling(t, n))
	}
	for i, name := range rows[0].names {
		out += "| " + name + " | "
		for _, r := range rows {
			out += r.values[i] + " | "
		}
		out += rows[0].targets[i] + " |\n"
	}
	t.Log(out)
}

// billingFigures are the named figures of one record count, in order.
type billingFigures struct{ names, values, targets []string }

func (f *billingFigures) add(name, value, target string) {
	f.names, f.values, f.targets = append(f.names, name), append(f.values, value), append(f.targets, target)
}

func measureBilling(t *testing.T, n int) billingFigures {
	ctx := context.Background()
	var fig billingFigures

	// Insert rate of this store against the store as issue 13 measured
	// it (schema version 2: two indexes, no rollups, written through the
	// pool with SQLite's defaults), and against schema 2 written as this
	// store writes
	// (what the indexes and rollups cost by themselves), on fresh stores
	// of the first 200k records (at the density of n a month), in turn,
	// twice each: the machine's noise falls on all three.
	m := min(n, 200000)
	stores := []struct {
		name string
		open func() func([]gust.CallRecord)
		best float64
	}{
		{"this store", func() func([]gust.CallRecord) {
			s, _ := MustOpen(t)
			return func(b []gust.CallRecord) { MustAddCalls(t, s, b...) }
		}, 0},
		{"schema 2 as it was", func() func([]gust.CallRecord) {
			s := openSchema2(t, true)
			return func(b []gust.CallRecord) { insertRawCalls(t, s, b) }
		}, 0},
		{"schema 2 with this store's settings", func() func([]gust.CallRecord) {
			s := openSchema2(t, false)
			return func(b []gust.CallRecord) { insertRawCalls(t, s, b) }
		}, 0},
	}
	for range 2 {
		for i := range stores {
			add := stores[i].open()
			began := time.Now()
			generateCalls(n, m, add)
			stores[i].best = max(stores[i].best, float64(m)/time.Since(began).Seconds())
		}
	}
	rate := stores[0].best
	fig.add(fmt.Sprintf("insert, batches of 1000 (%s records, best of 2)", humanCount(m)),
		fmt.Sprintf("%.0f/s; %s %.0f/s (%.2f×); %s %.0f/s (%.2f×)", rate,
			stores[1].name, stores[1].best, rate/stores[1].best, stores[2].name, stores[2].best, rate/stores[2].best),
		"≥ 0.75× schema 2 as it was")
	if os.Getenv("GUST_BILLING_BENCH_ONLY") == "insert" {
		return fig
	}

	s, _ := MustOpen(t)
	began := time.Now()
	generateCalls(n, n, func(b []gust.CallRecord) { MustAddCalls(t, s, b...) })
	elapsed := time.Since(began)
	fig.add("insert of the whole store", fmt.Sprintf("%.0f/s (%v)", float64(n)/elapsed.Seconds(), elapsed.Round(time.Second)), "")
	if err := s.optimize(ctx); err != nil {
		t.Fatal(err)
	}

	// Reports: median of 3 from rollups; once summed over the records,
	// as before rollups, with the same answer.
	month := gust.CallFilter{From: generatedMonth, To: generatedMonth.AddDate(0, 1, 0)}
	rolling := gust.CallFilter{From: generatedMonth.Add(17*time.Minute + 3*time.Second), To: generatedMonth.AddDate(0, 1, 0).Add(-42 * time.Minute)}
	withNS := func(f gust.CallFilter, ns, fn string) gust.CallFilter { f.Namespace, f.Function = ns, fn; return f }
	reports := []struct {
		name    string
		f       gust.CallFilter
		groupBy string
	}{
		{"month by function", month, gust.GroupByFunction},
		{"month by namespace", month, gust.GroupByNamespace},
		{"30 days from a minute past the hour, by function", rolling, gust.GroupByFunction},
		{"one namespace by day", withNS(month, "ns00", ""), gust.GroupByDay},
		{"one function by hour", withNS(month, "ns00", "fn000"), gust.GroupByHour},
	}
	for _, r := range reports {
		var d []time.Duration
		var got []gust.UsageRow
		for range 3 {
			t0 := time.Now()
			rows, _, err := s.Usage(ctx, r.f, r.groupBy)
			if err != nil {
				t.Fatal(err)
			}
			d, got = append(d, time.Since(t0)), rows
		}
		slices.Sort(d)
		t0 := time.Now()
		raw, err := s.callUsage(ctx, r.f, groupExprs[r.groupBy],
			[]billing.Span{{Source: billing.Raw, From: r.f.From.UnixNano(), To: r.f.To.UnixNano()}})
		if err != nil {
			t.Fatal(err)
		}
		rawD := time.Since(t0)
		if !slices.Equal(got, raw) {
			t.Errorf("%s: the rollups' report differs from the records' sums", r.name)
		}
		fig.add("report: "+r.name, fmt.Sprintf("%s (records alone %s)", ms(d[1]), ms(rawD)), "< 1 s")
	}

	// Pages 1 and 10: median of 5 runs each.
	for _, l := range []struct {
		name string
		f    gust.CallFilter
	}{
		{"whole store", gust.CallFilter{}},
		{"one function", gust.CallFilter{Namespace: "ns00", Function: "fn000"}},
		{"status=error", gust.CallFilter{Outcome: gust.OutcomeError}},
	} {
		var p1, p10 []time.Duration
		for range 5 {
			f := l.f
			f.Limit = billing.DefaultLimit
			for p := range 10 {
				t0 := time.Now()
				recs, next, err := s.Calls(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				d := time.Since(t0)
				if p == 0 {
					p1 = append(p1, d)
				}
				if p == 9 {
					p10 = append(p10, d)
				}
				if len(recs) < f.Limit {
					break
				}
				f.Cursor = next
			}
		}
		slices.Sort(p1)
		slices.Sort(p10)
		v := "page 1 " + ms(p1[len(p1)/2])
		if len(p10) > 0 {
			v += ", page 10 " + ms(p10[len(p10)/2])
		}
		fig.add("invocations: "+l.name, v, "< 10 ms")
	}

	// Lookups by call id: 2000 ids of stored calls, drawn at random.
	var ids []string
	rows, err := s.db.QueryContext(ctx, `SELECT call_id FROM calls WHERE rowid % ? = 0 LIMIT 2000`, max(n/2000, 1))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	_ = rows.Close()
	rand.New(rand.NewPCG(1, 1)).Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	var d []time.Duration
	for _, id := range ids {
		t0 := time.Now()
		if _, err := s.Call(ctx, id); err != nil {
			t.Fatal(err)
		}
		d = append(d, time.Since(t0))
	}
	slices.Sort(d)
	fig.add("lookup by call id", fmt.Sprintf("p50 %s, p99 %s", ms(d[len(d)/2]), ms(d[len(d)*99/100])), "< 1 ms")
	return fig
}

// openSchema2 opens a store whose calls table is schema version 2's, the
// store issue 13 measured: indexes on start and on (namespace, function,
// start), no rollups. asItWas also writes as that store did: through the
// pool of connections, each with SQLite's default cache and a WAL
// checkpoint every 1000 pages; otherwise it writes as this store does.
// insertRawCalls fills it.
func openSchema2(t *testing.T, asItWas bool) *Store {
	s, path := MustOpen(t)
	if asItWas {
		db, err := sql.Open("sqlite", path+"?_busy_timeout=5000&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		s = &Store{db: db, wdb: db, logger: s.logger}
	}
	for _, q := range []string{`DROP TABLE calls`, migrations[0][:strings.Index(migrations[0], "CREATE TABLE instances")], migrations[1]} {
		if _, err := s.wdb.ExecContext(context.Background(), q); err != nil {
			t.Fatalf("schema version 2: %v", err)
		}
	}
	return s
}

// insertRawCalls inserts recs as the store did before rollups: the
// records alone, in one transaction.
func insertRawCalls(t *testing.T, s *Store, recs []gust.CallRecord) {
	t.Helper()
	_, err := s.write(context.Background(), func(tx *sql.Tx) (int, error) {
		_, _, err := insertRows(context.Background(), tx, insertCalls, callRow, ``, len(recs), callArgs(recs))
		return 0, err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64) + " ms"
}

func humanCount(n int) string {
	switch {
	case n%1000000 == 0:
		return strconv.Itoa(n/1000000) + "M"
	case n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

func mapSlice[T, U any](in []T, f func(T) U) []U {
	out := make([]U, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}
