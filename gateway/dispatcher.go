package gateway

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
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
}

// Dispatcher runs async calls, event-triggered calls and callbacks through
// the same warm-pool path as sync calls. It keeps, per function, a durable
// consumer of its async queue, its core-NATS trigger subscriptions (in a
// queue group per function, so several gateways never run one message
// twice) and its durable stream trigger. Each runs at most the function's
// max instances × concurrency calls at once: a flood waits in JetStream
// (async, durable triggers) or in a bounded buffer (core-NATS triggers,
// where an overflow is counted and logged).
type Dispatcher struct {
	async   *Async
	state   *gust.State
	router  *Router
	meter   gust.Meter
	metrics *metrics.Metrics
	logger  *zap.Logger
	client  *http.Client
	// EventBuffer bounds the core-NATS messages waiting per function.
	EventBuffer int

	ctx    context.Context
	cancel context.CancelFunc

	mu            sync.Mutex
	funcs         map[string]*dispatch // by function key
	stopCallbacks func()
}

// dispatch is what runs for one function version.
type dispatch struct {
	version uint64
	stops   []func()
}

// NewDispatcher returns a dispatcher; Start runs it.
func NewDispatcher(a *Async, state *gust.State, router *Router, meter gust.Meter, m *metrics.Metrics, logger *zap.Logger) *Dispatcher {
	return &Dispatcher{
		async: a, state: state, router: router, meter: meter, metrics: m,
		logger: logger.Named("dispatch"), EventBuffer: 10000,
		client: &http.Client{Timeout: 30 * time.Second},
		funcs:  map[string]*dispatch{},
	}
}

// Start follows the registry and starts the callback deliverer.
func (d *Dispatcher) Start(ctx context.Context) error {
	d.ctx, d.cancel = context.WithCancel(context.Background())
	stop, err := d.async.Queue.Consume(d.ctx, gust.ConsumerSpec{
		Stream: d.async.Stream, Durable: "gust-callbacks", Filter: callbackSubject, Max: 64, AckWait: time.Minute,
	}, d.deliverCallback)
	if err != nil {
		return err
	}
	d.stopCallbacks = stop
	return d.state.Functions.Watch(d.ctx, ">", func(c gust.Change[gust.Function]) {
		if c.Deleted {
			d.stopFunction(c.Key)
			// Its durable consumers go too; calls still queued for it stay
			// in the stream and run if it is deployed again.
			ns, name := splitKey(c.Key)
			gone := &gust.Function{Spec: gust.FunctionSpec{Namespace: ns, Service: name}}
			if err := d.async.Queue.DeleteConsumer(d.ctx, d.async.Stream, durableName("async", gone)); err != nil {
				d.logger.Warn("delete async consumer", zap.String("function", c.Key), zap.Error(err))
			}
			return
		}
		fn := c.Value
		go d.startFunction(&fn)
	})
}

// Close stops every consumer and subscription; calls in flight finish.
func (d *Dispatcher) Close() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.mu.Lock()
	keys := make([]string, 0, len(d.funcs))
	for k := range d.funcs {
		keys = append(keys, k)
	}
	d.mu.Unlock()
	for _, k := range keys {
		d.stopFunction(k)
	}
	if d.stopCallbacks != nil {
		d.stopCallbacks()
	}
}

func durableName(prefix string, fn *gust.Function) string {
	return prefix + "-" + fn.Spec.Namespace + "-" + fn.Spec.Service
}

// startFunction (re)starts the consumers and subscriptions of a function.
func (d *Dispatcher) startFunction(fn *gust.Function) {
	key := fn.Key()
	d.mu.Lock()
	if cur := d.funcs[key]; cur != nil && cur.version == fn.Version {
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	d.stopFunction(key)
	cfg := fn.Config()
	limit := min(cfg.Max*cfg.Concurrency, 1000)
	logger := d.logger.With(zap.String("function", key))
	dp := &dispatch{version: fn.Version}
	stop, err := d.async.Queue.Consume(d.ctx, gust.ConsumerSpec{
		Stream: d.async.Stream, Durable: durableName("async", fn), Filter: gust.SubjectAsyncPrefix + key,
		Max: limit, AckWait: ackWait,
	}, func(dl gust.Delivery) { d.runAsync(key, dl) })
	if err != nil {
		logger.Error("async consumer", zap.Error(err))
	} else {
		dp.stops = append(dp.stops, stop)
	}
	if len(cfg.Topics) > 0 {
		dp.stops = append(dp.stops, d.subscribe(fn, cfg, limit, logger)...)
	}
	if cfg.Stream != "" {
		stop, err := d.async.Queue.Consume(d.ctx, gust.ConsumerSpec{
			Stream: cfg.Stream, Durable: durableName("trigger", fn), Filter: cfg.StreamFilter, Max: limit, AckWait: ackWait,
		}, func(dl gust.Delivery) { d.runStreamEvent(key, dl) })
		if err != nil {
			// The stream may not exist (yet): say so where an operator
			// looks, and count it.
			logger.Error("durable trigger not started: its stream cannot be consumed", zap.String("stream", cfg.Stream), zap.Error(err))
			d.metrics.EventDropped(key, "stream_unavailable")
		} else {
			dp.stops = append(dp.stops, stop)
			logger.Info("durable trigger started", zap.String("stream", cfg.Stream), zap.String("filter", cfg.StreamFilter))
		}
	}
	d.mu.Lock()
	if old := d.funcs[key]; old != nil {
		// A newer start won the race; keep one.
		d.mu.Unlock()
		for _, s := range dp.stops {
			s()
		}
		return
	}
	d.funcs[key] = dp
	d.mu.Unlock()
}

func (d *Dispatcher) stopFunction(key string) {
	d.mu.Lock()
	dp := d.funcs[key]
	delete(d.funcs, key)
	d.mu.Unlock()
	if dp == nil {
		return
	}
	for _, s := range dp.stops {
		s()
	}
}
