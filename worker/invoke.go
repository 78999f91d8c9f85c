package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/httplimits"
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

// countingReader counts the bytes of a request body read by the
// transport. The count is atomic: the transport may still be sending the
// body, on its own goroutine, when a function that answered before reading
// it all has had its answer read and the call is metered.
type countingReader struct {
	r io.ReadCloser
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

// N is the count of bytes read; a nil reader (a call without a body)
// read none.
func (c *countingReader) N() int64 {
	if c == nil {
		return 0
	}
	return c.n.Load()
}

// Invoke runs one call of fn in a free slot of a warm instance, starting
// one if needed, and streams the function's answer to rw. r.URL.Path is
// the path the function sees. The call gets the function's timeout once it
// has a slot; it waits for one at most that timeout plus the ready
// timeout. Every call, failed ones included, is metered before the caller
// sees the end of the answer, and its outcome is on the answer
// (HeaderOutcome). A call that got no answer of the function's returns an
// *gust.Error, as gust.Invoker says.
func (w *Worker) Invoke(rw http.ResponseWriter, r *http.Request, fn *gust.Function) error {
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
		n, _ := strconv.Atoi(a)
		rec.CallID = gust.AttemptID(rec.CallID, n)
	}
	h := rw.Header()
	h.Set(gust.HeaderCallID, callerID)
	mayHandOff := r.Header.Get(gust.HeaderHandoff) == gust.HandoffRetry
	r.Header.Del(gust.HeaderHandoff) // Gust's, not the function's

	p, err := w.enterCall(fn)
	if err != nil {
		if !refuse(h, mayHandOff, err) {
			w.reject(h, rec, fn, arrived, err)
		}
		return err
	}
	defer w.callDone()
	p.mu.Lock()
	cfg := p.cfg // parsed once per deploy, not per call
	p.mu.Unlock()
	rec.MemoryMiB = cfg.MemoryBytes >> 20
	// The call may wait for a slot and then stream for up to its timeout
	// each: past the listener's read and write timeouts.
	httplimits.Extend(rw, 2*cfg.Timeout+w.cfg.ReadyTimeout+time.Minute)

	// Waiting for a slot may include a cold start, which the call's own
	// timeout does not cover (as Lambda keeps init out of it): the wait
	// is bounded by the timeout plus the time an instance may take to
	// become ready.
	in, cold, err := p.acquire(r.Context(), cfg.Timeout+w.cfg.ReadyTimeout)
	if err != nil {
		if refuse(h, mayHandOff, err) {
			return err
		}
		err = acquireError(err, fn, cfg, w.cfg.ReadyTimeout)
		w.reject(h, rec, fn, arrived, err)
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), cfg.Timeout)
	defer cancel()
	defer func() { p.release(in, time.Duration(rec.DurationNs)) }()
	// The call's span ties the instance's log lines to it (logs.go): it
	// ends once the function's answer is in (spanEnd), before the caller
	// has it and may send the next call, or else as the call returns.
	spanEnd := func() {}
	if w.logs != nil {
		slot := in.calls.begin(rec.CallID)
		spanEnd = func() { in.calls.end(slot) }
		defer spanEnd()
	}
	rec.Instance, rec.ColdStart = in.id, cold
	if cold {
		rec.InitNs = int64(in.initDur)
		h.Set(gust.HeaderColdStart, "true")
	}

	deadline, _ := ctx.Deadline()
	// Not pooled: the transport may still read and close the body after
	// RoundTrip returns (a function that answers before reading it). Nil
	// for a call without a body: nothing to count.
	var body *countingReader
	if r.Body != nil && r.Body != http.NoBody {
		body = &countingReader{r: r.Body}
		r.Body = body
	}
	out, err := proxy.Outbound(ctx, r, in.host, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery)
	if err != nil {
		err = gust.Errorf(gust.EINVALID, "bad request: %v", err)
		w.reject(h, rec, fn, arrived, err)
		return err
	}
	out.Header.Set(gust.HeaderDeadline, deadline.UTC().Format(time.RFC3339Nano))
	start := time.Now()
	rec.Start = start
	resp, err := in.client.RoundTrip(out)
	if err != nil {
		return w.failed(h, r, p, in, fn, cfg, ctx, err, rec, body)
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
			return w.failed(h, r, p, in, fn, cfg, ctx, err, rec, body)
		}
		w.finish(rec, time.Now(), body.N(), int64(cs.buf.Len()))
		spanEnd()
		proxy.CopyHeader(h, resp)
		setFigures(h, rec, callerID, cold)
		// Record before writing: a large answer may reach the caller
		// whole before this handler returns.
		w.meterCall(rec, p.key)
		rw.WriteHeader(resp.StatusCode)
		_, _ = rw.Write(cs.buf.Bytes())
		return nil
	}

	// Stream: the figures and the outcome come as trailers once the
	// answer has ended.
	proxy.CopyHeader(h, resp)
	h.Del("Content-Length")
	h.Del(gust.HeaderOutcome) // the function's own would be a forgery
	h.Set(gust.HeaderCallID, callerID)
	if cold {
		h.Set(gust.HeaderColdStart, "true")
	}
	h.Add("Trailer", gust.HeaderDuration)
	h.Add("Trailer", gust.HeaderBilled)
	h.Add("Trailer", gust.HeaderOutcome)
	rw.WriteHeader(resp.StatusCode)
	n, cerr := proxy.CopyBody(rw, resp)
	w.finish(rec, time.Now(), body.N(), n)
	spanEnd()
	if cerr != nil && r.Context().Err() == nil {
		// The function broke off its answer (or went past its timeout).
		rec.Outcome = gust.OutcomeCrashed
		if timedOut(ctx) {
			rec.Outcome = gust.OutcomeTimeout
		}
		if ce := p.logger.Check(zapcore.DebugLevel, "answer cut short"); ce != nil {
			ce.Write(zap.String("invocation_id", rec.CallID), zap.Error(cerr))
		}
	}
	proxy.CopyTrailer(h, resp)
	setFigures(h, rec, callerID, cold)
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

// setFigures writes Gust's headers of a call that ran: its call id, cold
// start, duration, billed duration and outcome (after the function's own
// headers, which cannot forge them). It runs on every call, so the values
// share one slice and the two figures one string; the keys are canonical
// already (what Header.Set would make them).
func setFigures(h http.Header, rec *gust.CallRecord, callerID string, cold bool) {
	var buf [64]byte
	b := appendSeconds(buf[:0], rec.DurationNs)
	cut := len(b)
	b = appendSeconds(b, rec.BilledNs)
	figures := string(b)
	v := make([]string, 5)
	v[0], v[1], v[2], v[3] = callerID, figures[:cut], figures[cut:], rec.Outcome
	// Each value is capped at its length: an Add to one of them copies
	// it instead of writing over the next.
	h[gust.HeaderCallID] = v[0:1:1]
	h[gust.HeaderDuration] = v[1:2:2]
	h[gust.HeaderBilled] = v[2:3:3]
	h[gust.HeaderOutcome] = v[3:4:4]
	if cold {
		v[4] = "true"
		h[gust.HeaderColdStart] = v[4:5:5]
	}
}

// appendSeconds appends ns as seconds with nine decimals, exactly, in
// integers: strconv's float formatting was 3% of an event's CPU.
func appendSeconds(b []byte, ns int64) []byte {
	if ns < 0 {
		b = append(b, '-')
		ns = -ns
	}
	b = strconv.AppendInt(b, ns/1e9, 10)
	frac := ns % 1e9
	b = append(b, ".000000000"...)
	for i := len(b) - 1; frac > 0; i-- {
		b[i] = byte('0' + frac%10)
		frac /= 10
	}
	return b
}

// refuse turns away, unmetered, a call that may go to another worker:
// the gateway offered to send it elsewhere (gust.HandoffRetry) and this
// worker cannot take it before its function sees any of it (it drains,
// or does not know the function). The gateway then sends it on, or
// meters it when it cannot. It reports whether it refused the call.
func refuse(h http.Header, mayHandOff bool, err error) bool {
	if !mayHandOff || !errors.Is(err, gust.ErrDraining) && gust.ErrorCode(err) != gust.ENOTFOUND {
		return false
	}
	h.Set(gust.HeaderHandoff, gust.HandoffRefused)
	return true
}

// reject meters a call that never ran and says so on its answer.
func (w *Worker) reject(h http.Header, rec *gust.CallRecord, fn *gust.Function, arrived time.Time, err error) {
	r := gust.RejectedCall(fn, rec.CallID, rec.Trigger, arrived, gust.HTTPStatus(err))
	r.CallerID, r.Worker, r.MemoryMiB = rec.CallerID, rec.Worker, rec.MemoryMiB
	*rec = r
	h.Set(gust.HeaderOutcome, gust.OutcomeRejected)
	w.meterCall(rec, fn.Key())
}

// meterCall hands the record to the meter and counts the call.
func (w *Worker) meterCall(rec *gust.CallRecord, key string) {
	if w.meter != nil {
		w.meter.RecordCall(rec)
	}
	w.metrics.Call(key, rec.Status, rec.Outcome, time.Duration(rec.DurationNs), rec.ColdStart)
}

// acquireError explains why a call got no slot.
func acquireError(err error, fn *gust.Function, cfg gust.FunctionConfig, ready time.Duration) error {
	switch {
	case errors.Is(err, errStartFailed):
		return gust.Errorf(gust.EUNAVAILABLE, "function %s could not start: %s", fn.Key(), gust.ErrorMessage(errors.Unwrap(err)))
	case errors.Is(err, errTooManyWaiting):
		return gust.Errorf(gust.ETOOMANY, "function %s has as many calls waiting for a free instance as this worker holds; retry later", fn.Key())
	case errors.Is(err, errNoSlot):
		return gust.Errorf(gust.EUNAVAILABLE, "function %s had no free instance within %s (its timeout %s and the ready timeout %s)", fn.Key(), cfg.Timeout+ready, cfg.Timeout, ready)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return gust.Errorf(gust.EUNAVAILABLE, "call of %s ended while it waited for an instance", fn.Key())
	}
	return err
}

// failed meters a call that got no (whole) answer from its instance and
// returns its error: ETOOLARGE for a body over the limit, ETIMEOUT past
// the function's timeout, EFUNCTION when the function broke the
// connection or answered something that is not HTTP; nil when the caller
// went away. A timed-out or crashed instance is checked and replaced if it
// does not recover.
func (w *Worker) failed(h http.Header, r *http.Request, p *pool, in *instance, fn *gust.Function, cfg gust.FunctionConfig, ctx context.Context, err error, rec *gust.CallRecord, body *countingReader) error {
	var out error
	outcome := gust.OutcomeCrashed
	switch {
	case proxy.IsBodyTooLarge(err):
		outcome, out = gust.OutcomeRejected, gust.Errorf(gust.ETOOLARGE, "request body is over the gateway's limit")
	case r.Context().Err() != nil:
		outcome = gust.OutcomeError // caller went away: nobody to answer
	case timedOut(ctx):
		outcome, out = gust.OutcomeTimeout, gust.Errorf(gust.ETIMEOUT, "function %s did not answer within its timeout %s", fn.Key(), cfg.Timeout)
	default:
		out = gust.Errorf(gust.EFUNCTION, "function %s failed to answer: %s", fn.Key(), transportFailure(err))
	}
	w.finish(rec, time.Now(), body.N(), 0)
	rec.Status, rec.Outcome = 499, outcome
	if out != nil {
		rec.Status = gust.HTTPStatus(out)
	}
	if outcome == gust.OutcomeRejected {
		rec.BilledNs = 0 // it never ran
	}
	if outcome == gust.OutcomeCrashed || outcome == gust.OutcomeTimeout {
		p.mu.Lock()
		in.suspect = true
		p.mu.Unlock()
		w.recheckLater(p, in, cfg)
		p.logger.Warn("call failed", zap.String("invocation_id", rec.CallID), zap.String("instance_id", in.id), zap.Int("status", rec.Status), zap.Error(err))
	}
	setFigures(h, rec, h.Get(gust.HeaderCallID), rec.ColdStart)
	w.meterCall(rec, p.key)
	return out
}

// timedOut reports whether the call's deadline has passed. The function
// is told the deadline (X-Gust-Deadline) and may drop the connection right
// at it, a moment before ctx's own timer fires: that is a timeout too, not
// a crash.
func timedOut(ctx context.Context) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// transportFailure says how a call to an instance failed, in words that
// carry none of the transport's error text: that names the instance's
// address, which callers must not see.
func transportFailure(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before a whole answer"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "no answer in time"
	}
	return "the answer was not valid HTTP"
}

// recheckLater runs recheck in a goroutine the worker owns.
func (w *Worker) recheckLater(p *pool, in *instance, cfg gust.FunctionConfig) {
	w.tasks.Go(func(context.Context) { w.recheck(p, in, cfg) })
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

// writeError answers err in the data plane's error shape, with the
// status of its code (the table the gateway uses too).
func writeError(rw http.ResponseWriter, err error) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(gust.HTTPStatus(err))
	b, _ := json.Marshal(gust.ErrorBodyOf(err))
	rw.Write(append(b, '\n'))
}
