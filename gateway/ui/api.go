package ui

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gustfaas/gust"
)

// API answers the dashboard's own JSON routes. The gateway mounts them
// behind its access rules; a namespace key's calls arrive with their
// namespace already in the query.
type API struct {
	// Status is the table of pool states the workers write
	// (namespace.function.worker).
	Status gust.Table[gust.PoolStatus]
	// Billing holds the call records; nil on a gateway without one.
	Billing gust.BillingStore
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Pool is one function's pool on one worker as GET /ui/api/pools lists
// it: the worker's own report (gust.PoolStatus, flattened; whatever it
// adds shows here too) and whose pool it is.
type Pool struct {
	Namespace string `json:"namespace"`
	Function  string `json:"function"`
	gust.PoolStatus
}

// Pools answers GET /ui/api/pools?namespace=: every pool of the
// namespace's functions, or of all namespaces without one.
func (a *API) Pools(w http.ResponseWriter, r *http.Request) error {
	ns := r.URL.Query().Get("namespace")
	pattern := ">"
	if ns != "" {
		if !gust.ValidName(ns) {
			return gust.Invalidf("namespace", "namespace %q is not a valid name", ns)
		}
		pattern = ns + ".*.*"
	}
	all, err := a.Status.List(r.Context(), pattern)
	if err != nil {
		return err
	}
	out := make([]Pool, 0, len(all))
	for key, p := range all {
		fnKey := key[:max(strings.LastIndexByte(key, '.'), 0)]
		pns, name, ok := strings.Cut(fnKey, ".")
		if !ok {
			continue
		}
		out = append(out, Pool{Namespace: pns, Function: name, PoolStatus: p})
	}
	sort.Slice(out, func(i, j int) bool {
		x, y := out[i], out[j]
		if x.Namespace != y.Namespace {
			return x.Namespace < y.Namespace
		}
		if x.Function != y.Function {
			return x.Function < y.Function
		}
		return x.Worker < y.Worker
	})
	writeJSON(w, out)
	return nil
}

// Activity is the answer of GET /ui/api/activity: the calls of the last
// Minutes minutes by minute, oldest first.
type Activity struct {
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Buckets []Bucket  `json:"buckets"`
	// Records is how many call records were read; Truncated says that
	// there were more than maxActivityRecords, and that the oldest
	// minutes count only the newest records.
	Records   int  `json:"records"`
	Truncated bool `json:"truncated"`
}

// Bucket is one minute of calls. Latencies are of the calls that ran
// (not those the gateway turned away), in milliseconds.
type Bucket struct {
	Start      time.Time `json:"start"`
	Calls      int       `json:"calls"`
	Errors     int       `json:"errors"`
	ColdStarts int       `json:"coldStarts"`
	P50Ms      float64   `json:"p50Ms"`
	P95Ms      float64   `json:"p95Ms"`
	MaxMs      float64   `json:"maxMs"`
	// InitMs is the mean init time of the minute's cold starts.
	InitMs float64 `json:"initMs"`
}

const (
	activityMinutes = 60
	// maxActivityRecords bounds the records one answer reads: at about
	// 5 calls per second sustained the hour is complete; above it the
	// newest minutes still are.
	maxActivityRecords = 20000
	activityPage       = 1000
)

// Activity answers GET /ui/api/activity?namespace=&function=: the last
// hour's calls, errors, cold starts and latency by minute, computed from
// the call records (the billing rollups are hourly, too coarse here).
func (a *API) Activity(w http.ResponseWriter, r *http.Request) error {
	if a.Billing == nil {
		return gust.Errorf(gust.EUNAVAILABLE, "this gateway keeps no billing store")
	}
	q := r.URL.Query()
	f := gust.CallFilter{Namespace: q.Get("namespace"), Function: q.Get("function"), Limit: activityPage}
	if f.Namespace != "" && !gust.ValidName(f.Namespace) {
		return gust.Invalidf("namespace", "namespace %q is not a valid name", f.Namespace)
	}
	if f.Function != "" && !gust.ValidName(f.Function) {
		return gust.Invalidf("function", "function %q is not a valid name", f.Function)
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	to := now().UTC().Truncate(time.Minute).Add(time.Minute)
	f.From = to.Add(-activityMinutes * time.Minute)
	act := Activity{From: f.From, To: to, Buckets: make([]Bucket, activityMinutes)}
	durs := make([][]float64, activityMinutes)
	inits := make([]float64, activityMinutes)
	for i := range act.Buckets {
		act.Buckets[i].Start = f.From.Add(time.Duration(i) * time.Minute)
	}
	for {
		recs, next, err := a.Billing.Calls(r.Context(), f)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			i := int(rec.Start.Sub(f.From) / time.Minute)
			if i < 0 || i >= activityMinutes {
				continue
			}
			b := &act.Buckets[i]
			b.Calls++
			if rec.Outcome != gust.OutcomeOK {
				b.Errors++
			}
			if rec.ColdStart {
				b.ColdStarts++
				inits[i] += float64(rec.InitNs) / 1e6
			}
			if rec.Outcome != gust.OutcomeRejected {
				durs[i] = append(durs[i], float64(rec.DurationNs)/1e6)
			}
		}
		act.Records += len(recs)
		if next == "" {
			break
		}
		if act.Records >= maxActivityRecords {
			act.Truncated = true
			break
		}
		f.Cursor = next
	}
	for i := range act.Buckets {
		b := &act.Buckets[i]
		if d := durs[i]; len(d) > 0 {
			slices.Sort(d)
			b.P50Ms, b.P95Ms, b.MaxMs = quantile(d, 0.50), quantile(d, 0.95), d[len(d)-1]
		}
		if b.ColdStarts > 0 {
			b.InitMs = inits[i] / float64(b.ColdStarts)
		}
	}
	writeJSON(w, act)
	return nil
}

// quantile of sorted values, nearest rank.
func quantile(sorted []float64, q float64) float64 {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func writeJSON(w http.ResponseWriter, v any) {
	SecurityHeaders(w.Header())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}
