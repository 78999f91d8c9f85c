package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gustfaas/gust"
)

// WithAsync enables async calls, event triggers and dead letters, run by
// d. Call it before Open.
func (s *Server) WithAsync(a *Async, d *Dispatcher) *Server {
	s.async, s.dispatcher = a, d
	if d != nil {
		d.client = s.cfg.CallbackAllow.client(callbackTimeout)
		d.adminClient = s.callbackAllow(true).client(callbackTimeout)
		if s.cfg.EventBufferBytes > 0 {
			d.EventBufferBytes = s.cfg.EventBufferBytes
		}
	}
	return s
}

// hopByHop headers are not stored with an async call.
var asyncSkipHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Te": true, "Trailer": true, "Transfer-Encoding": true,
	"Upgrade": true, "Content-Length": true, gust.HeaderCallbackURL: true, gust.HeaderIdempotencyKey: true,
	gust.HeaderTrigger: true, "Idempotency-Key": true, gust.HeaderGustCallID: true,
}

// asyncInvoke answers ANY /async-function/{name}[.{ns}][/{path}]: the call
// is stored in JetStream and answered 202 with its X-Call-Id; the
// dispatcher runs it. A repeated idempotency key within the window gets
// the first call's id and enqueues nothing.
func (s *Server) asyncInvoke(w http.ResponseWriter, r *http.Request) error {
	if s.async == nil {
		return gust.Errorf(gust.EUNAVAILABLE, "async calls are not enabled on this gateway")
	}
	fn, sub, err := s.target(r, "/async-function/")
	if err != nil {
		return err
	}
	// The body travels base64-encoded in one queue message: a body over
	// 3/4 of it cannot fit, whatever its headers.
	maxData := s.async.maxData()
	limit := min(s.cfg.MaxBodyBytes, int64(maxData/4*3))
	if r.ContentLength > limit {
		return gust.Errorf(gust.ETOOLARGE, "async request body of %d bytes is over the limit of %d", r.ContentLength, limit)
	}
	cb := r.Header.Get(gust.HeaderCallbackURL)
	adminCallback := cb != "" && CallerFrom(r.Context()).Admin && s.cfg.CallbackAdminLoopback
	if cb != "" {
		if err := validCallback(cb, s.callbackAllow(adminCallback)); err != nil {
			return err
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return gust.Errorf(gust.ETOOLARGE, "async request body is over the limit of %d bytes", limit)
		}
		return gust.Errorf(gust.EINVALID, "read request body: %v", err)
	}
	// The call id is Gust's own: it keys the call's status, its queue
	// message and its records, so a caller cannot choose (or reuse) it.
	callID := newCallID()
	ctx := r.Context()
	h := http.Header{}
	for k, v := range r.Header {
		if !asyncSkipHeaders[k] {
			h[k] = v
		}
	}
	req := gust.AsyncRequest{
		CallID: callID, Namespace: fn.Spec.Namespace, Function: fn.Spec.Service, Method: r.Method,
		Path: "/" + sub, Query: r.URL.RawQuery, Header: h, Body: body, CallbackURL: cb,
		CallbackLoopback: adminCallback, Enqueued: time.Now().UTC(), Trigger: gust.TriggerAsync,
		// Its size is checked before anything is stored: the revision
		// set below adds at most 20 digits.
		StatusRev: math.MaxUint64,
	}
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	// Refused before anything is stored: no status, no idempotency key.
	if len(data) > maxData {
		return gust.Errorf(gust.ETOOLARGE, "async call of %d bytes (its body base64-encoded, with its headers) is over the queue's limit of %d bytes; send a smaller body", len(data), maxData)
	}
	key := r.Header.Get(gust.HeaderIdempotencyKey)
	if key == "" {
		key = r.Header.Get("Idempotency-Key")
	}
	var idemKey string
	if key != "" {
		sum := sha256.Sum256([]byte(key))
		idemKey = fn.Key() + "." + hex.EncodeToString(sum[:16])
		if _, err := s.async.Idempotency.Create(ctx, idemKey, callID); errors.Is(err, gust.ErrConflict) {
			first, _, gerr := s.async.Idempotency.Get(ctx, idemKey)
			if gerr == nil {
				w.Header().Set(gust.HeaderCallID, first)
				w.WriteHeader(http.StatusAccepted)
				return nil
			}
		} else if err != nil {
			return err
		}
	}
	// The "queued" status first, then the message under the function's
	// subject, carrying the status's revision: the dispatcher marks the
	// call running only if nothing wrote its status since (claim), one
	// conditional write that is also the check that no attempt ran.
	rev, err := s.async.Calls.Put(ctx, callID, gust.AsyncStatus{CallID: callID, Namespace: req.Namespace,
		Function: req.Function, State: gust.AsyncQueued, Enqueued: req.Enqueued, Updated: req.Enqueued})
	if err == nil {
		req.StatusRev = rev
		data, err = json.Marshal(req)
	}
	if err == nil {
		err = s.async.Queue.Enqueue(ctx, asyncSubject(fn.Key()), callID, data)
	}
	if err != nil {
		// Not queued: leave no trace of it, even if the caller has gone.
		bg := context.WithoutCancel(ctx)
		if rev != 0 {
			_ = s.async.Calls.Delete(bg, callID)
		}
		if idemKey != "" {
			_ = s.async.Idempotency.Delete(bg, idemKey)
		}
		return err
	}
	s.metrics.AsyncEnqueue(fn.Key())
	w.Header().Set(gust.HeaderCallID, callID)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// asyncSubject is the queue subject of a function's async calls: one
// subject for all of them. (A release queued each call under a subject of
// its own, the function's followed by the call id, so that the message
// could stand for the call's "queued" status. The server then had as
// many subjects as queued calls, and a consumer that had caught up with
// the head of the stream, as one running a call at a time does, walked
// all of its function's subjects for every message it took: a backlog of
// 10 000 drained in 42.6 s against 0.97 s under one subject, and slower
// the longer it was, BenchmarkSerialDrain. The dispatcher still consumes
// both subjects, for the calls such a release queued.)
func asyncSubject(fnKey string) string { return gust.SubjectAsyncPrefix + fnKey }

// callStatus is the answer of GET /system/invocations/{callId} for an
// async call: its state and the records of its attempts.
type callStatus struct {
	gust.AsyncStatus
	Records []gust.CallRecord `json:"records"`
}

// asyncStatus returns the status of an async call with the records of
// its attempts, or nil when callID is not an async call.
func (s *Server) asyncStatus(r *http.Request, callID string) (*callStatus, error) {
	if s.async == nil || !statusKey(callID) {
		return nil, nil
	}
	st, _, err := s.async.Calls.Get(r.Context(), callID)
	if errors.Is(err, gust.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := &callStatus{AsyncStatus: st, Records: []gust.CallRecord{}}
	if s.billing != nil {
		for i := 1; i <= st.Attempts; i++ {
			if rec, err := s.billing.Call(r.Context(), gust.AttemptID(callID, i)); err == nil {
				out.Records = append(out.Records, rec)
			}
		}
	}
	return out, nil
}

// statusKey reports whether id can key a call's status: async call ids
// are hex and event ids letters, digits and '-'. Anything else (an
// attempt id "ID~2", a caller's own id) is not an async call's and no
// valid key of the status table either.
func statusKey(id string) bool {
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '=') {
			return false
		}
	}
	return id != ""
}

// listDeadLetters answers GET /system/deadletters?namespace=&function=&limit=.
func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	if s.async == nil {
		return gust.Errorf(gust.EUNAVAILABLE, "async calls are not enabled on this gateway")
	}
	q := r.URL.Query()
	ns, fn, err := nameFilters(q)
	if err != nil {
		return err
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return gust.Invalidf("limit", "limit=%q: want a whole number from 1 to %d", v, maxListLimit)
		}
		limit = n
	}
	dls, err := s.async.DeadLetters.List(r.Context(), ns, fn, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, dls)
	return nil
}

func (s *Server) deadLetter(r *http.Request) (gust.DeadLetter, error) {
	if s.async == nil {
		return gust.DeadLetter{}, gust.Errorf(gust.EUNAVAILABLE, "async calls are not enabled on this gateway")
	}
	id := chi.URLParam(r, "callId")
	dl, err := s.async.DeadLetters.Get(r.Context(), id)
	if errors.Is(err, gust.ErrNotFound) {
		return dl, gust.Errorf(gust.ENOTFOUND, "no dead letter for call %s", id)
	}
	return dl, err
}

// getDeadLetter answers GET /system/deadletters/{callId}.
func (s *Server) getDeadLetter(w http.ResponseWriter, r *http.Request) error {
	dl, err := s.deadLetter(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, dl)
	return nil
}

// redriveDeadLetter answers POST /system/deadletters/{callId}/redrive: the
// call goes back to its queue with fresh attempts and leaves the
// dead-letter stream.
func (s *Server) redriveDeadLetter(w http.ResponseWriter, r *http.Request) error {
	dl, err := s.deadLetter(r)
	if err != nil {
		return err
	}
	req := dl.Request
	if s.router.Function(req.Namespace, req.Function) == nil {
		return gust.Errorf(gust.ECONFLICT, "function %s no longer exists; deploy it before redriving", gust.FunctionKey(req.Namespace, req.Function))
	}
	req.AttemptOffset += dl.Attempts
	ctx := r.Context()
	now := time.Now().UTC()
	rev, err := s.async.Calls.Put(ctx, req.CallID, gust.AsyncStatus{CallID: req.CallID, Namespace: req.Namespace,
		Function: req.Function, State: gust.AsyncQueued, Attempts: req.AttemptOffset, Enqueued: req.Enqueued, Updated: now})
	if err != nil {
		return err
	}
	req.StatusRev = rev
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	msgID := req.CallID + "-redrive-" + strconv.FormatUint(dl.Seq, 10)
	if err := s.async.Queue.Enqueue(ctx, asyncSubject(gust.FunctionKey(req.Namespace, req.Function)), msgID, data); err != nil {
		return err
	}
	if err := s.async.DeadLetters.Delete(ctx, dl.Seq); err != nil {
		return err
	}
	w.Header().Set(gust.HeaderCallID, req.CallID)
	writeJSON(w, http.StatusAccepted, map[string]any{"callId": req.CallID, "state": gust.AsyncQueued})
	return nil
}

// purgeDeadLetters answers DELETE /system/deadletters?namespace=&function=.
func (s *Server) purgeDeadLetters(w http.ResponseWriter, r *http.Request) error {
	if s.async == nil {
		return gust.Errorf(gust.EUNAVAILABLE, "async calls are not enabled on this gateway")
	}
	ns, fn, err := nameFilters(r.URL.Query())
	if err != nil {
		return err
	}
	n, err := s.async.DeadLetters.Purge(r.Context(), ns, fn)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int{"purged": n})
	return nil
}

// nameFilters reads the optional namespace and function query
// parameters, validated.
func nameFilters(q url.Values) (ns, fn string, err error) {
	ns, fn = q.Get("namespace"), q.Get("function")
	if ns != "" && !gust.ValidName(ns) {
		return "", "", gust.Invalidf("namespace", "namespace %q is not a valid name", ns)
	}
	if fn != "" && !gust.ValidName(fn) {
		return "", "", gust.Invalidf("function", "function %q is not a valid name", fn)
	}
	return ns, fn, nil
}
