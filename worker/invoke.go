package worker

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/proxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var _ gust.Invoker = (*Worker)(nil)

// Invoke runs one call of fn in a free slot of a warm instance, starting
// one if needed, and streams the function's answer to w. r.URL.Path is
// the path the function sees. The call gets the function's timeout; it
// never waits longer than that for a slot either.
func (w *Worker) Invoke(rw http.ResponseWriter, r *http.Request, fn *gust.Function) error {
	w.calls.Add(1)
	defer w.calls.Done()
	p, err := w.poolFor(fn)
	if err != nil {
		return err
	}
	p.mu.Lock()
	cfg := p.cfg // parsed once per deploy, not per call
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), cfg.Timeout)
	defer cancel()

	in, cold, err := p.acquire(ctx)
	if err != nil {
		return acquireError(err, fn, cfg)
	}
	defer p.release(in)

	callID := r.Header.Get(gust.HeaderCallID)
	deadline, _ := ctx.Deadline()
	out, err := proxy.Outbound(ctx, r, in.addr, r.URL.EscapedPath(), r.URL.RawQuery)
	if err != nil {
		return gust.Errorf(gust.EINVALID, "bad request: %v", err)
	}
	out.Header.Set(gust.HeaderDeadline, deadline.UTC().Format(time.RFC3339Nano))
	t0 := time.Now()
	resp, err := w.transport.RoundTrip(out)
	dur := time.Since(t0)
	h := rw.Header()
	h.Set(gust.HeaderCallID, callID)
	h.Set(gust.HeaderDuration, strconv.FormatFloat(dur.Seconds(), 'f', 6, 64))
	if cold {
		h.Set(gust.HeaderColdStart, "true")
	}
	if err != nil {
		w.callFailed(rw, r, p, in, fn, cfg, ctx, err)
		return nil
	}
	defer resp.Body.Close()
	proxy.CopyHeader(h, resp)
	h.Set(gust.HeaderCallID, callID)
	rw.WriteHeader(resp.StatusCode)
	if _, err := proxy.CopyBody(rw, resp); err != nil {
		if ce := p.logger.Check(zapcore.DebugLevel, "response body cut short"); ce != nil {
			ce.Write(zap.String("invocation_id", callID), zap.Error(err))
		}
	}
	return nil
}

// acquireError explains why a call got no slot.
func acquireError(err error, fn *gust.Function, cfg gust.FunctionConfig) error {
	switch {
	case errors.Is(err, errStartFailed):
		return gust.Errorf(gust.EUNAVAILABLE, "function %s could not start: %s", fn.Key(), gust.ErrorMessage(errors.Unwrap(err)))
	case errors.Is(err, context.DeadlineExceeded):
		return gust.Errorf(gust.EUNAVAILABLE, "function %s had no free instance within its timeout %s", fn.Key(), cfg.Timeout)
	case errors.Is(err, gust.ErrDraining):
		return gust.Errorf(gust.EUNAVAILABLE, "worker is draining")
	}
	return err
}

// callFailed answers a call that got no answer from its instance: 413 for
// a body over the limit, 504 past the timeout, 502 when the function
// crashed or answered something that is not HTTP. The instance is checked
// and replaced if it does not recover.
func (w *Worker) callFailed(rw http.ResponseWriter, r *http.Request, p *pool, in *instance, fn *gust.Function, cfg gust.FunctionConfig, ctx context.Context, err error) {
	status, msg := http.StatusBadGateway, "function "+fn.Key()+" failed to answer: "+trimErr(err)
	switch {
	case proxy.IsBodyTooLarge(err):
		status, msg = http.StatusRequestEntityTooLarge, "request body is over the gateway's limit"
	case r.Context().Err() != nil:
		status, msg = 499, "caller went away"
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		status, msg = http.StatusGatewayTimeout, "function "+fn.Key()+" did not answer within its timeout "+cfg.Timeout.String()
	}
	if status == http.StatusBadGateway || status == http.StatusGatewayTimeout {
		p.mu.Lock()
		in.suspect = true
		p.mu.Unlock()
		go w.recheck(p, in, cfg)
		p.logger.Warn("call failed", zap.String("invocation_id", r.Header.Get(gust.HeaderCallID)), zap.String("instance_id", in.id), zap.Int("status", status), zap.Error(err))
	}
	if status == 499 {
		return
	}
	writeError(rw, status, msg)
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
