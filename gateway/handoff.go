package gateway

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"sync/atomic"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// notHandedError is the error of a call that no worker's function saw:
// the worker could not be reached, or turned the call away (draining, or
// not holding the function) and metered nothing. Such a call may go to
// another worker.
type notHandedError struct{ err *gust.Error }

func (e *notHandedError) Error() string { return e.err.Error() }
func (e *notHandedError) Unwrap() error { return e.err }

// answerCutError is the error of a call whose worker was lost while it
// streamed the answer, before its outcome: the caller has the start of
// the answer already, so the error is only metered (Server.invoke).
type answerCutError struct{ err *gust.Error }

func (e *answerCutError) Error() string { return e.err.Error() }
func (e *answerCutError) Unwrap() error { return e.err }

// maxReplayBody is the largest request body kept whole so that a call a
// worker turned away can be sent to another with its body; a longer body,
// or one of unknown length, is streamed, and its call goes elsewhere only
// when none of it was read.
const maxReplayBody = 1 << 20

// Invoke runs a call of fn on a live worker of its placement, activating
// fn when it has none, as gust.Invoker says. A call that was not handed
// to its worker (notHandedError: a worker gone, one that drains) is sent
// once more, to another worker of the placement. A call that may have
// reached its function is never sent twice: the worker's loss fails it
// (EFUNCTION, 502). When no worker metered the call (no gust.HeaderOutcome
// on w), the error says so to the caller, who meters it.
func (rt *Router) Invoke(w http.ResponseWriter, r *http.Request, fn *gust.Function) error {
	key := fn.Key() // once per call: it is built by concatenation
	inv, id, err := rt.invoker(r.Context(), key)
	if err != nil {
		return err
	}
	if !rt.hasOther(key, id) {
		// No other worker to try (one worker, as in `gust up`): the body
		// is not kept, the call streams as it comes.
		r.Header.Del(gust.HeaderHandoff)
		return inv.Invoke(w, r, fn)
	}
	body, err := replayable(r)
	if err != nil {
		return err
	}
	// Only a worker whose refusal the gateway can act on is asked not to
	// meter it: a body that cannot be sent again is not asked about.
	if body.whole != nil {
		r.Header.Set(gust.HeaderHandoff, gust.HandoffRetry)
	} else {
		r.Header.Del(gust.HeaderHandoff)
	}
	err = inv.Invoke(w, r, fn)
	if !rt.handedOff(w, err) || !body.again(r) {
		return err
	}
	next, nextID := rt.pick(key, nil, id)
	if next == nil {
		return err
	}
	rt.logger.Info("call sent to another worker", zap.String("function", fn.Key()), zap.String("worker_id", id), zap.String("to_worker_id", nextID), zap.String("invocation_id", r.Header.Get(gust.HeaderGustCallID)), zap.Error(err))
	// The last try: the worker meters whatever becomes of it.
	r.Header.Del(gust.HeaderHandoff)
	return next.Invoke(w, r, fn)
}

// handedOff reports whether err is a call no worker's function saw, and
// clears the worker's refusal from w.
func (rt *Router) handedOff(w http.ResponseWriter, err error) bool {
	if err == nil {
		return false
	}
	refused := w.Header().Get(gust.HeaderHandoff) == gust.HandoffRefused
	w.Header().Del(gust.HeaderHandoff)
	var nh *notHandedError
	return refused || errors.As(err, &nh)
}

// replayBody is a call's body as Invoke keeps it for a second try.
type replayBody struct {
	// whole is the whole body when it is short enough to keep (or
	// empty); nil for a body that is streamed.
	whole []byte
	// read counts the bytes of a streamed body read.
	read *countingBody
}

// replayable reads r's body whole when it is short (up to maxReplayBody)
// and puts it back on r; a longer one is counted as it streams.
func replayable(r *http.Request) (replayBody, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return replayBody{whole: []byte{}}, nil
	}
	if r.ContentLength > 0 && r.ContentLength <= maxReplayBody {
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			var mb *http.MaxBytesError
			if errors.As(err, &mb) {
				return replayBody{}, gust.Errorf(gust.ETOOLARGE, "request body is over the gateway's limit")
			}
			return replayBody{}, gust.Errorf(gust.EINVALID, "request body: read %d bytes of %d", len(b), r.ContentLength)
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		return replayBody{whole: b}, nil
	}
	c := &countingBody{ReadCloser: r.Body}
	r.Body = c
	return replayBody{read: c}, nil
}

// again puts the body back on r for a second try, and reports whether it
// could.
func (b replayBody) again(r *http.Request) bool {
	switch {
	case b.whole != nil:
		if len(b.whole) == 0 {
			r.Body = http.NoBody
		} else {
			r.Body = io.NopCloser(bytes.NewReader(b.whole))
		}
		return true
	case b.read != nil && b.read.n.Load() == 0:
		// Nothing was read: the transport closed it at most, which the
		// server's body survives (it is closed again when the call ends).
		r.Body = b.read.ReadCloser
		return true
	}
	return false
}

// countingBody counts the bytes read of a request body.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Close leaves the body open: a second try may still send it, and the
// server closes it when the call ends.
func (c *countingBody) Close() error { return nil }

// hasOther reports whether the placement of key names a worker besides
// id, which a call id could not take might be sent to.
func (rt *Router) hasOther(key, id string) bool {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	r := rt.placements[key]
	return r != nil && slices.ContainsFunc(r.pl.Workers, func(w string) bool { return w != id })
}
