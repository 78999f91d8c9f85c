// Package worker is the hands of Gust: it keeps warm pools of function
// containers on one host, runs each call in a free concurrency slot of an
// instance, and stops what is idle.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/proxy"
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
	// MaxParallelStarts bounds concurrent container starts.
	MaxParallelStarts int
	// Heartbeat is the interval of the worker's heartbeat and status.
	Heartbeat time.Duration
	// ReapInterval is how often idle instances are looked for.
	ReapInterval time.Duration
	// BillingGranularity is what call durations are rounded up to.
	BillingGranularity time.Duration
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
	startSlots  chan struct{}
	started     time.Time
	meter       gust.Meter
	metrics     *metrics.Metrics
	statusKick  chan struct{}

	ctx         context.Context // ends when the worker closes
	cancel      context.CancelFunc
	wg          sync.WaitGroup // background goroutines; added to only through spawn
	spawnMu     sync.Mutex     // orders spawn's wg.Add before Drain's wg.Wait
	spawnClosed bool
	// calls counts the calls in flight, for Drain. It goes up only under
	// mu while the worker is not draining (enterCall), so Drain, which
	// sets draining under mu, sees it only go down. callsIdle gets a
	// token whenever it drops to zero.
	calls       atomic.Int64
	callsIdle   chan struct{}
	stopPrepare func() error

	mu         sync.Mutex
	pools      map[string]*pool
	functions  map[string]*gust.Function
	placements map[string]gust.Placement
	images     map[string]bool // images known to be present
	draining   bool
	published  map[string]gust.PoolStatus
}

// New returns a worker; Start brings it up.
func New(cfg Config, rt gust.Runtime, state *gust.State, reqs gust.Requests, logger *zap.Logger) *Worker {
	tr := proxy.NewTransport()
	return &Worker{
		cfg:         cfg,
		rt:          rt,
		state:       state,
		reqs:        reqs,
		logger:      logger.Named("worker").With(zap.String("worker_id", cfg.ID)),
		transport:   tr,
		probeClient: &http.Client{Transport: tr},
		startSlots:  make(chan struct{}, max(cfg.MaxParallelStarts, 1)),
		pools:       map[string]*pool{},
		functions:   map[string]*gust.Function{},
		placements:  map[string]gust.Placement{},
		images:      map[string]bool{},
		published:   map[string]gust.PoolStatus{},
		statusKick:  make(chan struct{}, 1),
		callsIdle:   make(chan struct{}, 1),
	}
}

// kickStatus asks for the pool status to be published now.
func (w *Worker) kickStatus() {
	select {
	case w.statusKick <- struct{}{}:
	default:
	}
}

// WithMetering makes the worker record every call and instance life in
// meter and count them in m (either may be nil). Call it before Start.
func (w *Worker) WithMetering(meter gust.Meter, m *metrics.Metrics) *Worker {
	w.meter, w.metrics = meter, m
	return w
}

// Start removes containers a previous run of this worker left behind,
// starts watching the cluster state and serving prepare requests, and
// sends its first heartbeat. ctx bounds that work; the worker then runs
// (with ctx's values, not its end) until Drain or Close.
func (w *Worker) Start(ctx context.Context) error {
	w.ctx, w.cancel = context.WithCancel(context.WithoutCancel(ctx))
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
	stop, err := w.reqs.Handle(w.ctx, gust.SubjectPreparePrefix+w.cfg.ID, "", w.handlePrepare)
	if err != nil {
		return err
	}
	w.stopPrepare = stop
	if err := w.heartbeat(ctx); err != nil {
		return err
	}
	w.spawn(func() {
		w.loop(w.cfg.Heartbeat, func() {
			if err := w.heartbeat(w.ctx); err != nil && w.ctx.Err() == nil {
				w.logger.Warn("heartbeat", zap.Error(err))
			}
			w.publishStatus()
		})
	})
	w.spawn(func() { w.loop(w.cfg.ReapInterval, w.reap) })
	w.spawn(func() {
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

// spawn runs fn in a goroutine the worker owns: Drain waits for it. Every
// goroutine the worker starts goes through here. Once Drain has begun
// waiting, nothing more is started and spawn reports false
// (WaitGroup.Add must not race with Wait): the caller then does the work
// itself or drops it. spawnMu is the innermost lock: spawn may be called
// with Worker.mu and pool.mu held.
func (w *Worker) spawn(fn func()) bool {
	w.spawnMu.Lock()
	defer w.spawnMu.Unlock()
	if w.spawnClosed {
		return false
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		fn()
	}()
	return true
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

func (w *Worker) heartbeat(ctx context.Context) error {
	w.mu.Lock()
	draining := w.draining
	w.mu.Unlock()
	_, err := w.state.Workers.Put(ctx, w.cfg.ID, gust.WorkerInfo{
		ID: w.cfg.ID, Addr: w.cfg.Addr, Started: w.started, Seen: time.Now(), Draining: draining,
	})
	return err
}

// onFunction follows the function registry: a new version reconfigures
// the pool, a delete closes it.
func (w *Worker) onFunction(c gust.Change[gust.Function]) {
	w.mu.Lock()
	if c.Deleted {
		delete(w.functions, c.Key)
		p := w.pools[c.Key]
		delete(w.pools, c.Key)
		w.mu.Unlock()
		if p != nil {
			w.closePool(p)
		}
		return
	}
	defer w.mu.Unlock()
	fn := c.Value
	if known := w.functions[c.Key]; known != nil && newer(known, &fn) {
		return // a call brought the newer version first (poolFor)
	}
	w.functions[c.Key] = &fn
	if p := w.pools[c.Key]; p != nil {
		w.configurePoolLocked(p)
	}
}

// onPlacement follows placements: this worker's share of a function's
// min and max follows from its place in the list.
func (w *Worker) onPlacement(c gust.Change[gust.Placement]) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.Deleted {
		delete(w.placements, c.Key)
	} else {
		w.placements[c.Key] = c.Value
	}
	p := w.pools[c.Key]
	if p == nil {
		if fn := w.functions[c.Key]; fn != nil && !c.Deleted && !w.draining && slicesIndex(c.Value.Workers, w.cfg.ID) >= 0 {
			p = newPool(w, fn)
			w.pools[c.Key] = p
		} else {
			return
		}
	}
	w.configurePoolLocked(p)
}

// configurePoolLocked gives the pool its function and share.
func (w *Worker) configurePoolLocked(p *pool) {
	fn := w.functions[p.key]
	if fn == nil {
		return
	}
	cfg := fn.Config()
	minShare, maxShare := 0, cfg.Max
	if pl, ok := w.placements[p.key]; ok {
		if i := slicesIndex(pl.Workers, w.cfg.ID); i >= 0 {
			minShare = gust.Share(cfg.Min, i, len(pl.Workers))
			maxShare = gust.Share(cfg.Max, i, len(pl.Workers))
		}
	}
	p.mu.Lock()
	p.setFunctionLocked(fn, minShare, maxShare)
	if !w.draining {
		p.ensureMinLocked()
	}
	p.mu.Unlock()
}

// newer reports whether a is a later deploy than b of the same key.
// Versions count deploys of one function; a function deleted and deployed
// again starts counting anew, with a later CreatedAt.
func newer(a, b *gust.Function) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	return a.Version > b.Version
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// poolFor returns the pool of fn, making it if this worker has none yet.
func (w *Worker) poolFor(fn *gust.Function) (*pool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.poolForLocked(fn)
}

// enterCall is poolFor for a call: it also counts the call in flight,
// under the same lock that Drain sets draining with. callDone ends it.
func (w *Worker) enterCall(fn *gust.Function) (*pool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, err := w.poolForLocked(fn)
	if err == nil {
		w.calls.Add(1)
	}
	return p, err
}

// callDone ends a call counted by enterCall.
func (w *Worker) callDone() {
	if w.calls.Add(-1) == 0 {
		select {
		case w.callsIdle <- struct{}{}:
		default: // a token is there already
		}
	}
}

func (w *Worker) poolForLocked(fn *gust.Function) (*pool, error) {
	if w.draining {
		return nil, gust.ErrDraining
	}
	key := fn.Key()
	if known := w.functions[key]; known == nil || newer(fn, known) {
		// The caller saw a deploy before this worker's watch did: apply
		// it now, so that the call runs on the new version, with its
		// config.
		w.functions[key] = fn
		if p := w.pools[key]; p != nil {
			w.configurePoolLocked(p)
		}
	}
	if p := w.pools[key]; p != nil {
		return p, nil
	}
	p := newPool(w, w.functions[key])
	w.pools[key] = p
	w.configurePoolLocked(p)
	return p, nil
}

// closePool stops every instance of p once its calls have finished; a
// call still in flight stops its instance when it releases it. Called
// without w.mu.
func (w *Worker) closePool(p *pool) {
	p.mu.Lock()
	p.closed = true
	p.broadcastLocked()
	p.mu.Unlock()
	w.reapPool(p)
	w.mu.Lock()
	delete(w.published, p.key)
	w.mu.Unlock()
	if err := w.state.Status.Delete(w.ctx, p.key+"."+w.cfg.ID); err != nil && w.ctx.Err() == nil {
		w.logger.Warn("delete pool status", zap.String("function", p.key), zap.Error(err))
	}
}

// reap stops idle surplus instances and keeps minimums in every pool.
func (w *Worker) reap() {
	w.mu.Lock()
	pools := make([]*pool, 0, len(w.pools))
	for _, p := range w.pools {
		pools = append(pools, p)
	}
	draining := w.draining
	w.mu.Unlock()
	for _, p := range pools {
		w.reapPool(p)
		if !draining {
			p.mu.Lock()
			if !p.closed {
				p.ensureMinLocked()
			}
			p.mu.Unlock()
		}
	}
}

func (w *Worker) reapPool(p *pool) {
	p.mu.Lock()
	victims := p.reapLocked(time.Now())
	type stop struct{ id, cid string }
	stops := make([]stop, 0, len(victims))
	for _, in := range victims {
		stops = append(stops, stop{in.id, in.cid})
	}
	if len(victims) > 0 {
		p.broadcastLocked()
	}
	p.mu.Unlock()
	for _, in := range victims {
		w.instanceStopped(p, in)
	}
	if len(victims) > 0 {
		w.kickStatus()
	}
	for _, s := range stops {
		logger := p.logger.With(zap.String("instance_id", s.id), zap.String("container_id", shortID(s.cid)))
		logger.Info("stopping instance")
		if !w.spawn(func() { w.stopContainer(s.cid, logger) }) {
			// Drain has waited for the worker's goroutines already (a
			// call that outlived its wait released this instance): stop
			// it on the caller's goroutine.
			w.stopContainer(s.cid, logger)
		}
	}
}

// instanceStopped meters the life of an instance that was ready: the
// capacity its function held from ready until now.
func (w *Worker) instanceStopped(p *pool, in *instance) {
	p.mu.Lock()
	readyAt := in.readyAt
	mib := p.cfg.MemoryBytes >> 20
	fn := p.fn
	p.mu.Unlock()
	if readyAt.IsZero() || w.meter == nil {
		return
	}
	w.meter.RecordInstance(&gust.InstanceRecord{
		Instance: in.id, Namespace: fn.Spec.Namespace, Function: fn.Spec.Service, Worker: w.cfg.ID,
		MemoryMiB: mib, Ready: readyAt.UTC(), Stopped: time.Now().UTC(),
	})
}

// stopContainer stops a container gracefully and removes it. It runs to
// the end even when the worker closes: what it stops must not be left.
func (w *Worker) stopContainer(cid string, logger *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), w.cfg.StopGrace+30*time.Second)
	defer cancel()
	if err := w.rt.Stop(ctx, cid, w.cfg.StopGrace); err != nil && !errors.Is(err, gust.ErrInstanceNotFound) {
		logger.Warn("stop container", zap.Error(err))
	}
	w.removeContainer(cid, logger)
}

func (w *Worker) removeContainer(cid string, logger *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 30*time.Second)
	defer cancel()
	if err := w.rt.Remove(ctx, cid); err != nil {
		logger.Warn("remove container", zap.Error(err))
	}
}

// publishStatus writes the status of every pool whose numbers changed.
func (w *Worker) publishStatus() {
	w.mu.Lock()
	pools := make([]*pool, 0, len(w.pools))
	for _, p := range w.pools {
		pools = append(pools, p)
	}
	w.mu.Unlock()
	for _, p := range pools {
		st := p.status()
		st.Worker = w.cfg.ID
		w.mu.Lock()
		prev, ok := w.published[p.key]
		w.mu.Unlock()
		if ok && prev.Replicas == st.Replicas && prev.Available == st.Available && prev.Invocations == st.Invocations && prev.InFlight == st.InFlight && time.Since(prev.Updated) < 30*time.Second {
			continue
		}
		st.Updated = time.Now()
		if _, err := w.state.Status.Put(w.ctx, p.key+"."+w.cfg.ID, st); err != nil {
			if w.ctx.Err() == nil {
				w.logger.Warn("publish pool status", zap.Error(err))
			}
			continue
		}
		w.mu.Lock()
		w.published[p.key] = st
		w.mu.Unlock()
	}
}

// handlePrepare answers the scheduler's request to get a function ready
// here: image present and one instance ready.
func (w *Worker) handlePrepare(ctx context.Context, data []byte) any {
	var req gust.PrepareRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return gust.ReplyOf(gust.Errorf(gust.EINVALID, "decode prepare request: %v", err))
	}
	fn := req.Function
	if err := w.ensureImage(ctx, fn.Spec.Image); err != nil {
		return gust.ReplyOf(err)
	}
	p, err := w.poolFor(&fn)
	if err != nil {
		return gust.ReplyOf(err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ReadyTimeout+30*time.Second)
	defer cancel()
	return gust.ReplyOf(p.waitReady(ctx))
}

// ensureImage makes an image present, once per worker run.
func (w *Worker) ensureImage(ctx context.Context, ref string) error {
	w.mu.Lock()
	ok := w.images[ref]
	w.mu.Unlock()
	if ok {
		return nil
	}
	if err := w.rt.EnsureImage(ctx, ref); err != nil {
		return err
	}
	w.mu.Lock()
	w.images[ref] = true
	w.mu.Unlock()
	return nil
}

// Drain stops taking calls, waits for the calls in flight (until ctx
// ends), then stops and removes every container this worker started.
func (w *Worker) Drain(ctx context.Context) error {
	w.mu.Lock()
	if w.draining {
		w.mu.Unlock()
		return nil
	}
	w.draining = true
	w.mu.Unlock()
	if w.stopPrepare != nil {
		_ = w.stopPrepare()
	}
	_ = w.heartbeat(ctx)
	// No call enters once draining is set (enterCall): wait for the count
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
	w.cancel()
	w.spawnMu.Lock()
	w.spawnClosed = true
	w.spawnMu.Unlock()
	w.wg.Wait()
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
