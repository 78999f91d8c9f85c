package gateway_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/gateway/ui"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/gustfaas/gust/internal/sqlite"
	"go.uber.org/zap/zaptest"
)

// TestUI_Page checks the dashboard as a browser first meets it: the Basic
// challenge without credentials, the page and its files with them, a 404
// for a file that is not there.
func TestUI_Page(t *testing.T) {
	a := MustOpenAuthGateway(t)

	for _, hdr := range [][]string{nil, basicAuth("admin", "wrong")} {
		status, h, body := MustDo(t, http.MethodGet, a.url("/ui/"), "", hdr...)
		wantRefused(t, "GET /ui/", status, h, body, http.StatusUnauthorized)
	}
	status, h, body := MustDo(t, http.MethodGet, a.url("/ui/"), "", a.admin()...)
	if status != http.StatusOK || h.Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(string(body), "<html") {
		t.Fatalf("GET /ui/ as admin: %d %q %.80s, want 200 and an HTML page", status, h.Get("Content-Type"), body)
	}
	if h.Get("Content-Security-Policy") != ui.CSP {
		t.Errorf("GET /ui/: CSP %q, want %q", h.Get("Content-Security-Policy"), ui.CSP)
	}
	for path, ctype := range map[string]string{
		"/ui/app.js": "text/javascript; charset=utf-8", "/ui/chart.js": "text/javascript; charset=utf-8",
		"/ui/style.css": "text/css; charset=utf-8", "/ui/index.html": "text/html; charset=utf-8",
	} {
		status, h, _ := MustDo(t, http.MethodGet, a.url(path), "", a.admin()...)
		if status != http.StatusOK || h.Get("Content-Type") != ctype {
			t.Errorf("GET %s: %d %q, want 200 %q", path, status, h.Get("Content-Type"), ctype)
		}
	}
	if status, _, _ := MustDo(t, http.MethodGet, a.url("/ui/nosuch.js"), "", a.admin()...); status != http.StatusNotFound {
		t.Errorf("GET /ui/nosuch.js: %d, want 404", status)
	}
	// /ui leads to /ui/ (the client follows the redirect).
	if status, _, body := MustDo(t, http.MethodGet, a.url("/ui"), "", a.admin()...); status != http.StatusOK || !strings.Contains(string(body), "<html") {
		t.Errorf("GET /ui: %d, want the page after a redirect", status)
	}
	// The page's own fetches are same-origin: the browser sends an Origin
	// of this host and Sec-Fetch-Site same-origin, which pass.
	status, _, body = MustDo(t, http.MethodGet, a.url("/ui/api/pools"), "", append(a.admin(),
		"Origin", strings.TrimSuffix(a.url(""), "/"), "Sec-Fetch-Site", "same-origin")...)
	if status != http.StatusOK {
		t.Errorf("same-origin GET /ui/api/pools: %d %s", status, body)
	}
}

// TestUI_Pools checks GET /ui/api/pools: each worker's pool of each
// function, and a key sees only its own namespace's.
func TestUI_Pools(t *testing.T) {
	a := MustOpenAuthGateway(t)
	ctx := context.Background()
	for key, p := range map[string]gust.PoolStatus{
		"team-a.fa.w1": {Worker: "w1", Replicas: 2, Available: 1, InFlight: 1, Invocations: 7},
		"team-b.fb.w1": {Worker: "w1", Replicas: 1, Available: 1},
	} {
		if _, err := a.state.Status.Put(ctx, key, p); err != nil {
			t.Fatal(err)
		}
	}
	status, _, body := MustDo(t, http.MethodGet, a.url("/ui/api/pools"), "", a.admin()...)
	all := MustDecode[[]ui.Pool](t, body)
	if status != http.StatusOK || len(all) != 2 || all[0].Namespace != "team-a" || all[0].Function != "fa" ||
		all[0].Worker != "w1" || all[0].Replicas != 2 || all[0].Available != 1 || all[0].InFlight != 1 {
		t.Fatalf("admin's pools: %d %s", status, body)
	}
	status, _, body = MustDo(t, http.MethodGet, a.url("/ui/api/pools"), "", bearerAuth(a.keyB)...)
	mine := MustDecode[[]ui.Pool](t, body)
	if status != http.StatusOK || len(mine) != 1 || mine[0].Namespace != "team-b" {
		t.Fatalf("key of team-b's pools: %d %s, want team-b's only", status, body)
	}
	status, h, body := MustDo(t, http.MethodGet, a.url("/ui/api/pools?namespace=team-a"), "", bearerAuth(a.keyB)...)
	wantRefused(t, "key of team-b lists team-a's pools", status, h, body, http.StatusForbidden)
}

// TestUI_Activity checks GET /ui/api/activity against call records in a
// real billing store: calls, errors, cold starts and latency by minute.
func TestUI_Activity(t *testing.T) {
	store, err := sqlite.Open(filepath.Join(t.TempDir(), "billing.db"), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := MustOpenGateway(t, gateway.Config{}, func(_ *env, gw *gateway.Server) { gw.WithBilling(store, billing.Pricing{}) })

	now := time.Now().UTC()
	rec := func(id, fn string, ago time.Duration, ms int, outcome string, cold bool) gust.CallRecord {
		start := now.Add(-ago)
		return gust.CallRecord{CallID: id, Namespace: "openfaas-fn", Function: fn, Start: start, End: start.Add(time.Duration(ms) * time.Millisecond),
			DurationNs: int64(ms) * 1e6, BilledNs: int64(ms) * 1e6, MemoryMiB: 128, ColdStart: cold, InitNs: 200e6, Status: 200, Outcome: outcome}
	}
	recs := []gust.CallRecord{
		rec("c1", "f", 0, 10, gust.OutcomeOK, true),
		rec("c2", "f", 0, 30, gust.OutcomeOK, false),
		rec("c3", "f", 0, 20, gust.OutcomeError, false),
		rec("c4", "f", 30*time.Minute, 5, gust.OutcomeOK, false),
		rec("c5", "g", 0, 99, gust.OutcomeOK, false),
		rec("c6", "f", 2*time.Hour, 5, gust.OutcomeOK, false), // outside the hour
	}
	if err := store.AddCalls(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	status, _, body := MustDo(t, http.MethodGet, e.url("/ui/api/activity?function=f"), "")
	act := MustDecode[ui.Activity](t, body)
	if status != http.StatusOK || len(act.Buckets) != 60 || act.Records != 4 || act.Truncated {
		t.Fatalf("activity: %d %s", status, body)
	}
	last := act.Buckets[59]
	if last.Calls != 3 || last.Errors != 1 || last.ColdStarts != 1 || last.P50Ms != 20 || last.P95Ms != 30 || last.MaxMs != 30 || last.InitMs != 200 {
		t.Errorf("the last minute: %+v, want 3 calls, 1 error, 1 cold start (init 200 ms), p50 20 ms, p95 30 ms", last)
	}
	if b := act.Buckets[29]; b.Calls != 1 || b.P50Ms != 5 {
		t.Errorf("30 minutes ago: %+v, want 1 call of 5 ms", b)
	}
	if status, _, body := MustDo(t, http.MethodGet, e.url("/ui/api/activity?function=Not_Valid"), ""); status != http.StatusBadRequest {
		t.Errorf("activity of an invalid name: %d %s, want 400", status, body)
	}
}
