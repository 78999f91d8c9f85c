package gateway

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/tasks"
	"go.uber.org/zap"
)

// Async is what the gateway needs for async calls, event triggers and dead
// letters. All of it lives in NATS and JetStream in production.
type Async struct {
	Queue       gust.Queue
	Events      gust.Events
	DeadLetters gust.DeadLetters
	Calls       gust.Table[gust.AsyncStatus]
	Idempotency gust.Table[string]
	// Streams is the stream holding async calls and callbacks.
	Stream string
	// MaxMessage is the largest message Queue takes, headers included:
	// the smaller of the NATS server's max payload and the stream's
	// MaxMsgSize. 0 means 8 MiB, the limit of Gust's own server and
	// streams (internal/natsbus).
	MaxMessage int
}

// messageHeaderRoom is what a queue message keeps free for its NATS
// headers (its Nats-Msg-Id), which count toward the limit.
const messageHeaderRoom = 1 << 10

// maxData is the largest encoded call or callback that fits in one queue
// message. An async call is JSON, its body base64-encoded (4 bytes for
// every 3), so an 8 MiB message holds a body of about 6 MiB less the
// call's headers; the gateway checks the encoded size before it stores
// anything.
func (a *Async) maxData() int {
	m := a.MaxMessage
	if m <= 0 {
		m = 8 << 20
	}
	return m - messageHeaderRoom
}

// callbackTimeout bounds one delivery of a callback, redirects included.
const callbackTimeout = 30 * time.Second

// Dispatcher runs async calls, event-triggered calls and callbacks through
// the same warm-pool path as sync calls. It keeps, per function, a durable
// consumer of its async queue, its core-NATS trigger subscriptions (in a
// queue group per function, so several gateways never run one message
// twice) and its durable stream trigger. Each runs at most the function's
// max instances × concurrency calls at once: a flood waits in JetStream
// (async, durable triggers) or in a bounded buffer (core-NATS triggers,
// where an overflow is counted and logged).
//
// The files of the dispatcher: this one (the type, its lifecycle and the
// per-function start and stop), dispatch_run.go (one call through the
// router), dispatch_async.go (attempts, retries, dead letters, status),
// dispatch_events.go (triggers) and dispatch_callbacks.go.
type Dispatcher struct {
	async   *Async
	state   *gust.State
	router  *Router
	meter   gust.Meter
	metrics *metrics.Metrics
	logger  *zap.Logger
	// client sends callbacks; adminClient those of calls the admin made,
	// which may also go to loopback (Config.CallbackAdminLoopback).
	client, adminClient *http.Client
	// EventBuffer bounds the core-NATS messages waiting per function, and
	// EventBufferBytes their bytes (data and headers). Set them before
	// Start.
	EventBuffer      int
	EventBufferBytes int64
	// CallbackRetry says how a callback is retried: MaxAttempts tries,
	// backing off from MinDelay to MaxDelay. Set it before Start.
	CallbackRetry gust.RetryPolicy
	// quotas are the namespaces' concurrency bounds, shared with the
	// server's sync calls (quota.go); the server sets them before Start,
	// nil without a tenancy. A call waits here for a slot of its
	// namespace instead of failing: it was queued anyway.
	quotas *quotas

	// tasks owns the starts and stops of functions; ctx is its context,
	// the dispatcher's lifetime, which the calls it makes run under.
	tasks *tasks.Group
	ctx   context.Context

	mu            sync.Mutex
	funcs         map[string]*dispatch // by function key
	stopCallbacks func()
}

// dispatch is what runs for one function. Its changes are applied one at
// a time (mu), always to the latest version seen (want), however many
// changes of the function arrive meanwhile.
type dispatch struct {
	want *gust.Function // the latest version seen, nil once deleted; under Dispatcher.mu

	mu      sync.Mutex // held while starting or stopping
	version uint64     // running, 0 for none
	stops   []func()
}

// NewDispatcher returns a dispatcher; Start runs it.
func NewDispatcher(a *Async, state *gust.State, router *Router, meter gust.Meter, m *metrics.Metrics, logger *zap.Logger) *Dispatcher {
	t := tasks.New(context.Background())
	return &Dispatcher{
		async: a, state: state, router: router, meter: meter, metrics: m,
		logger: logger.Named("dispatch"), EventBuffer: 10000, EventBufferBytes: 64 << 20,
		// About an hour of tries before a callback is given up loudly.
		CallbackRetry: gust.RetryPolicy{MaxAttempts: 20, MinDelay: time.Second, MaxDelay: 5 * time.Minute},
		// Refusing every loopback, link-local and private destination
		// until the server sets its operator's allow list (WithAsync).
		client:      OutboundAllow{}.client(callbackTimeout),
		adminClient: OutboundAllow{}.client(callbackTimeout),
		tasks:       t, ctx: t.Context(),
		funcs: map[string]*dispatch{},
	}
}

// Start starts the callback deliverer and follows the registry: each
// function's consumers and subscriptions start (and stop, and restart on a
// new version) in goroutines of the dispatcher's, which Close waits for.
// ctx bounds the start.
func (d *Dispatcher) Start(ctx context.Context) error {
	stop, err := d.async.Queue.Consume(ctx, gust.ConsumerSpec{
		Stream: d.async.Stream, Durable: "gust-callbacks", Filter: callbackSubject, Max: 64, AckWait: time.Minute,
	}, d.deliverCallback)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.stopCallbacks = stop
	d.mu.Unlock()
	wctx, started := d.tasks.During(ctx)
	err = d.state.Functions.Watch(wctx, ">", d.changed)
	if err == nil {
		err = started()
	}
	if err != nil {
		d.Close()
		return fmt.Errorf("dispatcher: %w", err)
	}
	return nil
}

// changed takes a change of the registry: the function's dispatch moves
// to it in a goroutine of the dispatcher's (starting consumers is a
// network round trip, and stopping one waits for its calls in flight).
func (d *Dispatcher) changed(c gust.Change[gust.Function]) {
	d.mu.Lock()
	dp := d.funcs[c.Key]
	if dp == nil {
		dp = &dispatch{}
		d.funcs[c.Key] = dp
	}
	dp.want = nil
	if !c.Deleted {
		fn := c.Value
		dp.want = &fn
	}
	d.mu.Unlock()
	d.tasks.Go(func(context.Context) { d.apply(c.Key, dp) })
}

// apply brings the dispatch of a function to the latest version seen:
// it stops what runs for an older one and starts the newer, or, for a
// deleted function, removes its async consumer.
func (d *Dispatcher) apply(key string, dp *dispatch) {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	d.mu.Lock()
	want := dp.want
	d.mu.Unlock()
	if want != nil && want.Version == dp.version {
		return // already running it (a scale changes no version)
	}
	dp.stopLocked()
	if d.ctx.Err() != nil {
		return // closing
	}
	if want != nil {
		dp.version = want.Version
		dp.stops = d.startFunction(want)
		return
	}
	// Deleted: its async consumer goes too; calls still queued for it
	// stay in the stream and run if it is deployed again.
	ns, name := splitKey(key)
	if err := d.deleteAsyncConsumer(ns, name); err != nil {
		d.logger.Warn("delete async consumer", zap.String("function", key), zap.Error(err))
	}
	d.mu.Lock()
	if d.funcs[key] == dp && dp.want == nil {
		delete(d.funcs, key)
	}
	d.mu.Unlock()
}

// startFunction starts the consumers and subscriptions of fn and returns
// what stops them.
func (d *Dispatcher) startFunction(fn *gust.Function) []func() {
	cfg := fn.Config()
	limit := min(cfg.Max*cfg.Concurrency, 1000)
	logger := d.logger.With(zap.String("function", fn.Key()))
	var stops []func()
	if stop := d.consumeAsync(fn, limit, logger); stop != nil {
		stops = append(stops, stop)
	}
	if len(cfg.Topics) > 0 {
		stops = append(stops, d.subscribe(fn, cfg, limit, logger)...)
	}
	if cfg.Stream != "" {
		if stop := d.consumeStream(fn, cfg, limit, logger); stop != nil {
			stops = append(stops, stop)
		}
	}
	return stops
}

// stopLocked stops what runs for the function and waits for its calls in
// flight.
func (dp *dispatch) stopLocked() {
	for _, s := range dp.stops {
		s()
	}
	dp.stops, dp.version = nil, 0
}

// Close stops every consumer and subscription and waits for them: calls
// in flight are cancelled, and their messages come back to whichever
// dispatcher runs next. It may be called more than once.
func (d *Dispatcher) Close() {
	d.tasks.Close()
	d.mu.Lock()
	all := make([]*dispatch, 0, len(d.funcs))
	for _, dp := range d.funcs {
		all = append(all, dp)
	}
	stopCallbacks := d.stopCallbacks
	d.stopCallbacks = nil
	d.mu.Unlock()
	for _, dp := range all {
		dp.mu.Lock()
		dp.stopLocked()
		dp.mu.Unlock()
	}
	if stopCallbacks != nil {
		stopCallbacks()
	}
	d.client.CloseIdleConnections()
	d.adminClient.CloseIdleConnections()
}
