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
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
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
}

// DefaultConfig returns the gateway defaults.
func DefaultConfig() Config {
	return Config{
		Listen:        ":8080",
		MaxBodyBytes:  20 << 20,
		DeployTimeout: 6 * time.Minute,
		Version:       "dev",
	}
}

// Server serves the gateway's HTTP API.
type Server struct {
	cfg    Config
	state  *gust.State
	reqs   gust.Requests
	router *Router
	logger *zap.Logger

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

	ln  net.Listener
	srv *http.Server
	// served is closed when the Serve goroutine has returned.
	served chan struct{}
	// tasks owns the server's background work (the placement after a
	// scale); Close ends it.
	tasks *tasks.Group
}

// New returns a gateway. router resolves functions to invokers.
func New(cfg Config, state *gust.State, reqs gust.Requests, router *Router, logger *zap.Logger) *Server {
	s := &Server{cfg: cfg, state: state, reqs: reqs, router: router, logger: logger.Named("gateway"), tasks: tasks.New(context.Background())}
	s.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(s.logger.Named("http")),
	}
	return s
}

// Open starts the router's watches and the dispatcher and listens; it
// returns once the gateway accepts connections. ctx bounds the start; what
// Open starts runs until Close.
func (s *Server) Open(ctx context.Context) error {
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

// Handler returns the gateway's routes.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("OK\n")) })
	r.Route("/system", func(r chi.Router) {
		r.Use(s.authenticate)
		r.Get("/info", handle(s, s.info))
		r.Get("/namespaces", handle(s, s.namespaces))
		r.Get("/functions", handle(s, s.listFunctions))
		r.Post("/functions", handle(s, s.deploy))
		r.Put("/functions", handle(s, s.update))
		r.Delete("/functions", handle(s, s.deleteFunction))
		r.Get("/function/{name}", handle(s, s.getFunction))
		r.Post("/scale-function/{name}", handle(s, s.scaleFunction))
		r.Get("/billing", handle(s, s.billingReport))
		r.Get("/invocations", handle(s, s.listInvocations))
		r.Get("/invocations/{callId}", handle(s, s.getInvocation))
		r.Get("/deadletters", handle(s, s.listDeadLetters))
		r.Delete("/deadletters", handle(s, s.purgeDeadLetters))
		r.Get("/deadletters/{callId}", handle(s, s.getDeadLetter))
		r.Post("/deadletters/{callId}/redrive", handle(s, s.redriveDeadLetter))
		// Tenancy (namespaces.go, keys.go, secrets.go): 404 without one.
		r.Post("/namespace", handle(s, s.createNamespace))
		r.Post("/namespace/", handle(s, s.createNamespace))
		r.Get("/namespace/{name}", handle(s, s.getNamespace))
		r.Put("/namespace/{name}", handle(s, s.updateNamespace))
		r.Delete("/namespace/{name}", handle(s, s.deleteNamespace))
		r.Get("/keys", handle(s, s.listKeys))
		r.Post("/keys", handle(s, s.createKey))
		r.Delete("/keys/{id}", handle(s, s.deleteKey))
		r.Get("/secrets", handle(s, s.listSecrets))
		r.Post("/secrets", handle(s, s.createSecret))
		r.Put("/secrets", handle(s, s.updateSecret))
		r.Delete("/secrets", handle(s, s.deleteSecret))
	})
	r.Handle("/metrics", s.metrics.Handler())
	r.Handle("/async-function/*", handle(s, s.asyncInvoke))
	// Calls skip chi: its routing context costs on every call, and the
	// invoke handler parses its path itself.
	invoke := handle(s, s.invoke)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/function/") {
			invoke(w, req)
			return
		}
		r.ServeHTTP(w, req)
	})
}

// authenticate is where management-API credentials are checked. Auth is
// not configured yet, so every caller passes; an empty "Authorization:
// Bearer" header, which OpenFaaS clients send without a token, is ignored.
func (s *Server) authenticate(next http.Handler) http.Handler { return next }

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

// newID returns n random bytes in hex. The generator is math/rand/v2's
// (ChaCha8, seeded per process): ids must be unique, not secret.
func newID(n int) string {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rand.Uint64())
	}
	return hex.EncodeToString(b[:n])
}
