package gateway

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gustfaas/gust"
)

// result is the answer of a call the dispatcher made.
type result struct {
	status   int
	outcome  string
	header   http.Header
	body     []byte // the answer, up to maxRecordedBody
	size     int64  // the answer's whole length
	duration time.Duration
	err      string
}

// run makes one call of the function through its invoker.
func (d *Dispatcher) run(ctx context.Context, fn *gust.Function, req *gust.AsyncRequest, attempt int) result {
	path := req.Path
	if path == "" {
		path = "/"
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, "http://gust"+path, bytes.NewReader(req.Body))
	if err != nil {
		return result{status: http.StatusBadRequest, outcome: gust.OutcomeRejected, err: err.Error()}
	}
	hr.URL.RawQuery = req.Query
	hr.Header = make(http.Header, len(req.Header)+4) // no growing, header by header
	for k, v := range req.Header {
		hr.Header[k] = v
	}
	hr.Header.Set(gust.HeaderCallID, req.CallID)
	hr.Header.Set(gust.HeaderGustCallID, req.CallID)
	hr.Header.Set(gust.HeaderTrigger, req.Trigger)
	hr.Header.Set(gust.HeaderAttempt, strconv.Itoa(attempt))
	hr.ContentLength = int64(len(req.Body))
	// A slot of the namespace's quota.concurrency, waited for (under the
	// delivery's heartbeat for async calls); only shutting down ends the
	// wait, and then the message comes back to whoever runs next.
	slot, err := d.quotas.wait(ctx, fn.Spec.Namespace)
	if err != nil {
		return result{status: http.StatusServiceUnavailable, outcome: gust.OutcomeRejected, err: err.Error()}
	}
	defer slot.release()
	t0 := time.Now()
	rec := newRecorder()
	err = d.router.Invoke(rec, hr, fn)
	// The worker that ran (or turned away) the call says how it went.
	res := result{duration: time.Since(t0), header: rec.header, outcome: rec.header.Get(gust.HeaderOutcome)}
	if err != nil {
		res.status, res.err = gust.HTTPStatus(err), gust.ErrorMessage(err)
		if res.outcome == "" {
			// No worker metered it: it never reached one.
			res.outcome = gust.OutcomeRejected
			if d.meter != nil {
				r := gust.RejectedCall(fn, gust.AttemptID(req.CallID, attempt), req.Trigger, t0, res.status)
				d.meter.RecordCall(&r)
			}
		}
		return res
	}
	res.status, res.body, res.size = rec.status, rec.body.Bytes(), rec.size
	if res.status == 0 {
		res.status = http.StatusOK
	}
	if res.status >= 400 {
		res.err = fmt.Sprintf("function answered %d: %s", res.status, truncate(res.body, 200))
	}
	return res
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// recorder is the http.ResponseWriter of calls the gateway makes itself
// (async and event calls): it keeps the answer, up to a bound.
type recorder struct {
	status int
	header http.Header
	body   bytes.Buffer
	// size is the length of the whole answer, kept or not.
	size int64
}

// maxRecordedBody bounds the answer kept for callbacks and NATS replies.
const maxRecordedBody = 8 << 20

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.size += int64(len(p))
	if room := maxRecordedBody - r.body.Len(); room < len(p) {
		r.body.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return r.body.Write(p)
}

// Flush is a no-op: the whole answer is kept.
func (r *recorder) Flush() {}
