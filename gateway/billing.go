package gateway

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/gustfaas/gust/internal/metrics"
)

// maxListLimit bounds one page of /system/invocations.
const maxListLimit = 1000

// WithBilling serves reports and call records from store, priced by
// pricing. Call it before Open.
func (s *Server) WithBilling(store gust.BillingStore, pricing billing.Pricing) *Server {
	s.billing, s.pricing = store, pricing
	return s
}

// WithMetering meters the calls the gateway itself turns away and serves
// m on /metrics. Either may be nil. Call it before Open.
func (s *Server) WithMetering(meter gust.Meter, m *metrics.Metrics) *Server {
	s.meter, s.metrics = meter, m
	return s
}

func (s *Server) needBilling() error {
	if s.billing == nil {
		return gust.Errorf(gust.EUNAVAILABLE, "this gateway keeps no billing store")
	}
	return nil
}

// parseTime reads a report bound: RFC 3339, or a UTC date 2006-01-02.
func parseTime(q url.Values, name string) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t, err = time.Parse("2006-01-02", v)
	}
	// The zero time means no bound to the filter and the store: as a
	// bound it would be ignored.
	if err != nil || t.IsZero() {
		return time.Time{}, gust.Invalidf(name, "%s=%q: want RFC 3339 (2026-11-27T10:00:00Z) or a date (2026-11-27) after year 1", name, v)
	}
	return t.UTC(), nil
}

// callFilter reads the filters shared by reports and listings.
func callFilter(r *http.Request) (gust.CallFilter, error) {
	q := r.URL.Query()
	var f gust.CallFilter
	var err error
	if f.Namespace = q.Get("namespace"); f.Namespace != "" && !gust.ValidName(f.Namespace) {
		return f, gust.Invalidf("namespace", "namespace %q is not a valid name", f.Namespace)
	}
	if f.Function = q.Get("function"); f.Function != "" && !gust.ValidName(f.Function) {
		return f, gust.Invalidf("function", "function %q is not a valid name", f.Function)
	}
	if f.From, err = parseTime(q, "from"); err != nil {
		return f, err
	}
	if f.To, err = parseTime(q, "to"); err != nil {
		return f, err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return f, gust.Invalidf("from", "from (%s) must be before to (%s)", f.From.Format(time.RFC3339), f.To.Format(time.RFC3339))
	}
	return f, nil
}

// billingReport answers GET /system/billing.
func (s *Server) billingReport(w http.ResponseWriter, r *http.Request) error {
	if err := s.needBilling(); err != nil {
		return err
	}
	f, err := callFilter(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	groupBy := q.Get("group_by")
	switch groupBy {
	case "":
		groupBy = gust.GroupByFunction
	case gust.GroupByNamespace, gust.GroupByFunction, gust.GroupByHour, gust.GroupByDay, gust.GroupByMonth:
	default:
		return gust.Invalidf("group_by", "group_by=%q: want namespace, function, hour, day or month", groupBy)
	}
	format := q.Get("format")
	switch format {
	case "", "json", "csv":
	default:
		return gust.Invalidf("format", "format=%q: want json or csv", format)
	}
	rows, inst, err := s.billing.Usage(r.Context(), f, groupBy)
	if err != nil {
		return err
	}
	var from, to *time.Time
	if !f.From.IsZero() {
		from = &f.From
	}
	if !f.To.IsZero() {
		to = &f.To
	}
	rep := s.pricing.Report(rows, inst, groupBy, from, to)
	if ps, ok := s.billing.(gust.PruningStore); ok {
		rawFrom, err := ps.RawFrom(r.Context())
		if err != nil {
			return err
		}
		if !rawFrom.IsZero() && (f.From.IsZero() || f.From.Before(rawFrom)) {
			end := rawFrom
			if !f.To.IsZero() && f.To.Before(end) {
				end = f.To
			}
			rep.AggregateOnly = &billing.Period{From: from, To: &end,
				Note: "call records before " + rawFrom.Format(time.RFC3339) + " were deleted by retention: this part is summed from hourly rollups, and a partial hour at its edge counts whole"}
			w.Header().Set("X-Gust-Aggregate-Only", rawFrom.Format(time.RFC3339))
		}
	}
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		return billing.WriteCSV(w, rep)
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// invocationList is the answer of GET /system/invocations.
type invocationList struct {
	Invocations []gust.CallRecord `json:"items"`
	NextCursor  string            `json:"nextCursor,omitempty"`
}

// listInvocations answers GET /system/invocations: call records newest
// first, a page at a time.
func (s *Server) listInvocations(w http.ResponseWriter, r *http.Request) error {
	if err := s.needBilling(); err != nil {
		return err
	}
	f, err := callFilter(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if v := q.Get("status"); v != "" {
		switch v {
		case gust.OutcomeOK, gust.OutcomeError, gust.OutcomeTimeout, gust.OutcomeCrashed, gust.OutcomeRejected:
			f.Outcome = v
		default:
			return gust.Invalidf("status", "status=%q: want ok, error, timeout, crashed or rejected", v)
		}
	}
	f.Limit = billing.DefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return gust.Invalidf("limit", "limit=%q: want a whole number from 1 to %d", v, maxListLimit)
		}
		f.Limit = n
	}
	f.Cursor = q.Get("cursor")
	recs, next, err := s.billing.Calls(r.Context(), f)
	if err != nil {
		return err
	}
	if recs == nil {
		recs = []gust.CallRecord{}
	}
	writeJSON(w, http.StatusOK, invocationList{Invocations: recs, NextCursor: next})
	return nil
}

// getInvocation answers GET /system/invocations/{callId}.
func (s *Server) getInvocation(w http.ResponseWriter, r *http.Request) error {
	if err := s.needBilling(); err != nil {
		return err
	}
	id := chi.URLParam(r, "callId")
	if id == "" || len(id) > 256 || strings.ContainsAny(id, " /") {
		return gust.Invalidf("callId", "call id %q is not valid", id)
	}
	// An async call's own id shows its status and every attempt's record;
	// an attempt's id (ID~2, ...) shows that attempt's record.
	callID, attempt := gust.SplitAttemptID(id)
	if attempt == 1 {
		if st, err := s.asyncStatus(r, id); err != nil || st != nil {
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, st)
			return nil
		}
	}
	rec, err := s.billing.Call(r.Context(), id)
	if errors.Is(err, gust.ErrNotFound) {
		if attempt > 1 {
			return gust.Errorf(gust.ENOTFOUND, "no record of attempt %d of call %s", attempt, callID)
		}
		return gust.Errorf(gust.ENOTFOUND, "no record of call %s (records arrive within a second or two of the call)", id)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rec)
	return nil
}
