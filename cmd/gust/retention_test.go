package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/gustfaas/gust/internal/sqlite"
)

func TestParseRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "90d": 90 * 24 * time.Hour, "2160h": 2160 * time.Hour, "1h": time.Hour} {
		if got, err := parseRetention(in); err != nil || got != want {
			t.Errorf("parseRetention(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1d", "-2h", "30m", "1.5d"} {
		if _, err := parseRetention(in); err == nil {
			t.Errorf("parseRetention(%q) took it", in)
		}
	}
}

// TestBillingRetentionAndExport: with --billing-retention, gust up
// deletes call records older than the retention age on its own; the
// billing report over that range still counts them (from rollups) and
// says which part is aggregate-only; `gust billing export` writes the
// records that are kept, as NDJSON and as CSV.
func TestBillingRetentionAndExport(t *testing.T) {
	defer func(d time.Duration) { pruneEvery = d }(pruneEvery)
	pruneEvery = 200 * time.Millisecond
	ctx := context.Background()
	// 120 calls of one function, one an hour over the last five days, in
	// the store before gust up starts on it (records that arrive after
	// their hour was pruned are left out).
	dir := t.TempDir()
	now := time.Now().UTC()
	var recs []gust.CallRecord
	old := 0
	for i := range 120 {
		start := now.Add(-time.Duration(i)*time.Hour - 30*time.Minute)
		if start.Before(now.Add(-48 * time.Hour).Truncate(time.Hour)) {
			old++
		}
		recs = append(recs, gust.CallRecord{CallID: fmt.Sprintf("old-%03d", i), Namespace: gust.DefaultNamespace,
			Function: "archived", Version: 1, Image: "img", Worker: "w", Instance: "i", Trigger: gust.TriggerHTTP,
			Start: start, End: start.Add(time.Millisecond), DurationNs: 1e6, BilledNs: 1e6, MemoryMiB: 128,
			Status: 200, Outcome: gust.OutcomeOK})
	}
	pre, err := sqlite.Open(filepath.Join(dir, "billing.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pre.AddCalls(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if err := pre.Close(); err != nil {
		t.Fatal(err)
	}
	m := MustRunUp(t, dir, func(m *UpMain) { m.BillingRetention = 48 * time.Hour })
	store := m.Metering.Store
	deadline := time.Now().Add(20 * time.Second)
	for {
		all, _, err := store.Calls(ctx, gust.CallFilter{Function: "archived", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) == len(recs)-old {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records kept after pruning, want %d (records older than 48 h deleted)", len(all), len(recs)-old)
		}
		time.Sleep(100 * time.Millisecond)
	}

	from := now.Add(-6 * 24 * time.Hour).Format(time.RFC3339)
	st, hdr, body := call(t, "GET", gw(m)+"/system/billing?function=archived&group_by=day&from="+url.QueryEscape(from), "")
	if st != 200 {
		t.Fatalf("billing report: %d %s", st, body)
	}
	var rep billing.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Total.Requests != int64(len(recs)) {
		t.Errorf("report counts %d requests, want %d (pruned ones from rollups)", rep.Total.Requests, len(recs))
	}
	if rep.AggregateOnly == nil || rep.AggregateOnly.To == nil || hdr.Get("X-Gust-Aggregate-Only") == "" {
		t.Errorf("report over a pruned range does not say it is aggregate-only: %s", body)
	}

	code, out, errOut := gustCLI(t, gw(m), "", "billing", "export", "--function", "archived", "--from", from)
	if code != 0 {
		t.Fatalf("gust billing export: %d %s", code, errOut)
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var r gust.CallRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || !strings.HasPrefix(r.CallID, "old-") || r.Function != "archived" {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		n++
	}
	if n != len(recs)-old || !strings.Contains(errOut, fmt.Sprintf("exported %d", n)) {
		t.Errorf("NDJSON export: %d records (stderr %q), want %d", n, errOut, len(recs)-old)
	}

	code, out, errOut = gustCLI(t, gw(m), "", "billing", "export", "--function", "archived", "--format", "csv")
	if code != 0 {
		t.Fatalf("gust billing export --format csv: %d %s", code, errOut)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(recs)-old+1 || strings.Join(rows[0], ",") != strings.Join(billing.CallColumns, ",") {
		t.Errorf("CSV export: %d rows, header %v; want %d records and a header", len(rows), rows[0], len(recs)-old)
	}

	code, _, errOut = gustCLI(t, gw(m), "", "billing", "export", "--format", "xml")
	if code != 2 || !strings.Contains(errOut, "--format") {
		t.Errorf("export --format xml: exit %d, %q; want 2 and a message naming --format", code, errOut)
	}
}
