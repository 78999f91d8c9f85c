package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/sqlite"
	"github.com/shopspring/decimal"
)

// mtrPrices are the prices the tests recompute reports with.
type mtrPrices struct{ perMillionRequests, perGBSecond decimal.Decimal }

// mtrListPrices are the default list prices, written out independently of
// billing.DefaultPricing.
var mtrListPrices = mtrPrices{decimal.RequireFromString("0.20"), decimal.RequireFromString("0.0000166667")}

// mtrID returns a fresh caller-chosen call id.
func mtrID(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// mtrAnswer is what a caller saw of one call: status, headers with the
// trailers merged in, and body.
type mtrAnswer struct {
	ID     string
	Fn     string
	Status int
	Header http.Header
	Body   string
	// Outcome is the outcome the test expects in the record.
	Outcome string
}

// mtrCall calls function fn (with query/path suffix) under the call id id
// and returns what came back. Trailers (set on streamed answers) are
// merged into the headers.
func mtrCall(tb testing.TB, m *UpMain, fn, suffix, id, outcome string) mtrAnswer {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, gw(m)+"/function/"+fn+suffix, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set(gust.HeaderCallID, id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("call %s%s: %v", fn, suffix, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("call %s%s: read body: %v", fn, suffix, err)
	}
	h := resp.Header.Clone()
	for k, v := range resp.Trailer {
		h[k] = v
	}
	return mtrAnswer{ID: id, Fn: fn, Status: resp.StatusCode, Header: h, Body: string(b), Outcome: outcome}
}

// secondsRE is the form of the duration headers: seconds with exactly 9
// decimals.
var secondsRE = regexp.MustCompile(`^[0-9]+\.[0-9]{9}$`)

// headerNanos reads a duration header (seconds with 9 decimals) as whole
// nanoseconds, without going through a float: the point is dropped.
func headerNanos(h http.Header, name string) (int64, error) {
	v := h.Get(name)
	if !secondsRE.MatchString(v) {
		return 0, fmt.Errorf("header %s=%q: want seconds with 9 decimals", name, v)
	}
	n, err := strconv.ParseInt(strings.Replace(v, ".", "", 1), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("header %s=%q: %v", name, v, err)
	}
	return n, nil
}

// mtrGet GETs a gateway path and returns status and body.
func mtrGet(tb testing.TB, m *UpMain, path string) (int, string) {
	tb.Helper()
	st, _, body := call(tb, http.MethodGet, gw(m)+path, "")
	return st, body
}

// waitRecords polls GET /system/invocations/{id} until every id has its
// record, and returns them.
func waitRecords(tb testing.TB, m *UpMain, ids []string, within time.Duration) map[string]gust.CallRecord {
	tb.Helper()
	recs := map[string]gust.CallRecord{}
	check.For(tb, within, 50*time.Millisecond, func() error {
		for _, id := range ids {
			if _, ok := recs[id]; ok {
				continue
			}
			st, body := mtrGet(tb, m, "/system/invocations/"+url.PathEscape(id))
			if st == http.StatusNotFound {
				return fmt.Errorf("no record of call %s yet", id)
			}
			if st != http.StatusOK {
				tb.Fatalf("GET /system/invocations/%s: %d %s", id, st, body)
			}
			var r gust.CallRecord
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				tb.Fatalf("record of %s: %v in %s", id, err, body)
			}
			recs[id] = r
		}
		return nil
	})
	return recs
}

// listAllRecords pages through GET /system/invocations (of function fn,
// or all when empty) with page size limit and checks the pages are newest
// first, without repeats.
func listAllRecords(tb testing.TB, m *UpMain, fn string, limit int) []gust.CallRecord {
	tb.Helper()
	var all []gust.CallRecord
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			tb.Fatal("invocation listing does not end")
		}
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if fn != "" {
			q.Set("function", fn)
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		st, body := mtrGet(tb, m, "/system/invocations?"+q.Encode())
		if st != http.StatusOK {
			tb.Fatalf("list invocations: %d %s", st, body)
		}
		var page struct {
			Items      []gust.CallRecord `json:"items"`
			NextCursor string            `json:"nextCursor"`
		}
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			tb.Fatalf("list invocations: %v in %s", err, body)
		}
		if len(page.Items) > limit {
			tb.Fatalf("page of %d records, limit %d", len(page.Items), limit)
		}
		for _, r := range page.Items {
			if seen[r.CallID] {
				tb.Fatalf("call %s listed twice", r.CallID)
			}
			seen[r.CallID] = true
			if n := len(all); n > 0 {
				p := all[n-1]
				if r.Start.After(p.Start) || r.Start.Equal(p.Start) && r.CallID > p.CallID {
					tb.Errorf("listing not newest first: %s (%s) after %s (%s)", r.CallID, r.Start, p.CallID, p.Start)
				}
			}
			all = append(all, r)
		}
		if page.NextCursor == "" {
			return all
		}
		if len(page.Items) != limit {
			tb.Fatalf("a page of %d records with a next cursor; limit %d", len(page.Items), limit)
		}
		cursor = page.NextCursor
	}
}

// halfUp rounds a non-negative d half-up to places decimals.
func halfUp(d decimal.Decimal, places int32) decimal.Decimal {
	return d.Shift(places).Add(decimal.New(5, -1)).Floor().Shift(-places)
}

// expRow is the exact usage of one group, as the test computes it.
type expRow struct {
	requests, errors, coldStarts int64
	durationNs, billedNs         int64
	gbSeconds                    decimal.Decimal // exact
	requestCost, computeCost     decimal.Decimal // exact
}

func (e *expRow) add(r gust.CallRecord, p mtrPrices) {
	e.requests++
	if r.Outcome != gust.OutcomeOK {
		e.errors++
	}
	if r.ColdStart {
		e.coldStarts++
	}
	e.durationNs += r.DurationNs
	e.billedNs += r.BilledNs
	e.requestCost = e.requestCost.Add(p.perMillionRequests.Shift(-6))
	// memory MiB / 1024 × billed ns / 1e9, exactly: the quotient has at
	// most 9 + 10 decimals.
	num := decimal.NewFromInt(r.MemoryMiB).Mul(decimal.NewFromInt(r.BilledNs))
	den := decimal.NewFromInt(1024 * 1_000_000_000)
	gbs := num.DivRound(den, 40)
	if !gbs.Mul(den).Equal(num) {
		panic("GB-seconds not exact")
	}
	e.gbSeconds = e.gbSeconds.Add(gbs)
	e.computeCost = e.computeCost.Add(gbs.Mul(p.perGBSecond))
}

func (e *expRow) sum(o expRow) {
	e.requests += o.requests
	e.errors += o.errors
	e.coldStarts += o.coldStarts
	e.durationNs += o.durationNs
	e.billedNs += o.billedNs
	e.gbSeconds = e.gbSeconds.Add(o.gbSeconds)
	e.requestCost = e.requestCost.Add(o.requestCost)
	e.computeCost = e.computeCost.Add(o.computeCost)
}

// cells are the displayed values of the row, in the CSV column order:
// counts, seconds to 9 decimals, GB-seconds and money rounded half-up to 6.
func (e expRow) cells(group string) []string {
	return []string{
		group,
		strconv.FormatInt(e.requests, 10),
		strconv.FormatInt(e.errors, 10),
		strconv.FormatInt(e.coldStarts, 10),
		decimal.New(e.durationNs, -9).StringFixed(9),
		decimal.New(e.billedNs, -9).StringFixed(9),
		halfUp(e.gbSeconds, 6).StringFixed(6),
		halfUp(e.requestCost, 6).StringFixed(6),
		halfUp(e.computeCost, 6).StringFixed(6),
		halfUp(e.requestCost.Add(e.computeCost), 6).StringFixed(6),
	}
}

// repRow is a report row as the API answers it.
type repRow struct {
	Group           string          `json:"group"`
	Requests        int64           `json:"requests"`
	Errors          int64           `json:"errors"`
	ColdStarts      int64           `json:"coldStarts"`
	DurationSeconds decimal.Decimal `json:"durationSeconds"`
	BilledSeconds   decimal.Decimal `json:"billedSeconds"`
	GBSeconds       decimal.Decimal `json:"gbSeconds"`
	RequestCost     decimal.Decimal `json:"requestCost"`
	ComputeCost     decimal.Decimal `json:"computeCost"`
	TotalCost       decimal.Decimal `json:"totalCost"`
}

type repInstance struct {
	Namespace       string          `json:"namespace"`
	Function        string          `json:"function"`
	MemoryMiB       int64           `json:"memoryMiB"`
	Instances       int64           `json:"instances"`
	InstanceSeconds decimal.Decimal `json:"instanceSeconds"`
	GBSeconds       decimal.Decimal `json:"gbSeconds"`
	// Pointers: a report without the paused part decodes as nil.
	PausedSeconds   *decimal.Decimal `json:"pausedSeconds"`
	PausedGBSeconds *decimal.Decimal `json:"pausedGBSeconds"`
	Cost            decimal.Decimal  `json:"cost"`
}

type repJSON struct {
	GroupBy   string        `json:"groupBy"`
	Currency  string        `json:"currency"`
	Formula   string        `json:"formula"`
	Groups    []repRow      `json:"groups"`
	Total     repRow        `json:"total"`
	Instances []repInstance `json:"instances"`
}

// cells formats an API row the way the test formats its own.
func (r repRow) cells() []string {
	return []string{
		r.Group,
		strconv.FormatInt(r.Requests, 10),
		strconv.FormatInt(r.Errors, 10),
		strconv.FormatInt(r.ColdStarts, 10),
		r.DurationSeconds.StringFixed(9),
		r.BilledSeconds.StringFixed(9),
		r.GBSeconds.StringFixed(6),
		r.RequestCost.StringFixed(6),
		r.ComputeCost.StringFixed(6),
		r.TotalCost.StringFixed(6),
	}
}

// checkRow compares an API row to the expected exact row: equal values
// (decimal.Equal) and no more than 6 decimals of money.
func checkRow(tb testing.TB, got repRow, want expRow, group string) {
	tb.Helper()
	eq := func(name string, g, w decimal.Decimal) {
		if !g.Equal(w) {
			tb.Errorf("%s %s: got %s, want %s", group, name, g, w)
		}
	}
	if got.Group != group {
		tb.Errorf("row %q, want %q", got.Group, group)
	}
	if got.Requests != want.requests || got.Errors != want.errors || got.ColdStarts != want.coldStarts {
		tb.Errorf("%s: requests/errors/coldStarts %d/%d/%d, want %d/%d/%d", group,
			got.Requests, got.Errors, got.ColdStarts, want.requests, want.errors, want.coldStarts)
	}
	eq("durationSeconds", got.DurationSeconds, decimal.New(want.durationNs, -9))
	eq("billedSeconds", got.BilledSeconds, decimal.New(want.billedNs, -9))
	eq("gbSeconds", got.GBSeconds, halfUp(want.gbSeconds, 6))
	eq("requestCost", got.RequestCost, halfUp(want.requestCost, 6))
	eq("computeCost", got.ComputeCost, halfUp(want.computeCost, 6))
	eq("totalCost", got.TotalCost, halfUp(want.requestCost.Add(want.computeCost), 6))
	for name, d := range map[string]decimal.Decimal{"gbSeconds": got.GBSeconds, "requestCost": got.RequestCost, "computeCost": got.ComputeCost, "totalCost": got.TotalCost} {
		if d.Exponent() < -6 && !d.Equal(d.Round(6)) {
			tb.Errorf("%s %s=%s has more than 6 decimals", group, name, d)
		}
	}
}

// expectedReport groups records by namespace/function.
func expectedReport(recs []gust.CallRecord, p mtrPrices) (map[string]*expRow, expRow) {
	groups := map[string]*expRow{}
	for _, r := range recs {
		k := r.Namespace + "/" + r.Function
		if groups[k] == nil {
			groups[k] = &expRow{}
		}
		groups[k].add(r, p)
	}
	var total expRow
	for _, g := range groups {
		total.sum(*g)
	}
	return groups, total
}

// getReport fetches /system/billing with query q as JSON.
func getReport(tb testing.TB, m *UpMain, q string) (repJSON, string) {
	tb.Helper()
	st, body := mtrGet(tb, m, "/system/billing?"+q)
	if st != http.StatusOK {
		tb.Fatalf("GET /system/billing?%s: %d %s", q, st, body)
	}
	var rep repJSON
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		tb.Fatalf("report: %v in %s", err, body)
	}
	return rep, body
}

// TestMeteringExact sends a known mix of calls and checks every record
// against the answer the caller got, then the report and its CSV against
// the test's own pricing of those records.
func TestMeteringExact(t *testing.T) {
	m := MustRunUp(t, "")
	const sleepFn, misFn = "msleep", "mmis"
	mustDeploy(t, m, sleepFn, imageTag("sleep"), map[string]string{gust.LabelIdleTimeout: "2s"})
	mustDeploy(t, m, misFn, imageTag("misbehave"), map[string]string{
		gust.LabelTimeout: "1s", gust.LabelScaleMax: "1", gust.LabelHealth: "/healthy",
	})

	var answers []mtrAnswer
	do := func(fn, suffix, outcome string, wantStatus int) mtrAnswer {
		t.Helper()
		a := mtrCall(t, m, fn, suffix, mtrID("exact"), outcome)
		if a.Status != wantStatus {
			t.Fatalf("%s%s: got %d %s, want %d", fn, suffix, a.Status, a.Body, wantStatus)
		}
		if got := a.Header.Get(gust.HeaderCallID); got != a.ID {
			t.Errorf("%s%s: X-Call-Id %q, want the caller's %q", fn, suffix, got, a.ID)
		}
		answers = append(answers, a)
		return a
	}
	for range 4 {
		do(sleepFn, "", gust.OutcomeOK, 200)
	}
	for range 3 {
		do(sleepFn, "?ms=120", gust.OutcomeOK, 200)
	}
	do(misFn, "", gust.OutcomeOK, 200)
	do(misFn, "?status=500", gust.OutcomeError, 500)
	do(misFn, "?status=404", gust.OutcomeOK, 404)
	do(misFn, "?stream=3", gust.OutcomeOK, 200) // figures come as trailers
	t0 := time.Now()
	timeout := do(misFn, "?hang=1", gust.OutcomeTimeout, 504)
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("504 after %s; gust.timeout is 1s", d)
	}
	// The hung instance passes its readiness check again and takes the
	// next call.
	do(misFn, "", gust.OutcomeOK, 200)
	crash := do(misFn, "?crash=1", gust.OutcomeCrashed, 502)

	// Cold: wait for the idle timeout to take the sleep function to zero.
	waitContainers(t, m, sleepFn, 0, 15*time.Second)
	cold := do(sleepFn, "?ms=120", gust.OutcomeOK, 200)
	if cold.Header.Get(gust.HeaderColdStart) != "true" {
		t.Errorf("call at zero instances: X-Gust-Cold-Start %q, want true", cold.Header.Get(gust.HeaderColdStart))
	}
	warm := do(sleepFn, "", gust.OutcomeOK, 200)
	if warm.Header.Get(gust.HeaderColdStart) != "" {
		t.Errorf("call after the cold one: X-Gust-Cold-Start %q, want none", warm.Header.Get(gust.HeaderColdStart))
	}

	ids := make([]string, len(answers))
	for i, a := range answers {
		ids[i] = a.ID
	}
	recs := waitRecords(t, m, ids, 15*time.Second)

	for _, a := range answers {
		r := recs[a.ID]
		name := a.Fn + " " + a.ID
		// The caller's X-Call-Id is kept as callerId; the record's own
		// id is Gust's, unique per call.
		if r.CallerID != a.ID || r.CallID == a.ID || r.CallID == "" || r.Namespace != gust.DefaultNamespace || r.Function != a.Fn {
			t.Errorf("%s: record names %s (caller %s) %s/%s", name, r.CallID, r.CallerID, r.Namespace, r.Function)
		}
		if r.Status != a.Status {
			t.Errorf("%s: record status %d, answer %d", name, r.Status, a.Status)
		}
		if r.Outcome != a.Outcome {
			t.Errorf("%s: outcome %q, want %q", name, r.Outcome, a.Outcome)
		}
		if cold := a.Header.Get(gust.HeaderColdStart) == "true"; r.ColdStart != cold {
			t.Errorf("%s: record coldStart %v, answer X-Gust-Cold-Start %q", name, r.ColdStart, a.Header.Get(gust.HeaderColdStart))
		}
		if r.ColdStart && r.InitNs <= 0 {
			t.Errorf("%s: cold start with initNs %d", name, r.InitNs)
		}
		billed, err := headerNanos(a.Header, gust.HeaderBilled)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if r.BilledNs != billed {
			t.Errorf("%s: billedNs %d, header %s", name, r.BilledNs, a.Header.Get(gust.HeaderBilled))
		}
		dur, err := headerNanos(a.Header, gust.HeaderDuration)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if r.DurationNs != dur {
			t.Errorf("%s: durationNs %d, header %s", name, r.DurationNs, a.Header.Get(gust.HeaderDuration))
		}
		if want := int64(gust.BilledDuration(time.Duration(r.DurationNs), time.Millisecond)); r.BilledNs != want || r.BilledNs <= 0 {
			t.Errorf("%s: billedNs %d for durationNs %d, want %d", name, r.BilledNs, r.DurationNs, want)
		}
		// End - Start is the duration up to clock jitter (see
		// EndMinusStartIsDuration below).
		if got := r.End.Sub(r.Start); got < 0 || (got-time.Duration(r.DurationNs)).Abs() > time.Millisecond {
			t.Errorf("%s: end - start %s, durationNs %d", name, got, r.DurationNs)
		}
		if r.MemoryMiB != 128 || r.Trigger != gust.TriggerHTTP {
			t.Errorf("%s: memoryMiB %d trigger %q, want 128 http", name, r.MemoryMiB, r.Trigger)
		}
		if r.Worker != m.Worker.ID || r.Instance == "" || r.Version == 0 || !strings.HasSuffix(r.Image, ":e2e") {
			t.Errorf("%s: worker %q instance %q version %d image %q", name, r.Worker, r.Instance, r.Version, r.Image)
		}
		wantOut := int64(len(a.Body))
		if a.Outcome == gust.OutcomeTimeout || a.Outcome == gust.OutcomeCrashed {
			wantOut = 0 // the caller got Gust's error, not the function's answer
		}
		if r.BytesOut != wantOut || r.BytesIn != 0 {
			t.Errorf("%s: bytesIn/Out %d/%d, want 0/%d", name, r.BytesIn, r.BytesOut, wantOut)
		}
	}
	t.Run("EndMinusStartIsDuration", func(t *testing.T) {
		for _, a := range answers {
			if r := recs[a.ID]; int64(r.End.Sub(r.Start)) != r.DurationNs {
				t.Errorf("%s: end - start %dns, durationNs %d", a.ID, int64(r.End.Sub(r.Start)), r.DurationNs)
			}
		}
	})
	if r := recs[timeout.ID]; r.DurationNs < int64(time.Second) {
		t.Errorf("timed-out call lasted %dns, under its 1s timeout", r.DurationNs)
	}
	if r := recs[crash.ID]; r.Status != 502 || r.Outcome != gust.OutcomeCrashed {
		t.Errorf("crash record %d %s", r.Status, r.Outcome)
	}
	if r := recs[cold.ID]; !r.ColdStart || r.DurationNs < int64(120*time.Millisecond) {
		t.Errorf("cold call record: coldStart %v durationNs %d", r.ColdStart, r.DurationNs)
	}

	// The store holds exactly these records: the listing (several pages)
	// has them all and nothing else.
	listed := listAllRecords(t, m, "", 5)
	if len(listed) != len(answers) {
		t.Errorf("listing has %d records, want %d", len(listed), len(answers))
	}
	for _, r := range listed {
		if got, ok := recs[r.CallerID]; !ok || got.CallID != r.CallID {
			t.Errorf("listing has unexpected record %s (caller %s)", r.CallID, r.CallerID)
		}
	}
	// status= filters by outcome.
	st, body := mtrGet(t, m, "/system/invocations?status=timeout")
	if st != 200 || !strings.Contains(body, timeout.ID) || strings.Count(body, `"callId"`) != 1 {
		t.Errorf("status=timeout: %d %s, want only %s", st, body, timeout.ID)
	}

	all := make([]gust.CallRecord, 0, len(recs))
	for _, r := range recs {
		all = append(all, r)
	}
	groups, total := expectedReport(all, mtrListPrices)
	names := make([]string, 0, len(groups))
	for k := range groups {
		names = append(names, k)
	}
	sort.Strings(names)

	rep, _ := getReport(t, m, "group_by=function&format=json")
	if rep.GroupBy != "function" || rep.Currency != "USD" || !strings.Contains(rep.Formula, "half-up") {
		t.Errorf("report groupBy %q currency %q formula %q", rep.GroupBy, rep.Currency, rep.Formula)
	}
	if len(rep.Groups) != len(names) {
		t.Fatalf("report groups %+v, want %v", rep.Groups, names)
	}
	for i, name := range names {
		checkRow(t, rep.Groups[i], *groups[name], name)
	}
	checkRow(t, rep.Total, total, billing.TotalGroup)
	if want := int64(len(answers)); rep.Total.Requests != want {
		t.Errorf("total requests %d, want %d", rep.Total.Requests, want)
	}
	if rep.Total.Errors != 3 || rep.Total.ColdStarts < 1 {
		t.Errorf("total errors %d (want 3: 500, timeout, crash), cold starts %d (want >= 1)", rep.Total.Errors, rep.Total.ColdStarts)
	}
	t.Logf("report total: %v", rep.Total.cells())

	// CSV: the same rows, as the test formats them.
	st, csvBody := mtrGet(t, m, "/system/billing?group_by=function&format=csv")
	if st != 200 {
		t.Fatalf("csv report: %d %s", st, csvBody)
	}
	lines, err := csv.NewReader(strings.NewReader(csvBody)).ReadAll()
	if err != nil {
		t.Fatalf("csv report: %v in %s", err, csvBody)
	}
	wantCSV := [][]string{{"group", "requests", "errors", "coldStarts", "durationSeconds", "billedSeconds", "gbSeconds", "requestCost", "computeCost", "totalCost"}}
	for _, name := range names {
		wantCSV = append(wantCSV, groups[name].cells(name))
	}
	wantCSV = append(wantCSV, total.cells(billing.TotalGroup))
	if fmt.Sprint(lines) != fmt.Sprint(wantCSV) {
		t.Errorf("csv report:\n%s\nwant:\n%v", csvBody, wantCSV)
	}
	if got := lines[len(lines)-1]; fmt.Sprint(got) != fmt.Sprint(rep.Total.cells()) {
		t.Errorf("csv total %v, json total %v", got, rep.Total.cells())
	}

	// The idle-stopped sleep instance shows as held capacity, with the
	// part of it paused (none or some, never more than held).
	check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		rep, _ := getReport(t, m, "group_by=function")
		for _, in := range rep.Instances {
			if in.Function == sleepFn && in.Namespace == gust.DefaultNamespace && in.MemoryMiB == 128 && in.Instances >= 1 && in.InstanceSeconds.IsPositive() {
				if in.PausedSeconds == nil || in.PausedGBSeconds == nil || in.PausedSeconds.IsNegative() ||
					in.PausedSeconds.GreaterThan(in.InstanceSeconds) || in.PausedGBSeconds.GreaterThan(in.GBSeconds) {
					t.Fatalf("held capacity of %s: paused %v s, %v GB-s of %s s, %s GB-s; want both, within the held",
						sleepFn, in.PausedSeconds, in.PausedGBSeconds, in.InstanceSeconds, in.GBSeconds)
				}
				return nil
			}
		}
		return fmt.Errorf("no held capacity of %s in %+v", sleepFn, rep.Instances)
	})
}

// canonicalJSON re-encodes a JSON document so that two documents with the
// same content compare equal as strings.
func canonicalJSON(tb testing.TB, b []byte) string {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		tb.Fatalf("%v in %s", err, b)
	}
	out, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(out)
}

// TestMeteringReplayIdempotent rebuilds a billing store from the metering
// stream, twice, and gets the gateway's report both times.
func TestMeteringReplayIdempotent(t *testing.T) {
	// Prices high enough that the costs have all six decimals, and a 10ms
	// granularity.
	prices := mtrPrices{decimal.RequireFromString("7.77"), decimal.RequireFromString("1.2345678")}
	m := MustRunUp(t, "", func(m *UpMain) {
		m.Pricing = billing.DefaultPricing()
		m.Pricing.Currency = "EUR"
		m.Pricing.Default = billing.Prices{PerMillionRequests: prices.perMillionRequests, PerGBSecond: prices.perGBSecond}
		m.Pricing.Granularity = 10 * time.Millisecond
	})
	mustDeploy(t, m, "replayed", imageTag("sleep"), nil)
	mustDeploy(t, m, "replay-idle", imageTag("sleep"), map[string]string{gust.LabelIdleTimeout: "1s"})
	var ids []string
	for i, suffix := range []string{"", "?ms=30", "", "?ms=7", ""} {
		a := mtrCall(t, m, "replayed", suffix, mtrID(fmt.Sprintf("replay%d", i)), gust.OutcomeOK)
		if a.Status != 200 {
			t.Fatalf("call: %d %s", a.Status, a.Body)
		}
		ids = append(ids, a.ID)
	}
	if a := mtrCall(t, m, "replay-idle", "?ms=3", mtrID("replay-idle"), gust.OutcomeOK); a.Status != 200 {
		t.Fatalf("call: %d %s", a.Status, a.Body)
	} else {
		ids = append(ids, a.ID)
	}
	recs := waitRecords(t, m, ids, 15*time.Second)
	// Wait for the instance record of replay-idle too, so the report has
	// held capacity to replay.
	waitContainers(t, m, "replay-idle", 0, 15*time.Second)
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		rep, _ := getReport(t, m, "group_by=function")
		for _, in := range rep.Instances {
			if in.Function == "replay-idle" {
				return nil
			}
		}
		return fmt.Errorf("no held capacity of replay-idle yet: %+v", rep.Instances)
	})

	// The gateway's report, priced and rounded as the test does it.
	all := make([]gust.CallRecord, 0, len(recs))
	for _, r := range recs {
		if want := int64(gust.BilledDuration(time.Duration(r.DurationNs), 10*time.Millisecond)); r.BilledNs != want || want%int64(10*time.Millisecond) != 0 {
			t.Errorf("%s: billedNs %d for durationNs %d at 10ms granularity, want %d", r.CallID, r.BilledNs, r.DurationNs, want)
		}
		all = append(all, r)
	}
	groups, total := expectedReport(all, prices)
	rep, _ := getReport(t, m, "group_by=function")
	if rep.Currency != "EUR" || len(rep.Groups) != len(groups) {
		t.Fatalf("report currency %q groups %+v, want EUR and %d groups", rep.Currency, rep.Groups, len(groups))
	}
	for _, g := range rep.Groups {
		if want, ok := groups[g.Group]; !ok {
			t.Errorf("unexpected group %q", g.Group)
		} else {
			checkRow(t, g, *want, g.Group)
		}
	}
	checkRow(t, rep.Total, total, billing.TotalGroup)
	t.Logf("report total: %v", rep.Total.cells())

	queries := []struct{ q, groupBy string }{
		{"group_by=function", gust.GroupByFunction},
		{"group_by=namespace", gust.GroupByNamespace},
		{"group_by=hour", gust.GroupByHour},
	}
	apiReports := make([]string, len(queries))
	for i, q := range queries {
		_, body := getReport(t, m, q.q)
		apiReports[i] = canonicalJSON(t, []byte(body))
	}
	if rep, _ := getReport(t, m, "group_by=function"); rep.Total.Requests != int64(len(ids)) {
		t.Fatalf("report has %d requests, want %d", rep.Total.Requests, len(ids))
	}

	logger := testLogger(t)
	bus, err := natsbus.Connect(m.NATSURL(), "gust-test-replay", logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	store, err := sqlite.Open(filepath.Join(t.TempDir(), "replay.db"), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })

	replay := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		in := natsbus.NewIngest(bus, store, mtrID("replay"), nil, logger)
		if err := in.Start(ctx); err != nil {
			t.Fatal(err)
		}
		in.Drain(ctx)
		in.Close()
		if ctx.Err() != nil {
			t.Fatal("replay did not drain within 15s")
		}
	}
	compare := func(round string) {
		t.Helper()
		ctx := context.Background()
		for i, q := range queries {
			rows, inst, err := store.Usage(ctx, gust.CallFilter{}, q.groupBy)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(m.Pricing.Report(rows, inst, q.groupBy, nil, nil))
			if err != nil {
				t.Fatal(err)
			}
			if got := canonicalJSON(t, b); got != apiReports[i] {
				t.Errorf("%s, %s: replayed report\n%s\nwant the gateway's\n%s", round, q.q, got, apiReports[i])
			}
		}
		for _, id := range ids {
			r, err := store.Call(ctx, id)
			if err != nil {
				t.Errorf("%s: %v", round, err)
				continue
			}
			got, _ := json.Marshal(r)
			want, _ := json.Marshal(recs[id])
			if string(got) != string(want) {
				t.Errorf("%s: replayed record\n%s\nwant\n%s", round, got, want)
			}
		}
	}
	replay()
	compare("first replay")
	replay()
	compare("second replay")
	// The gateway's own store did not change meanwhile.
	for i, q := range queries {
		if _, body := getReport(t, m, q.q); canonicalJSON(t, []byte(body)) != apiReports[i] {
			t.Errorf("%s: the gateway's report changed during the replay", q.q)
		}
	}
}

// TestMeteringBadQueries: every bad report or listing parameter is a 400
// naming it; an unknown call is a 404.
func TestMeteringBadQueries(t *testing.T) {
	m := MustRunUp(t, "")
	cases := []struct{ path, field string }{
		{"/system/billing?from=yesterday-ish", "from"},
		{"/system/billing?to=bad", "to"},
		{"/system/billing?from=2026-11-28&to=2026-11-27T00:00:00Z", "from"},
		{"/system/billing?from=2026-11-27&to=2026-11-27", "from"},
		{"/system/billing?group_by=color", "group_by"},
		{"/system/billing?format=xml", "format"},
		{"/system/billing?function=Bad_Name", "function"},
		{"/system/invocations?limit=100000", "limit"},
		{"/system/invocations?limit=0", "limit"},
		{"/system/invocations?limit=abc", "limit"},
		{"/system/invocations?limit=-1", "limit"},
		{"/system/invocations?status=weird", "status"},
		{"/system/invocations?cursor=garbage", "cursor"},
		{"/system/invocations?cursor=" + url.QueryEscape("%%%"), "cursor"},
		{"/system/invocations?from=2026-13-01", "from"},
	}
	for _, c := range cases {
		st, body := mtrGet(t, m, c.path)
		if st != http.StatusBadRequest {
			t.Errorf("%s: got %d %s, want 400", c.path, st, body)
			continue
		}
		eb := errorBody(t, body)
		if eb.Field != c.field || eb.Error == "" || eb.Code == "" {
			t.Errorf("%s: error %+v, want field %q with a message and code", c.path, eb, c.field)
		}
	}
	// Good queries on an empty store answer 200.
	for _, p := range []string{
		"/system/billing?from=2026-01-01&to=2026-01-02T00:00:00Z&group_by=day&format=csv",
		"/system/billing?group_by=month",
		"/system/invocations?limit=1000&status=rejected",
	} {
		if st, body := mtrGet(t, m, p); st != 200 {
			t.Errorf("%s: got %d %s, want 200", p, st, body)
		}
	}
	st, body := mtrGet(t, m, "/system/invocations/no-such-call-"+mtrID("x"))
	if st != http.StatusNotFound || errorBody(t, body).Error == "" {
		t.Errorf("unknown call: got %d %s, want 404 with a JSON error", st, body)
	}
}

// promSample is one line of the Prometheus text format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

var promLineRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
var promLabelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// scrapeMetrics GETs /metrics and parses the samples.
func scrapeMetrics(tb testing.TB, m *UpMain) []promSample {
	tb.Helper()
	st, body := mtrGet(tb, m, "/metrics")
	if st != 200 {
		tb.Fatalf("/metrics: %d %s", st, body)
	}
	var out []promSample
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mm := promLineRE.FindStringSubmatch(line)
		if mm == nil {
			tb.Fatalf("/metrics: unparsable line %q", line)
		}
		v, err := strconv.ParseFloat(mm[3], 64)
		if err != nil {
			tb.Fatalf("/metrics: value in %q: %v", line, err)
		}
		labels := map[string]string{}
		for _, l := range promLabelRE.FindAllStringSubmatch(mm[2], -1) {
			labels[l[1]] = l[2]
		}
		out = append(out, promSample{name: mm[1], labels: labels, value: v})
	}
	return out
}

// promSum adds the samples named name whose labels include want; found
// says whether any matched.
func promSum(samples []promSample, name string, want map[string]string) (sum float64, found bool) {
next:
	for _, s := range samples {
		if s.name != name {
			continue
		}
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		sum += s.value
		found = true
	}
	return sum, found
}

// TestMetricsEndpoint: /metrics counts the calls by function, status and
// outcome, their durations, and the metering pipeline.
func TestMetricsEndpoint(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "counted", imageTag("sleep"), nil)
	mustDeploy(t, m, "counted-mis", imageTag("misbehave"), nil)
	const ok = 5
	var ids []string
	for i := range ok {
		a := mtrCall(t, m, "counted", fmt.Sprintf("?ms=%d", i), mtrID("metrics"), gust.OutcomeOK)
		if a.Status != 200 {
			t.Fatalf("call: %d %s", a.Status, a.Body)
		}
		ids = append(ids, a.ID)
	}
	for range 2 {
		a := mtrCall(t, m, "counted-mis", "?status=503", mtrID("metrics"), gust.OutcomeError)
		if a.Status != 503 {
			t.Fatalf("call: %d %s", a.Status, a.Body)
		}
		ids = append(ids, a.ID)
	}
	waitRecords(t, m, ids, 15*time.Second)
	key := gust.DefaultNamespace + ".counted"
	misKey := gust.DefaultNamespace + ".counted-mis"
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		s := scrapeMetrics(t, m)
		if n, _ := promSum(s, "gust_invocations_total", map[string]string{"function": key}); n != ok {
			return fmt.Errorf("gust_invocations_total of %s: %v, want %d", key, n, ok)
		}
		if n, _ := promSum(s, "gust_invocations_total", map[string]string{"function": key, "status": "200", "outcome": "ok"}); n != ok {
			return fmt.Errorf("gust_invocations_total of %s, 200 ok: %v, want %d", key, n, ok)
		}
		if n, _ := promSum(s, "gust_invocations_total", map[string]string{"function": misKey, "status": "503", "outcome": "error"}); n != 2 {
			return fmt.Errorf("gust_invocations_total of %s, 503 error: %v, want 2", misKey, n)
		}
		if n, _ := promSum(s, "gust_invocation_duration_seconds_count", map[string]string{"function": key}); n != ok {
			return fmt.Errorf("gust_invocation_duration_seconds_count of %s: %v, want %d", key, n, ok)
		}
		if n, _ := promSum(s, "gust_invocation_duration_seconds_sum", map[string]string{"function": key}); n <= 0 {
			return fmt.Errorf("gust_invocation_duration_seconds_sum of %s: %v", key, n)
		}
		if n, _ := promSum(s, "gust_invocation_duration_seconds_bucket", map[string]string{"function": key, "le": "+Inf"}); n != ok {
			return fmt.Errorf("gust_invocation_duration_seconds_bucket{le=+Inf} of %s: %v, want %d", key, n, ok)
		}
		total := float64(len(ids))
		for _, name := range []string{"gust_meter_records_spooled_total", "gust_meter_records_published_total", "gust_meter_records_stored_total"} {
			if n, found := promSum(s, name, nil); !found || n < total {
				return fmt.Errorf("%s: %v (found %v), want >= %v", name, n, found, total)
			}
		}
		if n, found := promSum(s, "gust_meter_records_dropped_total", nil); !found || n != 0 {
			return fmt.Errorf("gust_meter_records_dropped_total: %v (found %v), want 0", n, found)
		}
		if n, found := promSum(s, "gust_meter_records_buffered", nil); !found || n != 0 {
			return fmt.Errorf("gust_meter_records_buffered: %v (found %v), want 0", n, found)
		}
		return nil
	})
}

// TestMeteringCallerCallIDs: the call id a caller chooses must not let a
// call go unbilled.
func TestMeteringCallerCallIDs(t *testing.T) {
	MustImages(t) // skips here, not in a subtest (start uses this t)
	var up *UpMain
	start := func() *UpMain { // only once a subtest runs
		if up == nil {
			up = MustRunUp(t, "")
			mustDeploy(t, up, "ids", imageTag("sleep"), nil)
		}
		return up
	}

	t.Run("Reused", func(t *testing.T) {
		m := start()
		id := mtrID("reused")
		for i := range 3 {
			if a := mtrCall(t, m, "ids", "?ms=5", id, gust.OutcomeOK); a.Status != 200 {
				t.Fatalf("call %d: %d %s", i, a.Status, a.Body)
			}
		}
		marker := mtrID("marker")
		if a := mtrCall(t, m, "ids", "", marker, gust.OutcomeOK); a.Status != 200 {
			t.Fatalf("marker call: %d %s", a.Status, a.Body)
		}
		waitRecords(t, m, []string{id, marker}, 15*time.Second)
		rep, _ := getReport(t, m, "group_by=function&function=ids")
		if rep.Total.Requests != 4 {
			t.Errorf("4 calls ran (3 under the same caller-chosen X-Call-Id), report bills %d", rep.Total.Requests)
		}
	})
	t.Run("WithSpace", func(t *testing.T) {
		m := start()
		before, _ := getReport(t, m, "group_by=function&function=ids")
		a := mtrCall(t, m, "ids", "", "has space "+mtrID("x"), gust.OutcomeOK)
		if a.Status != 200 {
			// Refusing such an id is fine too: then nothing ran.
			return
		}
		marker := mtrID("marker")
		if a := mtrCall(t, m, "ids", "", marker, gust.OutcomeOK); a.Status != 200 {
			t.Fatalf("marker call: %d %s", a.Status, a.Body)
		}
		waitRecords(t, m, []string{marker}, 15*time.Second)
		after, _ := getReport(t, m, "group_by=function&function=ids")
		if d := after.Total.Requests - before.Total.Requests; d != 2 {
			t.Errorf("2 calls answered 200 (one with X-Call-Id %q), report bills %d more", a.Header.Get(gust.HeaderCallID), d)
		}
		s := scrapeMetrics(t, m)
		if n, _ := promSum(s, "gust_meter_records_dropped_total", nil); n != 0 {
			t.Errorf("gust_meter_records_dropped_total %v", n)
		}
	})
}

// TestMeteringRejectedNotBilled: a call refused for a body over the limit
// (sent chunked, so only the worker finds out) is on the record as
// rejected, and a rejected call is not billed.
func TestMeteringRejectedNotBilled(t *testing.T) {
	m := MustRunUp(t, "", func(m *UpMain) { m.Gateway.MaxBodyBytes = 1024 })
	mustDeploy(t, m, "big", imageTag("echo"), nil)
	id := mtrID("big")
	// An io.Reader of unknown length: the body goes chunked.
	body := io.MultiReader(strings.NewReader(strings.Repeat("x", 64<<10)))
	req, err := http.NewRequest(http.MethodPost, gw(m)+"/function/big", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(gust.HeaderCallID, id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked body over the limit: %d %s, want 413", resp.StatusCode, out)
	}
	r := waitRecords(t, m, []string{id}, 15*time.Second)[id]
	if r.Status != http.StatusRequestEntityTooLarge || r.Outcome != gust.OutcomeRejected {
		t.Errorf("record %d %s, want 413 rejected", r.Status, r.Outcome)
	}
	t.Run("BilledZero", func(t *testing.T) {
		if r.BilledNs != 0 {
			t.Errorf("rejected call billed %dns (header %s=%q); CallRecord says 0 for rejected calls", r.BilledNs, gust.HeaderBilled, resp.Header.Get(gust.HeaderBilled))
		}
		rep, _ := getReport(t, m, "group_by=function")
		if !rep.Total.BilledSeconds.IsZero() || !rep.Total.ComputeCost.IsZero() {
			t.Errorf("report bills %s s, compute cost %s for a rejected call", rep.Total.BilledSeconds, rep.Total.ComputeCost)
		}
	})
}
