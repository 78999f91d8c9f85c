package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/proxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var _ gust.Invoker = (*Worker)(nil)

// bufferLimit is the largest answer of known length that is read whole
// before it is sent on: its duration, billed duration and headers are then
// exact. Longer answers and answers of unknown length are streamed, and
// carry those figures as HTTP trailers.
const bufferLimit = 1 << 20

// callState is the per-call scratch space, pooled so the invoke path
// allocates little.
type callState struct {
	rec gust.CallRecord
	buf bytes.Buffer
}

var callStates = sync.Pool{New: func() any { return new(callState) }}

// countingReader counts the bytes of a request body read by the transport.
type countingReader struct {
	r io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

// Invoke runs one call of fn in a free slot of a warm instance, starting
// one if needed, and streams the function's answer to rw. r.URL.Path is
// the path the function sees. The call gets the function's timeout once it
// has a slot; it waits for one at most that timeout plus the ready
// timeout. Every call, failed ones included, is metered before the caller
// sees the end of the answer.
func (w *Worker) Invoke(rw http.ResponseWriter, r *http.Request, fn *gust.Function) error {
	w.calls.Add(1)
	defer w.calls.Done()
	arrived := time.Now()
	cs := callStates.Get().(*callState)
	defer func() {
		cs.buf.Reset()
		callStates.Put(cs)
	}()
	rec := &cs.rec
	*rec = gust.CallRecord{
		CallID: r.Header.Get(gust.HeaderGustCallID), Namespace: fn.Spec.Namespace, Function: fn.Spec.Service,
		Version: fn.Version, Image: fn.Spec.Image, Worker: w.cfg.ID, Trigger: r.Header.Get(gust.HeaderTrigger),
	}
	if rec.Trigger == "" {
		rec.Trigger = gust.TriggerHTTP
	}
	callerID := r.Header.Get(gust.HeaderCallID)
	if rec.CallID == "" {
		rec.CallID = callerID
	} else if callerID != rec.CallID {
		rec.CallerID = callerID
	}
	if a := r.Header.Get(gust.HeaderAttempt); a != "" && a != "1" {
		// Each attempt of an async call is a call of its own on the
		// record; the function sees the same call id every time.
		rec.CallID += "~" + a
	}

	p, err := w.poolFor(fn)
	if err != nil {
		w.reject(rec, arrived, fn.Key())
		return err
	}
	p.mu.Lock()
	cfg := p.cfg // parsed once per deploy, not per call
	p.mu.Unlock()
	rec.MemoryMiB = cfg.MemoryBytes >> 20

	// Waiting for a slot may include a cold start, which the call's own
	// timeout does not cover (as Lambda keeps init out of it): the wait
	// is bounded by the timeout plus the time an instance may take to
	// become ready.
	in, cold, err := p.acquire(r.Context(), cfg.Timeout+w.cfg.ReadyTimeout)
	if err != nil {
		w.reject(rec, arrived, p.key)
		return acquireError(err, fn, cfg, w.cfg.ReadyTimeout)
	}
	ctx, cancel := context.WithTimeout(r.Context(), cfg.Timeout)
	defer cancel()
	defer p.release(in)
	rec.Instance, rec.ColdStart = in.id, cold
	if cold {
		rec.InitNs = int64(in.initDur)
	}

	deadline, _ := ctx.Deadline()
	// Not pooled: the transport may still read and close the body after
	// RoundTrip returns (a function that answers before reading it).
	body := &countingReader{r: r.Body}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	out, err := proxy.Outbound(ctx, r, in.host, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery)
	if err != nil {
		w.reject(rec, arrived, p.key)
		return gust.Errorf(gust.EINVALID, "bad request: %v", err)
	}
	out.Header.Set(gust.HeaderDeadline, deadline.UTC().Format(time.RFC3339Nano))
	start := time.Now()
	rec.Start = start
	resp, err := w.transport.RoundTrip(out)
	h := rw.Header()
	h.Set(gust.HeaderCallID, callerID)
	if cold {
		h.Set(gust.HeaderColdStart, "true")
	}
	if err != nil {
		w.failed(rw, r, p, in, fn, cfg, ctx, err, rec, body)
		return nil
	}
	defer resp.Body.Close()
	rec.Status = resp.StatusCode
	rec.Outcome = gust.OutcomeOK
	if resp.StatusCode >= 500 {
		rec.Outcome = gust.OutcomeError
	}

	if resp.ContentLength >= 0 && resp.ContentLength <= bufferLimit {
		// Read the whole answer first: the headers then carry the exact
		// figures of the record.
		if _, err := cs.buf.ReadFrom(resp.Body); err != nil {
			w.failed(rw, r, p, in, fn, cfg, ctx, err, rec, body)
			return nil
		}
		w.finish(rec, time.Now(), body.n, int64(cs.buf.Len()))
		proxy.CopyHeader(h, resp)
		h.Set(gust.HeaderCallID, callerID)
		setFigures(h, rec)
		if cold {
			h.Set(gust.HeaderColdStart, "true")
		}
		// Record before writing: a large answer may reach the caller
		// whole before this handler returns.
		w.meterCall(rec, p.key)
		rw.WriteHeader(resp.StatusCode)
		_, _ = rw.Write(cs.buf.Bytes())
		return nil
	}

	// Stream: the figures come as trailers once the answer has ended.
	proxy.CopyHeader(h, resp)
	h.Del("Content-Length")
	h.Set(gust.HeaderCallID, callerID)
	if cold {
		h.Set(gust.HeaderColdStart, "true")
	}
	h.Add("Trailer", gust.HeaderDuration)
	h.Add("Trailer", gust.HeaderBilled)
	rw.WriteHeader(resp.StatusCode)
	n, cerr := proxy.CopyBody(rw, resp)
	w.finish(rec, time.Now(), body.n, n)
	if cerr != nil && r.Context().Err() == nil {
		// The function broke off its answer (or went past its timeout).
		rec.Outcome = gust.OutcomeCrashed
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			rec.Outcome = gust.OutcomeTimeout
		}
		if ce := p.logger.Check(zapcore.DebugLevel, "answer cut short"); ce != nil {
			ce.Write(zap.String("invocation_id", rec.CallID), zap.Error(cerr))
		}
	}
	proxy.CopyTrailer(h, resp)
	setFigures(h, rec)
	w.meterCall(rec, p.key)
	return nil
}

// finish completes the timing and sizes of a call that ran.
func (w *Worker) finish(rec *gust.CallRecord, end time.Time, in, out int64) {
	rec.DurationNs = int64(end.Sub(rec.Start)) // monotonic
	rec.End = rec.Start.Add(time.Duration(rec.DurationNs))
	rec.BilledNs = int64(gust.BilledDuration(time.Duration(rec.DurationNs), w.cfg.BillingGranularity))
	rec.BytesIn, rec.BytesOut = in, out
}

// setFigures writes the duration and billed duration headers.
func setFigures(h http.Header, rec *gust.CallRecord) {
	h.Set(gust.HeaderDuration, strconv.FormatFloat(float64(rec.DurationNs)/1e9, 'f', 9, 64))
	h.Set(gust.HeaderBilled, strconv.FormatFloat(float64(rec.BilledNs)/1e9, 'f', 9, 64))
}

// reject meters a call that never ran: no instance could be had.
func (w *Worker) reject(rec *gust.CallRecord, arrived time.Time, key string) {
	rec.DurationNs = int64(time.Since(arrived))
	rec.Start, rec.End = arrived, arrived.Add(time.Duration(rec.DurationNs))
	rec.Status, rec.Outcome = http.StatusServiceUnavailable, gust.OutcomeRejected
	w.meterCall(rec, key)
}

// meterCall hands the record to the meter and counts the call.
func (w *Worker) meterCall(rec *gust.CallRecord, key string) {
	if w.meter != nil {
		w.meter.RecordCall(rec)
	}
	if m := w.metrics; m != nil {
		m.Invocations.WithLabelValues(key, metrics.Status(rec.Status), rec.Outcome).Inc()
		if rec.Outcome != gust.OutcomeRejected {
			m.Duration.WithLabelValues(key).Observe(float64(rec.DurationNs) / 1e9)
		}
		if rec.ColdStart {
			m.ColdStarts.WithLabelValues(key).Inc()
		}
	}
}

// acquireError explains why a call got no slot.
func acquireError(err error, fn *gust.Function, cfg gust.FunctionConfig, ready time.Duration) error {
	switch {
	case errors.Is(err, errStartFailed):
		return gust.Errorf(gust.EUNAVAILABLE, "function %s could not start: %s", fn.Key(), gust.ErrorMessage(errors.Unwrap(err)))
	case errors.Is(err, errNoSlot):
		return gust.Errorf(gust.EUNAVAILABLE, "function %s had no free instance within %s (its timeout %s and the ready timeout %s)", fn.Key(), cfg.Timeout+ready, cfg.Timeout, ready)
	case errors.Is(err, gust.ErrDraining):
		return gust.Errorf(gust.EUNAVAILABLE, "worker is draining")
	}
	return err
}

// failed answers and meters a call that got no (whole) answer from its
// instance: 413 for a body over the limit, 504 past the timeout, 502 when
// the function crashed or answered something that is not HTTP. The
// instance is checked and replaced if it does not recover.
func (w *Worker) failed(rw http.ResponseWriter, r *http.Request, p *pool, in *instance, fn *gust.Function, cfg gust.FunctionConfig, ctx context.Context, err error, rec *gust.CallRecord, body *countingReader) {
	status, outcome, msg := http.StatusBadGateway, gust.OutcomeCrashed, "function "+fn.Key()+" failed to answer: "+trimErr(err)
	switch {
	case proxy.IsBodyTooLarge(err):
		status, outcome, msg = http.StatusRequestEntityTooLarge, gust.OutcomeRejected, "request body is over the gateway's limit"
	case r.Context().Err() != nil:
		status, outcome, msg = 499, gust.OutcomeError, "caller went away"
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		status, outcome, msg = http.StatusGatewayTimeout, gust.OutcomeTimeout, "function "+fn.Key()+" did not answer within its timeout "+cfg.Timeout.String()
	}
	w.finish(rec, time.Now(), body.n, 0)
	rec.Status, rec.Outcome = status, outcome
	if outcome == gust.OutcomeRejected {
		rec.BilledNs = 0 // it never ran
	}
	if status == http.StatusBadGateway || status == http.StatusGatewayTimeout {
		p.mu.Lock()
		in.suspect = true
		p.mu.Unlock()
		go w.recheck(p, in, cfg)
		p.logger.Warn("call failed", zap.String("invocation_id", rec.CallID), zap.String("instance_id", in.id), zap.Int("status", status), zap.Error(err))
	}
	if status != 499 {
		setFigures(rw.Header(), rec)
		writeError(rw, status, msg)
	}
	w.meterCall(rec, p.key)
}

// trimErr drops the URL that net/http puts in front of transport errors:
// the caller knows which function it called.
func trimErr(err error) string {
	s := err.Error()
	if i := strings.Index(s, "\": "); i >= 0 {
		return s[i+3:]
	}
	return s
}

// recheck probes an instance after a failed call: if it answers its
// readiness check it takes calls again, else it is stopped and replaced.
func (w *Worker) recheck(p *pool, in *instance, cfg gust.FunctionConfig) {
	ctx, cancel := context.WithTimeout(w.ctx, 2*time.Second)
	defer cancel()
	var err error
	for i := 0; i < 3; i++ {
		if err = w.probe(ctx, in.addr, cfg); err == nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	p.mu.Lock()
	if err == nil {
		in.suspect = false
		p.broadcastLocked()
		p.mu.Unlock()
		return
	}
	gone := in.state == stateStopping || !p.removeLocked(in)
	in.state = stateStopping
	p.broadcastLocked()
	p.mu.Unlock()
	if !gone {
		logger := p.logger.With(zap.String("instance_id", in.id), zap.String("container_id", shortID(in.cid)))
		logger.Warn("replacing instance that did not recover", zap.Error(err))
		w.instanceStopped(p, in)
		// Calls still in flight on it are cut: it is not answering anyway.
		w.removeContainer(in.cid, logger)
	}
}

// writeError writes a JSON error answer.
func writeError(rw http.ResponseWriter, status int, msg string) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	b, _ := jsonMarshal(map[string]string{"error": msg})
	rw.Write(append(b, '\n'))
}
