// Package worker is the hands of Gust: it keeps warm pools of function
// containers on one host, runs each call in a free concurrency slot of an
// instance, and stops what is idle.
//
// Where things are:
//   - worker.go: the Worker and its lifecycle (Start, Drain, Close); every
//     goroutine it starts belongs to its tasks group (internal/tasks).
//   - registry.go: following the function registry and placements, and
//     finding the pool that serves a call or a prepare request.
//   - pool.go: one function's pool: its concurrency slots, scale-up, the
//     hold of calls while an instance starts, and which instances to reap.
//   - instance.go: one instance: its container spec, start, readiness
//     check, exit watch and stop.
//   - status.go: the heartbeat and the pool status the scheduler reads.
//   - invoke.go: one call on an instance, and its metering.
//   - http.go: the handler gateways on other hosts call.
//   - drain.go: the operator's drain, which moves the worker's functions
//     elsewhere without failing a call (Evacuate).
//   - orphans.go: removing the containers of other workers gone for good.
//
// LOCKS.md gives the lock order and who owns each goroutine.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/proxy"
	"github.com/gustfaas/gust/internal/tasks"
	"go.uber.org/zap"
)

// Config of a worker.
type Config struct {
	// ID names the worker in placements and container labels. It should
	// stay the same across restarts so that the worker finds what it left.
	ID string
	// Addr is the base URL other roles invoke this worker at.
	Addr string
	// ReadyTimeout bounds how long a new instance may take to pass its
	// readiness check.
	ReadyTimeout time.Duration
	// StopGrace is how long an instance gets to stop before it is killed.
	StopGrace time.Duration
	// MaxParallelStarts is how many container starts the worker runs
	// at once at first; the limit then follows the Engine's measured
	// start latency (startlimit.go).
	MaxParallelStarts int
	// BurstMemory is how long a pool that had a burst keeps more than one
	// container prepared for the next (prepare.go) after its last
	// instance beyond the first was live; 0 takes DefaultBurstMemory.
	BurstMemory time.Duration
	// Heartbeat is the interval of the worker's heartbeat and status.
	Heartbeat time.Duration
	// ReapInterval is how often idle instances are looked for.
	ReapInterval time.Duration
	// BillingGranularity is what call durations are rounded up to.
	BillingGranularity time.Duration
	// MaxWaiting bounds the calls of one function waiting here for a
	// free slot; past it a call is refused with 429 (pool.go).
	MaxWaiting int
	// MemoryBytes and NanoCPUs are the capacity this worker offers to
	// instances, advertised in its heartbeat: the scheduler places no
	// more on it than MemoryBytes holds (0: no bound advertised).
	MemoryBytes int64
	NanoCPUs    int64
	// OrphanGrace is how long another worker of the cluster must be gone
	// (deleted from the workers' table, or unheard) before this one
	// removes its containers from their shared engine (orphans.go); 0
	// takes DefaultOrphanGrace.
	OrphanGrace time.Duration
	// BridgeCalls has calls reach every function over its bridge
	// address, even where the worker could enter the instance's network
	// namespace and reach it over its loopback (loopback.go).
	BridgeCalls bool
}

// DefaultConfig returns the defaults for a worker.
func DefaultConfig() Config {
	return Config{
		ReadyTimeout:       30 * time.Second,
		StopGrace:          2 * time.Second,
		MaxParallelStarts:  4,
		Heartbeat:          time.Second,
		ReapInterval:       250 * time.Millisecond,
		BillingGranularity: time.Millisecond,
		MaxWaiting:         DefaultMaxWaiting,
	}
}

// Worker runs the pools of one host.
type Worker struct {
	cfg         Config
	rt          gust.Runtime
	state       *gust.State
	reqs        gust.Requests
	logger      *zap.Logger
	transport   *http.Transport
	probeClient *http.Client
	starts      *startLimit
	pulls       chan struct{} // a slot per image pull at once (ensureImage)
	started     time.Time
	meter       gust.Meter
	metrics     *metrics.Metrics
	secrets     gust.SecretStore // nil: functions with secrets do not start
	logs        *logCollector    // nil: instances' output is not collected (logs.go)
	others      *others          // the cluster's other workers (orphans.go)
	prep        preparedSet      // the pools' prepared instances (prepare.go)
	statusKick  chan struct{}
	// noLoopback is set once the worker has found it cannot enter
	// instances' network namespaces (loopback.go).
	noLoopback atomic.Bool

	// tasks owns every goroutine the worker starts (see LOCKS.md); ctx
	// is its context, which ends when the worker drains.
	tasks *tasks.Group
	ctx   context.Context
	// calls counts the calls in flight, for Drain. It goes up only under
	// mu while the worker is not closing (enterCall), so Drain, which
	// sets closing under mu, sees it only go down. callsIdle gets a
	// token whenever it drops to zero.
	calls       atomic.Int64
	callsIdle   chan struct{}
	stopPrepare func() error

	mu         sync.Mutex
	pools      map[string]*pool
	functions  map[string]*gust.Function
	placements map[string]gust.Placement
	images     map[string]bool // images known to be present
	// draining is advertised in the heartbeat: the worker takes no new
	// function, and stops its pools as they are replaced elsewhere
	// (Evacuate, drain.go). closing is Drain's: no call enters any more.
	draining  bool
	closing   bool
	published map[string]gust.PoolStatus
}

// New returns a worker; Start brings it up.
func New(cfg Config, rt gust.Runtime, state *gust.State, reqs gust.Requests, logger *zap.Logger) *Worker {
	tr := proxy.NewTransport()
	return &Worker{
		cfg:       cfg,
		rt:        rt,
		state:     state,
		reqs:      reqs,
		logger:    logger.Named("worker").With(zap.String("worker_id", cfg.ID)),
		transport: tr,
		// A readiness check follows no redirect: a function must not
		// make its worker call what only the worker's host can reach.
		probeClient: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		starts:      newStartLimit(cfg.MaxParallelStarts),
		pulls:       make(chan struct{}, maxParallelPulls),
		pools:       map[string]*pool{},
		functions:   map[string]*gust.Function{},
		placements:  map[string]gust.Placement{},
		images:      map[string]bool{},
		published:   map[string]gust.PoolStatus{},
		statusKick:  make(chan struct{}, 1),
		callsIdle:   make(chan struct{}, 1),
		others:      newOthers(reqs),
	}
}

// WithMetering makes the worker record every call and instance life in
// meter and count them in m (either may be nil). Call it before Start.
func (w *Worker) WithMetering(meter gust.Meter, m *metrics.Metrics) *Worker {
	w.meter, w.metrics = meter, m
	return w
}

// WithSecrets makes the worker mount the secrets a function's spec lists,
// read from store in the function's namespace, into each instance it
// starts (gust.ContainerSpec.Secrets). They are read at every instance
// start: an updated secret reaches the instances started afterwards, and
// a running instance keeps the value it started with. Without a store, a
// function with secrets does not start. Call it before Start.
func (w *Worker) WithSecrets(store gust.SecretStore) *Worker {
	w.secrets = store
	return w
}

// Start removes containers a previous run of this worker left behind,
// starts watching the cluster state and serving prepare requests, and
// sends its first heartbeat. ctx bounds that work; the worker then runs
// (with ctx's values, not its end) until Drain or Close.
func (w *Worker) Start(ctx context.Context) error {
	w.tasks = tasks.New(ctx)
	w.ctx = w.tasks.Context()
	w.started = time.Now()
	if err := w.removeLeftovers(ctx); err != nil {
		return err
	}
	if err := w.state.Functions.Watch(w.ctx, ">", w.onFunction); err != nil {
		return fmt.Errorf("watch functions: %w", err)
	}
	if err := w.state.Placements.Watch(w.ctx, ">", w.onPlacement); err != nil {
		return fmt.Errorf("watch placements: %w", err)
	}
	if err := w.state.Workers.Watch(w.ctx, ">", w.onWorker); err != nil {
		return fmt.Errorf("watch workers: %w", err)
	}
	stopBeats, err := w.others.live.HearBeats(w.reqs)
	if err != nil {
		return err
	}
	w.tasks.Go(func(ctx context.Context) { <-ctx.Done(); _ = stopBeats() })
	stopGauges := w.metrics.ObservePools(w.poolGauges)
	w.tasks.Go(func(ctx context.Context) { <-ctx.Done(); stopGauges() })
	stop, err := w.reqs.Handle(w.ctx, gust.SubjectPreparePrefix+w.cfg.ID, "", w.handlePrepare)
	if err != nil {
		return err
	}
	w.stopPrepare = stop
	if err := w.serveDrain(); err != nil {
		return err
	}
	if err := w.heartbeat(ctx); err != nil {
		return err
	}
	if b, ok := w.reqs.(gust.Beats); ok {
		// Plain beats on a loop of their own: a table write may wait for
		// a stream's new leader for seconds (liveness.go, gust.Beats).
		_ = b.Beat(w.cfg.ID)
		w.tasks.Go(func(context.Context) {
			w.loop(w.cfg.Heartbeat, func() {
				if err := b.Beat(w.cfg.ID); err != nil && w.ctx.Err() == nil {
					w.logger.Warn("beat", zap.Error(err))
				}
			})
		})
	}
	w.tasks.Go(func(context.Context) {
		w.loop(w.cfg.Heartbeat, func() {
			if err := w.heartbeat(w.ctx); err != nil && w.ctx.Err() == nil {
				w.logger.Warn("heartbeat", zap.Error(err))
			}
			w.publishStatus()
		})
	})
	w.tasks.Go(func(context.Context) { w.loop(w.cfg.ReapInterval, w.reap) })
	w.tasks.Go(func(context.Context) { w.loop(w.orphanGrace()/4, w.removeOrphans) })
	w.tasks.Go(func(context.Context) {
		// Instances that become ready or stop are reported at once, not
		// at the next heartbeat.
		for {
			select {
			case <-w.ctx.Done():
				return
			case <-w.statusKick:
				w.publishStatus()
			}
		}
	})
	w.logger.Info("worker started", zap.String("addr", w.cfg.Addr))
	return nil
}

// loop calls fn every interval until the worker closes.
func (w *Worker) loop(every time.Duration, fn func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// removeLeftovers removes containers labelled with this worker's id: at
// start it tracks none, so any it finds were left by an earlier run.
func (w *Worker) removeLeftovers(ctx context.Context) error {
	cs, err := w.rt.List(ctx, map[string]string{gust.LabelWorker: w.cfg.ID})
	if err != nil {
		return fmt.Errorf("list leftover containers: %w", err)
	}
	for _, c := range cs {
		w.logger.Info("removing leftover container", zap.String("container_id", shortID(c.ID)), zap.String("function", c.Labels[gust.LabelNamespace]+"."+c.Labels[gust.LabelFunction]))
		if err := w.rt.Remove(ctx, c.ID); err != nil {
			return fmt.Errorf("remove leftover container %s: %w", shortID(c.ID), err)
		}
	}
	return nil
}

// Drain stops taking calls, waits for the calls in flight (until ctx
// ends), then stops and removes every container this worker started.
func (w *Worker) Drain(ctx context.Context) error {
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return nil
	}
	w.draining, w.closing = true, true
	w.mu.Unlock()
	if w.stopPrepare != nil {
		_ = w.stopPrepare()
	}
	_ = w.heartbeat(ctx)
	// No call enters once closing is set (enterCall): wait for the count
	// to reach zero.
wait:
	for w.calls.Load() > 0 {
		select {
		case <-w.callsIdle:
		case <-ctx.Done():
			w.logger.Warn("drain: calls still in flight, stopping anyway", zap.Int64("calls", w.calls.Load()))
			break wait
		}
	}
	w.mu.Lock()
	pools := w.pools
	w.pools = map[string]*pool{}
	w.mu.Unlock()
	for _, p := range pools {
		w.closePool(p)
	}
	// Instances still starting finish starting; wait for them, then remove
	// everything left with this worker's label.
	w.tasks.Close()
	// Clean up even when ctx has ended: it bounded the wait for calls,
	// not the removal of what this worker started.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := w.removeLeftovers(rctx); err != nil {
		return err
	}
	if err := w.state.Workers.Delete(rctx, w.cfg.ID); err != nil {
		w.logger.Warn("remove worker record", zap.Error(err))
	}
	w.transport.CloseIdleConnections()
	w.logger.Info("worker drained")
	return nil
}

// Close drains with a one-minute bound.
func (w *Worker) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return w.Drain(ctx)
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
