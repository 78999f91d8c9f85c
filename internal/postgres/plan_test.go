package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/gustfaas/gust/internal/billing/storetest"
	"github.com/gustfaas/gust/internal/postgres/pgtest"
	"go.uber.org/zap/zaptest"
)

// TestStore_CallsPlan: on a table of some size with fresh statistics,
// every later page of the listing, with each filter combination, seeks
// an index to its cursor: the row value is an index condition, and no
// plan scans the table. (Where the statistics say few rows match the
// filters, PostgreSQL may read those few from a bitmap and sort them
// rather than walk an index in order; where many match, it walks the
// index backwards and stops after a page. Either starts at the cursor
// rather than reading every older row of the table. The plans are
// logged.)
func TestStore_CallsPlan(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.MustSchema(t), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	base := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	outcomes := []string{gust.OutcomeOK, gust.OutcomeOK, gust.OutcomeOK, gust.OutcomeOK, gust.OutcomeOK,
		gust.OutcomeOK, gust.OutcomeOK, gust.OutcomeOK, gust.OutcomeError, gust.OutcomeTimeout}
	for b := range 20 {
		batch := make([]gust.CallRecord, 2000)
		for i := range batch {
			n := b*len(batch) + i
			batch[i] = storetest.Rec(fmt.Sprintf("c%06d", n), fmt.Sprintf("ns%d", n%20), fmt.Sprintf("fn%d", n%97),
				base.Add(time.Duration(n)*time.Second), time.Millisecond, 128, outcomes[n%len(outcomes)], false)
		}
		storetest.MustAddCalls(t, s, batch...)
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE calls`); err != nil {
		t.Fatal(err)
	}
	cursor := billing.EncodeCursor(base.Add(30000*time.Second).UnixNano(), "c030000")
	for _, f := range []gust.CallFilter{
		{},
		{Namespace: "ns1"},
		{Namespace: "ns1", Function: "fn2"},
		{Function: "fn2"},
		{Outcome: gust.OutcomeError},
		{Namespace: "ns1", Outcome: gust.OutcomeError},
		{Function: "fn2", Outcome: gust.OutcomeError},
		{Outcome: gust.OutcomeOK},
	} {
		f.Cursor = cursor
		query, args, err := callsQuery(f, 100)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := s.pool.Query(ctx, `EXPLAIN `+query, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, line)
		}
		rows.Close()
		p := strings.Join(plan, "\n")
		if strings.Contains(p, "Seq Scan") || !strings.Contains(p, "Index Cond: ") ||
			!strings.Contains(p, "ROW(start_ns, call_id) < ROW(") {
			t.Errorf("%+v: the page does not seek an index to its cursor:\n%s", f, p)
		} else {
			t.Logf("%+v:\n%s", f, p)
		}
	}
}
