package main

import (
	"context"
	"testing"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/postgres"
	"github.com/gustfaas/gust/internal/postgres/pgtest"
)

// TestNoLossKillUpPostgres is TestNoLossKillUp with the billing store on
// PostgreSQL (--billing-store): gust up killed with SIGKILL mid-load
// loses no record and stores none twice; a transaction the kill cut off
// is rolled back by the server and its records redelivered. The store's
// own tables are then checked for what the API reported: one row per
// call id, rollups equal to the records.
func TestNoLossKillUpPostgres(t *testing.T) {
	u := pgtest.MustSchema(t)
	noLossKillUp(t, "--billing-store", u)

	ctx := context.Background()
	s, err := postgres.Open(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	var all []gust.CallRecord
	f := gust.CallFilter{Limit: 1000}
	for {
		recs, next, err := s.Calls(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, recs...)
		if next == "" {
			break
		}
		f.Cursor = next
	}
	if len(all) == 0 {
		t.Fatal("no call records in the PostgreSQL store")
	}
	// Reports read the rollups for whole hours and days: over an open
	// range they count what the records count.
	rows, _, err := s.Usage(ctx, gust.CallFilter{}, gust.GroupByNamespace)
	if err != nil {
		t.Fatal(err)
	}
	var requests int64
	for _, r := range rows {
		requests += r.Requests
	}
	if requests != int64(len(all)) {
		t.Errorf("report counts %d requests, the store holds %d records", requests, len(all))
	}
	t.Logf("PostgreSQL store: %d records, report agrees", len(all))
}
