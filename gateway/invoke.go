package gateway

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/httplimits"
)

// invoke answers ANY /function/{name}[.{namespace}][/{path}]: it resolves
// the function from the in-memory routing table, and the router picks a
// worker (or activates the function) whose invoker runs the call and
// streams the answer.
func (s *Server) invoke(w http.ResponseWriter, r *http.Request) error {
	// When the gateway received the call, on every answer, as OpenFaaS's
	// gateway sets it.
	arrived := time.Now()
	// The values of the headers set here share one slice, each capped at
	// its length (an Add copies it); the keys are canonical already.
	hv := make([]string, 4)
	hv[0] = strconv.FormatInt(arrived.UnixNano(), 10)
	w.Header()[gust.HeaderStartTime] = hv[0:1:1]
	fn, sub, err := s.target(r, "/function/")
	if err != nil {
		return err
	}
	// The call's body and answer may stream for as long as its function
	// may take: past the server's read and write timeouts.
	httplimits.Extend(w, callDeadline(fn))
	callID := newCallID()
	hv[1] = callID
	r.Header[gust.HeaderGustCallID] = hv[1:2:2] // a caller's value is overwritten
	callerID := r.Header.Get(gust.HeaderCallID)
	if callerID == "" {
		callerID = callID
		hv[3] = callID
		r.Header[gust.HeaderCallID] = hv[3:4:4]
	}
	hv[2] = callerID
	w.Header()[gust.HeaderCallID] = hv[2:3:3]
	r.Header.Del(gust.HeaderTrigger) // set by Gust's own dispatchers only
	r.Header.Del(gust.HeaderAttempt)
	if r.ContentLength > s.cfg.MaxBodyBytes {
		err := gust.Errorf(gust.ETOOLARGE, "request body of %d bytes is over the limit of %d", r.ContentLength, s.cfg.MaxBodyBytes)
		s.reject(fn, callID, callerID, arrived, err)
		return err
	}
	// A namespace at its quota.concurrency turns the call away at once
	// (ETOOMANY, 429): a sync caller retries, it does not queue here.
	slot, err := s.quota.calls.take(fn.Spec.Namespace)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		s.reject(fn, callID, callerID, arrived, err)
		return err
	}
	defer slot.release()
	// The function sees its own sub-path; the rest of the request is
	// passed as it came.
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.RawPath = "/" + sub
	u.Path = u.RawPath
	if strings.IndexByte(sub, '%') >= 0 {
		if p, err := url.PathUnescape(u.RawPath); err == nil {
			u.Path = p
		}
	}
	r2.URL = &u
	// The limit goes on the copy: net/http must still see the server's
	// own body, to know whether it was read to its end before reusing
	// the connection. A call without a body (net/http's NoBody) has
	// nothing to limit.
	if r.Body != http.NoBody {
		r2.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	}
	// The router picks the worker, and another when the first could not
	// take the call (handoff.go).
	if err := s.router.Invoke(w, r2, fn); err != nil {
		// A worker that metered the call said so (its outcome); a call
		// that reached no worker, or whose worker was lost, is still a
		// call on the record.
		if w.Header().Get(gust.HeaderOutcome) == "" {
			s.reject(fn, callID, callerID, arrived, err)
		}
		var cut *answerCutError
		if errors.As(err, &cut) {
			// The answer has begun: it ends cut short, as the worker's
			// did, so that the caller does not take it for whole (as
			// net/http's reverse proxy does).
			panic(http.ErrAbortHandler)
		}
		return err
	}
	return nil
}

// reject meters a call no worker metered: one the gateway turned away
// before any worker saw it, or whose worker was lost (then it may have
// run): a failed call is still a call on the record.
func (s *Server) reject(fn *gust.Function, callID, callerID string, arrived time.Time, err error) {
	if s.meter == nil {
		return
	}
	rec := gust.RejectedCall(fn, callID, gust.TriggerHTTP, arrived, gust.HTTPStatus(err))
	var cut *answerCutError
	if errors.As(err, &cut) {
		rec.Outcome = gust.OutcomeCrashed // it ran, and its worker was lost
	}
	if callerID != callID {
		rec.CallerID = callerID
	}
	s.meter.RecordCall(&rec)
}

// target resolves the function of a call path, prefix +
// NAME[.NAMESPACE][/SUB], from the routing table, and returns the escaped
// sub-path (without its leading slash).
func (s *Server) target(r *http.Request, prefix string) (*gust.Function, string, error) {
	// The call's guard resolved it already: serve the function it checked.
	if c, ok := r.Context().Value(calledKey{}).(called); ok {
		return c.fn, c.sub, nil
	}
	rest := strings.TrimPrefix(r.URL.EscapedPath(), prefix)
	seg, sub, _ := strings.Cut(rest, "/")
	name, ns := seg, gust.DefaultNamespace
	if i := strings.IndexByte(seg, '.'); i >= 0 {
		name, ns = seg[:i], seg[i+1:]
	}
	fn := s.router.Function(ns, name)
	if fn == nil {
		return nil, "", gust.Errorf(gust.ENOTFOUND, "function %s not found in namespace %s", name, ns)
	}
	return fn, sub, nil
}

// callDeadline is how long a sync call of fn may hold its connection: the
// wait for a placement (activationTimeout), then for a slot, which the
// worker bounds by the function's timeout and its ready timeout (a minute
// or less unless an operator raised it), then the call itself.
func callDeadline(fn *gust.Function) time.Duration {
	timeout := gust.DefaultTimeout
	if v, ok := fn.Spec.Labels[gust.LabelTimeout]; ok {
		// Parsed here rather than with fn.Config(), which would parse
		// every label on every call; the label was validated at deploy.
		if d, err := time.ParseDuration(strings.TrimSpace(v)); err == nil && d > 0 {
			timeout = d
		}
	}
	return activationTimeout + 2*timeout + 2*time.Minute
}
