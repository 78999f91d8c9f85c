// Package httplimits holds the time and size limits of Gust's HTTP
// servers, so that a slow or hostile client cannot hold a connection, a
// goroutine and its buffers for ever: a client that never finishes its
// headers is cut off after ReadHeaderTimeout, one that sends headers
// larger than MaxHeaderBytes gets 431.
//
// ReadTimeout and WriteTimeout cover a whole request and its answer, which
// is right for the management API but wrong for a function call: its body
// and its answer may stream for as long as the function's timeout, which
// an operator may set to an hour. So the server-wide values are short, and
// the handlers of calls and deploys, which know how long they may take,
// move their own connection's deadlines with Extend.
package httplimits

import (
	"net/http"
	"time"
)

// Limits are the limits of one HTTP server.
type Limits struct {
	// ReadHeaderTimeout bounds the reading of a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the reading of a whole request, body included,
	// unless its handler extends it.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the
	// end of its answer, unless its handler extends it.
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (431 above).
	MaxHeaderBytes int
}

// Default returns the limits of Gust's servers unless an operator sets
// others.
func Default() Limits {
	return Limits{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// Apply sets l on s; a zero field of l takes the value of Default.
func (l Limits) Apply(s *http.Server) {
	d := Default()
	or := func(v, def time.Duration) time.Duration {
		if v > 0 {
			return v
		}
		return def
	}
	s.ReadHeaderTimeout = or(l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	s.ReadTimeout = or(l.ReadTimeout, d.ReadTimeout)
	s.WriteTimeout = or(l.WriteTimeout, d.WriteTimeout)
	s.IdleTimeout = or(l.IdleTimeout, d.IdleTimeout)
	s.MaxHeaderBytes = l.MaxHeaderBytes
	if s.MaxHeaderBytes <= 0 {
		s.MaxHeaderBytes = d.MaxHeaderBytes
	}
}

// Extend lets the request answered by w read its body and write its
// answer for d from now, past the server's ReadTimeout and WriteTimeout:
// for handlers whose work is bounded otherwise (a call by its function's
// timeout, a deploy by the deploy timeout). A writer that cannot move its
// deadlines (a test recorder, an event's answer held in memory) is left as
// it is.
//
// It looks for the deadlines as http.ResponseController does, through
// Unwrap, but without one: the controller answers a writer without them
// with an error built by fmt.Errorf, twice per call, which was 5% of an
// event's CPU (docs/benchmarks.md, "Issue 11, fifth pass").
func Extend(w http.ResponseWriter, d time.Duration) {
	for {
		switch x := w.(type) {
		case deadlines:
			t := time.Now().Add(d)
			_ = x.SetReadDeadline(t)
			_ = x.SetWriteDeadline(t)
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return
		}
	}
}

// deadlines is what net/http's own response writer has.
type deadlines interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}
