// Package sdk serves a Gust function: one http.Handler behind the Gust
// function contract. It uses the standard library only.
//
// The contract: the function serves HTTP on $PORT (8080 by default), answers
// GET /_/health with 200 once it is ready, and gets the call id in the
// X-Call-Id header and the call deadline in the X-Gust-Deadline header. Serve
// takes care of all of that; the handler reads the call metadata with CallID
// and Deadline, and a handler that honours r.Context() stops at the deadline.
//
// A complete function:
//
//	package main
//
//	import (
//		"fmt"
//		"net/http"
//
//		sdk "github.com/gustfaas/gust/functions-sdk"
//	)
//
//	func main() {
//		sdk.RunFunc(func(w http.ResponseWriter, r *http.Request) {
//			fmt.Fprintf(w, "hello from call %s\n", sdk.CallID(r.Context()))
//		})
//	}
package sdk

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Names of the headers, environment variables and paths of the function
// contract.
const (
	// HeaderCallID carries the id the platform gave to the call.
	HeaderCallID = "X-Call-Id"
	// HeaderDeadline carries the call's deadline in RFC 3339 with
	// nanoseconds.
	HeaderDeadline = "X-Gust-Deadline"
	// HealthPath is the readiness path the SDK answers itself (the OpenFaaS
	// watchdog path).
	HealthPath = "/_/health"

	// EnvPort names the port to listen on; DefaultPort when unset.
	EnvPort = "PORT"
	// EnvShutdownTimeout bounds, as a Go duration ("10s"), how long Serve
	// waits for in-flight calls after a shutdown signal; DefaultShutdownTimeout
	// when unset.
	EnvShutdownTimeout = "GUST_SHUTDOWN_TIMEOUT"
)

// DefaultPort is the port Serve listens on when $PORT is unset.
const DefaultPort = "8080"

// DefaultShutdownTimeout is how long Serve waits for in-flight calls when
// $GUST_SHUTDOWN_TIMEOUT is unset.
const DefaultShutdownTimeout = 10 * time.Second

// readHeaderTimeout bounds how long a client may take to send the request
// headers. There is no read, write or handler timeout: a call may stream for as
// long as its deadline allows, and the platform enforces that deadline.
const readHeaderTimeout = 10 * time.Second

// idleTimeout closes keep-alive connections the platform stopped using.
const idleTimeout = 2 * time.Minute

// maxHeaderBytes bounds a request's headers: more than the gateway and the
// worker let through (64 KiB), so a call they pass is never refused here.
const maxHeaderBytes = 1 << 20

// Serve serves h on ":"+$PORT until the process gets SIGTERM or SIGINT.
//
// GET (and HEAD) /_/health answers 200 "ok" without reaching h. Every other
// request goes to h, with the call metadata in its context (see CallID and
// Deadline).
//
// On SIGTERM or SIGINT, Serve stops accepting connections, waits for in-flight
// calls to finish for at most $GUST_SHUTDOWN_TIMEOUT (10s by default) and
// returns nil. If calls are still running when that time is up, their contexts
// are cancelled, their connections closed, and Serve returns an error wrapping
// context.DeadlineExceeded. Serve returns an error at once if
// $GUST_SHUTDOWN_TIMEOUT is not a valid duration or if it cannot listen.
func Serve(h http.Handler) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return serveEnv(ctx, h)
}

// Run calls Serve and, if it fails, prints the error to stderr and exits the
// process with status 1. It returns after a clean shutdown.
func Run(h http.Handler) {
	if err := Serve(h); err != nil {
		fmt.Fprintf(os.Stderr, "gust function: %v\n", err)
		os.Exit(1)
	}
}

// RunFunc is Run for a handler function.
func RunFunc(f func(http.ResponseWriter, *http.Request)) {
	Run(http.HandlerFunc(f))
}

// Wrap returns the handler Serve serves: it answers GET and HEAD /_/health
// itself and passes every other request to h with the call metadata in its
// context. Use it to test a function with net/http/httptest; Serve wraps h
// already.
func Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == HealthPath && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				io.WriteString(w, "ok")
			}
			return
		}
		ctx, cancel := withCall(r.Context(), r.Header)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// CallID returns the id the platform gave to the call whose request context
// is ctx, from the X-Call-Id header. It returns "" if the request had none or
// ctx does not come from a request served by Serve or Wrap.
func CallID(ctx context.Context) string {
	c, _ := ctx.Value(callKey{}).(call)
	return c.id
}

// Deadline returns the deadline the platform gave to the call whose request
// context is ctx, from the X-Gust-Deadline header. ok is false if the request
// had no such header, the header was not RFC 3339, or ctx does not come from a
// request served by Serve or Wrap. When there is a deadline the request
// context is also cancelled at that time, so a handler that honours
// r.Context() stops in time.
func Deadline(ctx context.Context) (deadline time.Time, ok bool) {
	c, _ := ctx.Value(callKey{}).(call)
	return c.deadline, c.hasDeadline
}

// callKey is the context key of the call metadata.
type callKey struct{}

// call is the metadata the platform sends with a call.
type call struct {
	id          string
	deadline    time.Time
	hasDeadline bool
}

// withCall returns ctx with the call metadata from hdr and, when hdr has a
// valid deadline, cancelled at that deadline. The caller must call cancel.
func withCall(ctx context.Context, hdr http.Header) (context.Context, context.CancelFunc) {
	c := call{id: hdr.Get(HeaderCallID)}
	if v := hdr.Get(HeaderDeadline); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			c.deadline, c.hasDeadline = t, true
		}
	}
	ctx = context.WithValue(ctx, callKey{}, c)
	if c.hasDeadline {
		return context.WithDeadline(ctx, c.deadline)
	}
	return ctx, func() {}
}

// serveEnv reads $PORT and $GUST_SHUTDOWN_TIMEOUT, listens, and serves h until
// ctx is done. Serve calls it with a context that signals end.
func serveEnv(ctx context.Context, h http.Handler) error {
	port := os.Getenv(EnvPort)
	if port == "" {
		port = DefaultPort
	}
	timeout := DefaultShutdownTimeout
	if v := os.Getenv(EnvShutdownTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("parse %s: %w", EnvShutdownTimeout, err)
		}
		if d < 0 {
			return fmt.Errorf("parse %s: negative duration %q", EnvShutdownTimeout, v)
		}
		timeout = d
	}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return serve(ctx, ln, h, timeout)
}

// serve serves Wrap(h) on ln until ctx is done or serving fails, then shuts
// down gracefully within timeout. It closes ln. It returns nil after a clean
// shutdown.
func serve(ctx context.Context, ln net.Listener, h http.Handler, timeout time.Duration) error {
	// Requests derive from base so a forced shutdown can cancel the handlers
	// still running.
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := &http.Server{
		Handler:           Wrap(h),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return base },
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		cancelBase()
		srv.Close()
	}
	<-served // http.ErrServerClosed once Shutdown or Close has begun
	if err != nil {
		return fmt.Errorf("shutdown: in-flight calls did not finish within %v: %w", timeout, err)
	}
	return nil
}
