// Package gateway is the edge of Gust: the OpenFaaS-compatible management
// API, the invoke endpoints and the activator that holds calls while a
// function gets placed. It also holds the HTTP client the CLI uses.
package gateway

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway/ui"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/gustfaas/gust/internal/httplimits"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/tasks"
	"go.uber.org/zap"
)

// Config of the gateway.
type Config struct {
	// Listen is the address of the HTTP API, e.g. ":8080".
	Listen string
	// MaxBodyBytes bounds an invocation's request body; above it the call
	// answers 413.
	MaxBodyBytes int64
	// DeployTimeout bounds how long a deploy waits for the function's first
	// instance (an image pull and a start).
	DeployTimeout time.Duration
	// Version is reported by /system/info.
	Version string
	// AdminPassword turns authentication on: the admin (HTTP Basic, user
	// "admin") acts everywhere, a namespace's key in its namespace, and
	// anonymous callers only call public functions. Empty, the gateway
	// authenticates nobody and lets every caller act as admin.
	AdminPassword string
	// HTTP are the time and size limits of the HTTP server; calls and
	// deploys extend their own deadlines past them (internal/httplimits).
	HTTP httplimits.Limits
	// Bounds are the largest resources, scale, timeouts, labels and
	// annotations a deploy may ask for (400 naming the field above).
	Bounds gust.Bounds
	// MaxWaiting bounds the calls of one function waiting here for its
	// placement; past it a call is refused with 429 and Retry-After.
	MaxWaiting int
	// EventBufferBytes bounds the bytes of core-NATS trigger messages
	// waiting to run, per function; past it a message is dropped and
	// counted, as past the buffer's count.
	EventBufferBytes int64
	// CallbackAllow lists the loopback, link-local or private
	// destinations callbacks may go to all the same (outbound.go).
	CallbackAllow OutboundAllow
	// CallbackAdminLoopback lets the callbacks of calls made as admin go
	// to this host's loopback too, except to Gust's own listeners (this
	// gateway's port and OwnPorts): the admin is the operator, who
	// could allow it anyway, and a callback to a local test server is
	// what a developer on one machine does. Keys and anonymous callers
	// never reach loopback unless CallbackAllow lists it.
	CallbackAdminLoopback bool
	// OwnPorts are the ports of Gust's other listeners on this host
	// (NATS, a worker's listener, metrics), never a callback's target.
	OwnPorts []uint16
}

// DefaultConfig returns the gateway defaults.
func DefaultConfig() Config {
	return Config{
		Listen:                ":8080",
		MaxBodyBytes:          20 << 20,
		DeployTimeout:         6 * time.Minute,
		Version:               "dev",
		HTTP:                  httplimits.Default(),
		Bounds:                gust.DefaultBounds(),
		MaxWaiting:            DefaultMaxWaiting,
		CallbackAdminLoopback: true,
		// A few hundred NATS messages of the largest size, or the
		// 10000 of the buffer's count at 6 KiB each.
		EventBufferBytes: 64 << 20,
	}
}

// DefaultMaxWaiting is Config.MaxWaiting when it is not set.
const DefaultMaxWaiting = 500

// Server serves the gateway's HTTP API.
type Server struct {
	cfg    Config
	state  *gust.State
	reqs   gust.Requests
	router *Router
	logger *zap.Logger
	// audit logs the state-changing management calls (auth.go).
	audit *zap.Logger

	billing gust.BillingStore
	pricing billing.Pricing
	meter   gust.Meter
	metrics *metrics.Metrics

	async      *Async
	dispatcher *Dispatcher

	// tenancy holds namespaces, their keys and secrets; nil on a gateway
	// without access control (no key authenticates then).
	tenancy *gust.Tenancy
	// quota enforces the namespaces' quotas (quota.go).
	quota quotaState
	// logs serves the function logs kept (logs.go); nil: 503.
	logs *logService

	ln net.Listener
	// port is the port ln is bound to, for the dispatcher's goroutines
	// (callbacks never go there: ownPort).
	port atomic.Int32
	srv  *http.Server
	// served is closed when the Serve goroutine has returned.
	served chan struct{}
	// tasks owns the server's background work (the placement after a
	// scale); Close ends it.
	tasks *tasks.Group
}

// New returns a gateway. router resolves functions to invokers.
func New(cfg Config, state *gust.State, reqs gust.Requests, router *Router, logger *zap.Logger) *Server {
	s := &Server{cfg: cfg, state: state, reqs: reqs, router: router, logger: logger.Named("gateway"), tasks: tasks.New(context.Background())}
	s.audit = logger.Named("audit")
	s.srv = &http.Server{ErrorLog: zap.NewStdLog(s.logger.Named("http"))}
	cfg.HTTP.Apply(s.srv)
	router.maxWaiting = cfg.MaxWaiting
	if router.maxWaiting <= 0 {
		router.maxWaiting = DefaultMaxWaiting
	}
	return s
}

// Open starts the router's watches and the dispatcher and listens; it
// returns once the gateway accepts connections. ctx bounds the start; what
// Open starts runs until Close.
func (s *Server) Open(ctx context.Context) error {
	if err := s.cfg.Bounds.Check(); err != nil {
		return fmt.Errorf("gateway bounds: %s", gust.ErrorMessage(err))
	}
	stopQuotas, err := s.startQuotas(ctx)
	if err != nil {
		return err
	}
	// A failed Open stops the quotas' watch; Close stops it otherwise.
	defer func() {
		if s.ln == nil {
			stopQuotas()
		}
	}()
	if err := s.router.Start(ctx); err != nil {
		return err
	}
	if s.dispatcher != nil {
		if err := s.dispatcher.Start(ctx); err != nil {
			s.router.Close()
			return err
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		if s.dispatcher != nil {
			s.dispatcher.Close()
		}
		s.router.Close()
		return fmt.Errorf("gateway listen on %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		s.port.Store(int32(a.Port))
	}
	s.srv.Handler = s.Handler()
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("serve", zap.Error(err))
		}
	}()
	s.logger.Info("gateway listening", zap.String("addr", ln.Addr().String()))
	return nil
}

// WithTenancy serves namespaces, keys and secrets from t and
// authenticates namespace keys against it. Call it before Open.
func (s *Server) WithTenancy(t *gust.Tenancy) *Server {
	s.tenancy = t
	return s
}

// Addr is the address the gateway listens on (after Open).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops accepting calls and waits (until ctx ends) for the calls in
// flight to finish, then stops the dispatcher, the router and the
// server's background work, and waits for them.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if s.served != nil {
		<-s.served // Serve returns as soon as Shutdown closed the listener
	}
	s.tasks.Close()
	if s.dispatcher != nil {
		s.dispatcher.Close()
	}
	s.router.Close()
	return err
}

// Handler returns the gateway's routes: the table of routes, each behind
// the guard of its access rule.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	var invoke http.Handler
	for _, rt := range s.routes() {
		h := s.guard(rt)
		switch {
		case rt.pattern == "/function/*":
			// Calls skip chi: its routing context costs on every call,
			// and the invoke handler parses its path itself.
			invoke = h
		case rt.method == "":
			r.Handle(rt.pattern, h)
		default:
			r.Method(rt.method, rt.pattern, h)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/function/") {
			invoke.ServeHTTP(w, req)
			return
		}
		r.ServeHTTP(w, req)
	})
}

// routes is the gateway's route table: every route with its access rule
// (auth.go). Handler registers exactly these, and the auth matrix test
// walks them, so a route cannot exist without a rule.
func (s *Server) routes() []endpoint {
	h := func(fn func(w http.ResponseWriter, r *http.Request) error) http.Handler { return handle(s, fn) }
	healthz := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("OK\n")) })
	return []endpoint{
		{"GET", "/healthz", rulePublic, healthz},
		{"GET", "/metrics", ruleAdmin, s.metrics.Handler()},

		{"GET", "/system/info", ruleCaller, h(s.info)},
		{"GET", "/system/namespaces", ruleNamespaced(nsQuery), h(s.namespaces)},
		{"GET", "/system/functions", ruleNamespaced(nsQuery), h(s.listFunctions)},
		{"POST", "/system/functions", ruleNamespaced(nsBody), h(s.deploy)},
		{"PUT", "/system/functions", ruleNamespaced(nsBody), h(s.update)},
		{"DELETE", "/system/functions", ruleNamespaced(nsBodyOrQuery), h(s.deleteFunction)},
		{"GET", "/system/function/{name}", ruleNamespaced(nsQuery), h(s.getFunction)},
		{"POST", "/system/scale-function/{name}", ruleNamespaced(nsBodyOrQuery), h(s.scaleFunction)},
		{"GET", "/system/billing", ruleNamespaced(nsQuery), h(s.billingReport)},
		{"GET", "/system/invocations", ruleNamespaced(nsQuery), h(s.listInvocations)},
		{"GET", "/system/invocations/{callId}", ruleNamespaced(nsInvocation), h(s.getInvocation)},
		{"GET", "/system/deadletters", ruleNamespaced(nsQuery), h(s.listDeadLetters)},
		{"DELETE", "/system/deadletters", ruleNamespaced(nsQuery), h(s.purgeDeadLetters)},
		{"GET", "/system/deadletters/{callId}", ruleNamespaced(nsDeadLetter), h(s.getDeadLetter)},
		{"POST", "/system/deadletters/{callId}/redrive", ruleNamespaced(nsDeadLetter), h(s.redriveDeadLetter)},
		// Function logs (logs.go).
		{"GET", "/system/logs", ruleNamespaced(nsQuery), h(s.functionLogs)},

		// Tenancy (namespaces.go, keys.go, secrets.go): 404 without one.
		{"POST", "/system/namespace", ruleAdmin, h(s.createNamespace)},
		{"POST", "/system/namespace/", ruleAdmin, h(s.createNamespace)},
		{"GET", "/system/namespace/{name}", ruleNamespaced(nsPathName), h(s.getNamespace)},
		{"PUT", "/system/namespace/{name}", ruleAdmin, h(s.updateNamespace)},
		{"DELETE", "/system/namespace/{name}", ruleAdmin, h(s.deleteNamespace)},
		{"GET", "/system/keys", ruleAdmin, h(s.listKeys)},
		{"POST", "/system/keys", ruleAdmin, h(s.createKey)},
		{"DELETE", "/system/keys/{id}", ruleAdmin, h(s.deleteKey)},
		{"GET", "/system/secrets", ruleNamespaced(nsQuery), h(s.listSecrets)},
		{"POST", "/system/secrets", ruleNamespaced(nsBodyOrQuery), h(s.createSecret)},
		{"PUT", "/system/secrets", ruleNamespaced(nsBodyOrQuery), h(s.updateSecret)},
		{"DELETE", "/system/secrets", ruleNamespaced(nsBodyOrQuery), h(s.deleteSecret)},

		// The cluster's workers (workers.go).
		{"GET", "/system/workers", ruleAdmin, h(s.listWorkers)},
		{"POST", "/system/workers/{id}/drain", ruleAdmin, h(s.drainWorker)},

		// The dashboard (gateway/ui): its files for any caller (a
		// browser gets the Basic challenge), its data as the API's.
		{"GET", "/ui", ruleCaller, ui.Redirect()},
		{"GET", "/ui/*", ruleCaller, ui.Static()},
		{"GET", "/ui/api/pools", ruleNamespaced(nsQuery), h(s.dashboard().Pools)},
		{"GET", "/ui/api/activity", ruleNamespaced(nsQuery), h(s.dashboard().Activity)},

		{"", "/async-function/*", ruleCall, h(s.asyncInvoke)},
		{"", "/function/*", ruleCall, h(s.invoke)},
	}
}

// dashboard is the dashboard's own API over the gateway's state.
func (s *Server) dashboard() *ui.API { return &ui.API{Status: s.state.Status, Billing: s.billing} }

// handle adapts a handler that returns an error to http.HandlerFunc; the
// error becomes a JSON answer with the status of its code.
func handle(s *Server, fn func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}
}

// writeError answers err: the status of its code (gust.HTTPStatus, the
// table the worker uses too) and gust.ErrorBody. Internal errors are
// logged in full under an id the caller gets instead of their details.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	body := gust.ErrorBodyOf(err)
	status := gust.HTTPStatus(err)
	if status == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "" {
		// Every 429 says when to come back, wherever it was decided.
		w.Header().Set("Retry-After", "1")
	}
	if body.Code == gust.EINTERNAL {
		body.ID = newID(8)
		s.logger.Error("internal error", zap.String("error_id", body.ID), zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
	} else if ce := s.logger.Check(zap.DebugLevel, "request failed"); ce != nil {
		ce.Write(zap.String("path", r.URL.Path), zap.Int("status", status), zap.Error(err))
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// newCallID returns a call's id: 16 bytes in hex, the first six the
// milliseconds since the Unix epoch (big-endian, as UUIDv7 has them) and
// the other ten random. Ids made one after the other sort close together:
// the billing store's index of call ids then grows at its end rather than
// at random pages, which halved the cost of an insert at 200k records
// (9 against 18 µs a record, docs/benchmarks.md) and keeps its hot pages
// few as it grows. Eighty random bits keep ids unique across gateways.
func newCallID() string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	binary.BigEndian.PutUint64(b[:8], ms<<16) // the low 48 bits, first
	binary.LittleEndian.PutUint64(b[6:14], rand.Uint64())
	binary.LittleEndian.PutUint16(b[14:], uint16(rand.Uint32()))
	return hex.EncodeToString(b[:])
}

// newID returns n random bytes in hex. The generator is math/rand/v2's
// (ChaCha8, seeded per process): ids must be unique, not secret.
func newID(n int) string {
	// On the stack for the ids of calls and errors (n ≤ 24): this runs
	// on every call.
	var buf [32]byte
	b := buf[:]
	if n+8 > len(buf) {
		b = make([]byte, n+8)
	}
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rand.Uint64())
	}
	return hex.EncodeToString(b[:n])
}
