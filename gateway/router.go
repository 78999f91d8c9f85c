package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/proxy"
	"github.com/gustfaas/gust/internal/tasks"
	"go.uber.org/zap"
)

// Router keeps, in memory, the functions, their placements and the live
// workers, fed by watches on the cluster state, so that resolving a call
// costs no NATS round trip. A function with no placement is activated: the
// scheduler is asked to place it and every call waiting for it shares that
// one request.
type Router struct {
	state  *gust.State
	reqs   gust.Requests
	logger *zap.Logger
	// local is the worker sharing this process, called without a network
	// hop; localID is its id.
	local     gust.Invoker
	localID   string
	transport *http.Transport
	// WorkerToken is sent to workers called over HTTP, whose listeners
	// take calls from gateways only; set it before Start.
	WorkerToken string
	// workerTimeout is how long a worker may go unheard before no call
	// is routed to it; live judges that by when heartbeats arrived.
	workerTimeout time.Duration
	live          *gust.Liveness
	// maxWaiting bounds the calls of one function waiting for its
	// activation (Config.MaxWaiting; the server sets it before Start).
	maxWaiting int

	// tasks owns the watches and the activations; Close ends them.
	tasks *tasks.Group

	mu         sync.RWMutex
	functions  map[string]*gust.Function
	placements map[string]*route
	workers    map[string]gust.WorkerInfo
	invokers   map[string]gust.Invoker // by worker id
	activating map[string]*activation
}

type route struct {
	pl gust.Placement
	rr atomic.Uint64
}

type activation struct {
	done chan struct{}
	pl   gust.Placement
	err  error
	// waiting counts the calls waiting for it, under Router.mu.
	waiting int
}

// NewRouter returns a router. local may be nil when no worker shares the
// process.
func NewRouter(state *gust.State, reqs gust.Requests, local gust.Invoker, localID string, logger *zap.Logger) *Router {
	// Over NATS, a gateway that lost its link keeps routing to the workers
	// it last knew alive: warm calls need no NATS.
	link, _ := reqs.(gust.Link)
	return &Router{
		live:          gust.NewLiveness(link),
		state:         state,
		reqs:          reqs,
		logger:        logger.Named("gateway.router"),
		local:         local,
		localID:       localID,
		transport:     proxy.NewTransport(),
		workerTimeout: 5 * time.Second,
		tasks:         tasks.New(context.Background()),
		functions:     map[string]*gust.Function{},
		placements:    map[string]*route{},
		workers:       map[string]gust.WorkerInfo{},
		invokers:      map[string]gust.Invoker{},
		activating:    map[string]*activation{},
	}
}

// Start loads the current state and follows its changes until Close; ctx
// bounds the loading.
func (rt *Router) Start(ctx context.Context) error {
	wctx, started := rt.tasks.During(ctx)
	err := rt.state.Functions.Watch(wctx, ">", func(c gust.Change[gust.Function]) {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if c.Deleted {
			delete(rt.functions, c.Key)
			return
		}
		fn := c.Value
		rt.functions[c.Key] = &fn
	})
	if err == nil {
		err = rt.state.Placements.Watch(wctx, ">", func(c gust.Change[gust.Placement]) {
			rt.mu.Lock()
			defer rt.mu.Unlock()
			if c.Deleted {
				delete(rt.placements, c.Key)
				return
			}
			rt.placements[c.Key] = &route{pl: c.Value}
		})
	}
	if err == nil {
		err = rt.state.Workers.Watch(wctx, ">", func(c gust.Change[gust.WorkerInfo]) {
			rt.mu.Lock()
			defer rt.mu.Unlock()
			if c.Deleted {
				rt.loseLocked(c.Key)
				delete(rt.workers, c.Key)
				rt.live.Forget(c.Key)
				return
			}
			if old, ok := rt.workers[c.Key]; !ok || old.Addr != c.Value.Addr {
				rt.loseLocked(c.Key)
			}
			rt.workers[c.Key] = c.Value
			rt.live.Heard(c.Key, c.Received)
		})
	}
	if err == nil {
		var stop func() error
		if stop, err = rt.live.HearBeats(rt.reqs); err == nil {
			rt.tasks.Go(func(ctx context.Context) { <-ctx.Done(); _ = stop() })
		}
	}
	if err == nil {
		err = started()
	}
	if err != nil {
		rt.tasks.Close()
		return fmt.Errorf("router: %w", err)
	}
	return nil
}

// loseLocked drops the invoker of worker id, which is gone (or moved):
// the calls still running on it end (a worker cut from the network sends
// no reset) and its connections close. Called under rt.mu.
func (rt *Router) loseLocked(id string) {
	if h, ok := rt.invokers[id].(*httpInvoker); ok {
		h.lose()
	}
	delete(rt.invokers, id)
}

// Close stops the watches and the activations in progress (their waiting
// calls fail) and waits for the activations.
func (rt *Router) Close() {
	rt.tasks.Close()
	rt.mu.Lock()
	for id := range rt.invokers {
		rt.loseLocked(id)
	}
	rt.mu.Unlock()
}

// Function returns the function ns.name as last seen, or nil.
func (rt *Router) Function(ns, name string) *gust.Function {
	// The key is built in a buffer on the stack: a map index by
	// string(bytes) does not allocate, and this runs on every call.
	var buf [128]byte
	key := append(append(append(buf[:0], ns...), '.'), name...)
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	return rt.functions[string(key)]
}

// Invoker returns the invoker of a live worker that holds fn, activating
// fn when it has none.
func (rt *Router) Invoker(ctx context.Context, fn *gust.Function) (gust.Invoker, error) {
	inv, _, err := rt.invoker(ctx, fn.Key())
	return inv, err
}

// invoker is Invoker, for the function of key, that also names the
// worker picked.
func (rt *Router) invoker(ctx context.Context, key string) (gust.Invoker, string, error) {
	if inv, id := rt.pick(key, nil, ""); inv != nil {
		return inv, id, nil
	}
	pl, err := rt.activate(ctx, key)
	if err != nil {
		return nil, "", err
	}
	if inv, id := rt.pick(key, &pl, ""); inv != nil {
		return inv, id, nil
	}
	return nil, "", gust.Errorf(gust.EUNAVAILABLE, "no live worker holds function %s", key)
}

// pick chooses a live worker of the placement round-robin, other than
// except, and returns its invoker and id. With pl nil it uses the routing
// table. A draining worker is picked only when no other live worker of
// the placement is left: it serves its instances until their
// replacements are ready (worker.Worker.Evacuate), and a call it turns
// away goes elsewhere (Invoke).
func (rt *Router) pick(key string, pl *gust.Placement, except string) (gust.Invoker, string) {
	rt.mu.RLock()
	r := rt.placements[key]
	if pl == nil {
		if r == nil {
			rt.mu.RUnlock()
			return nil, ""
		}
		pl = &r.pl
	}
	n := len(pl.Workers)
	start := 0
	if r != nil && n > 1 {
		start = int(r.rr.Add(1) % uint64(n))
	}
	fallback := ""
	for i := 0; i < n; i++ {
		id := pl.Workers[(start+i)%n]
		if id == except {
			continue
		}
		if id == rt.localID && rt.local != nil {
			rt.mu.RUnlock()
			return rt.local, id
		}
		w, ok := rt.workers[id]
		if !ok {
			continue
		}
		if rt.live.Silent(id, rt.workerTimeout) {
			// Its idle connections may be dead without a word (a host
			// cut off): none is reused when it is heard again.
			if h, ok := rt.invokers[id].(*httpInvoker); ok {
				h.transport.CloseIdleConnections()
			}
			continue
		}
		if w.Draining {
			if fallback == "" {
				fallback = id
			}
			continue
		}
		rt.mu.RUnlock()
		return rt.invokerOf(id, w.Addr), id
	}
	if fallback != "" {
		addr := rt.workers[fallback].Addr
		rt.mu.RUnlock()
		return rt.invokerOf(fallback, addr), fallback
	}
	rt.mu.RUnlock()
	return nil, ""
}

// invokerOf returns the HTTP invoker of worker id at addr, made once.
// Called without rt.mu.
func (rt *Router) invokerOf(id, addr string) gust.Invoker {
	rt.mu.RLock()
	inv := rt.invokers[id]
	rt.mu.RUnlock()
	if inv != nil {
		return inv
	}
	// A transport per worker: its connections close with it (lose).
	inv = newHTTPInvoker(id, addr, rt.WorkerToken, rt.transport.Clone(), rt.logger)
	rt.mu.Lock()
	if known := rt.invokers[id]; known != nil {
		inv = known
	} else {
		rt.invokers[id] = inv
	}
	rt.mu.Unlock()
	return inv
}

// activationTimeout bounds one place request of the activator.
const activationTimeout = 2 * time.Minute

// activate asks the scheduler to place a function; concurrent callers for
// one function share one request. The request is the router's, not the
// first caller's: it goes on when that caller gives up, for the others
// (and the next), until it is answered, times out or the router closes.
func (rt *Router) activate(ctx context.Context, key string) (gust.Placement, error) {
	rt.mu.Lock()
	a, ok := rt.activating[key]
	if !ok {
		a = &activation{done: make(chan struct{})}
		rt.activating[key] = a
		started := rt.tasks.Go(func(life context.Context) {
			actx, cancel := context.WithTimeout(life, activationTimeout)
			defer cancel()
			ns, name := splitKey(key)
			var rep gust.PlaceReply
			a.err = rt.reqs.Request(actx, gust.SubjectPlace, gust.PlaceRequest{Namespace: ns, Name: name}, &rep)
			if a.err == nil {
				a.pl, a.err = rep.Placement, rep.Err()
			}
			switch {
			case a.err != nil && life.Err() != nil:
				a.err = gust.Errorf(gust.EUNAVAILABLE, "the gateway is shutting down")
			case a.err != nil:
				rt.logger.Warn("activation failed", zap.String("function", key), zap.Error(a.err))
			}
			rt.mu.Lock()
			delete(rt.activating, key)
			rt.mu.Unlock()
			close(a.done)
		})
		if !started {
			delete(rt.activating, key)
			a.err = gust.Errorf(gust.EUNAVAILABLE, "the gateway is shutting down")
			close(a.done)
		}
	}
	if rt.maxWaiting > 0 && a.waiting >= rt.maxWaiting {
		rt.mu.Unlock()
		return gust.Placement{}, gust.Errorf(gust.ETOOMANY, "function %s has as many calls waiting for its placement as this gateway holds; retry later", key)
	}
	a.waiting++
	rt.mu.Unlock()
	defer func() {
		rt.mu.Lock()
		a.waiting--
		rt.mu.Unlock()
	}()
	select {
	case <-a.done:
		return a.pl, a.err
	case <-ctx.Done():
		return gust.Placement{}, gust.Errorf(gust.EUNAVAILABLE, "function %s was not placed in time", key)
	}
}

func splitKey(key string) (ns, name string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '.' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}

// SetWorkerTLS sets what calls to workers advertised at https:// URLs
// trust (their CA, a client certificate); call it before Start.
func (rt *Router) SetWorkerTLS(c *tls.Config) { rt.transport.TLSClientConfig = c }

// httpInvoker calls a worker on another host over HTTP. It keeps the
// data plane's contract: a worker's error answer (one that carries an
// outcome other than the function's own) comes back as the *gust.Error
// the worker's Invoke returned, so the gateway maps it once, as it does
// for the worker in its own process.
type httpInvoker struct {
	id        string // worker id, for messages
	host      string // host:port of the worker
	scheme    string // http, or https for a worker with TLS
	token     string // the workers' gust.HeaderWorkerToken
	transport *http.Transport
	logger    *zap.Logger
	// gone ends when the worker leaves the cluster's state: the calls
	// still running on it end then (lose).
	gone context.Context
	lose func()
}

// maxErrorAnswer bounds the error answer of a worker that is read.
const maxErrorAnswer = 64 << 10

// Invoke implements gust.Invoker. A call the worker never got (no
// connection, or nothing of the request written) or turned away before
// its function saw it (gust.HandoffRefused) comes back as a
// *notHandedError, which Router.Invoke may send elsewhere; a connection
// that failed after the request was written may have run the function,
// and fails the call with EFUNCTION (502).
func (h *httpInvoker) Invoke(w http.ResponseWriter, r *http.Request, fn *gust.Function) error {
	prefix := gust.InvokePrefix + fn.Spec.Namespace + "/" + fn.Spec.Service
	// The trace tells a request never written (a dial that failed) from
	// one the worker may have started to run.
	var wrote atomic.Bool
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(h.gone, cancel)()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }})
	out, err := proxy.Outbound(ctx, r, h.host, prefix+r.URL.Path, prefix+r.URL.EscapedPath(), r.URL.RawQuery)
	if err != nil {
		return gust.Errorf(gust.EINVALID, "bad request: %v", err)
	}
	out.Header.Set(gust.HeaderFunctionVersion, strconv.FormatUint(fn.Version, 10))
	out.URL.Scheme = h.scheme
	out.Header.Set(gust.HeaderWorkerToken, h.token)
	resp, err := h.transport.RoundTrip(out)
	if err != nil {
		if proxy.IsBodyTooLarge(err) {
			return gust.Errorf(gust.ETOOLARGE, "request body is over the gateway's limit")
		}
		if r.Context().Err() != nil {
			return nil // the caller went away
		}
		// The worker's address stays in the log: callers get its id.
		h.logger.Warn("worker did not answer", zap.String("worker_id", h.id), zap.String("addr", h.host), zap.Bool("request_written", wrote.Load()), zap.Error(err))
		if !wrote.Load() || isDialError(err) {
			return &notHandedError{gust.Errorf(gust.EUNAVAILABLE, "worker %s did not answer", h.id)}
		}
		return gust.Errorf(gust.EFUNCTION, "worker %s lost while it ran the call; the function may have run", h.id)
	}
	defer resp.Body.Close()
	if resp.Header.Get(gust.HeaderHandoff) == gust.HandoffRefused {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorAnswer))
		return &notHandedError{gust.ErrorOfAnswer(resp.StatusCode, b)}
	}
	proxy.CopyHeader(w.Header(), resp)
	// The function's answers carry the outcome ok or error, as a header
	// or (streamed) an announced trailer; anything else is the worker's
	// own error answer, metered by it when it has an outcome.
	o := resp.Header.Get(gust.HeaderOutcome)
	_, streamed := resp.Trailer[gust.HeaderOutcome]
	if !streamed && o != gust.OutcomeOK && o != gust.OutcomeError {
		w.Header().Del("Content-Type")
		w.Header().Del("Content-Length")
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorAnswer))
		return gust.ErrorOfAnswer(resp.StatusCode, b)
	}
	w.WriteHeader(resp.StatusCode)
	_, cerr := proxy.CopyBody(w, resp)
	proxy.CopyTrailer(w.Header(), resp)
	if cerr != nil && r.Context().Err() == nil && w.Header().Get(gust.HeaderOutcome) == "" {
		// A streamed answer the worker never ended: it did not meter
		// the call (it does at the end), and may never.
		return &answerCutError{gust.Errorf(gust.EFUNCTION, "worker %s lost while it sent the answer", h.id)}
	}
	return nil
}

// isDialError reports whether err is a failed dial: the transport may
// have written to a reused connection that turned out dead and then
// dialed again, in vain, for a request it could replay.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func newHTTPInvoker(id, base, token string, tr *http.Transport, logger *zap.Logger) *httpInvoker {
	scheme := "http"
	if strings.HasPrefix(base, "https://") {
		scheme = "https"
	}
	host := strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://")
	host, _, _ = strings.Cut(host, "/")
	gone, cancel := context.WithCancel(context.Background())
	h := &httpInvoker{id: id, host: host, scheme: scheme, token: token, transport: tr, logger: logger, gone: gone}
	h.lose = func() {
		cancel()
		tr.CloseIdleConnections()
	}
	return h
}
