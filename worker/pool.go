package worker

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/autoscale"
	"go.uber.org/zap"
)

// pool keeps the warm instances of one function on this worker.
//
// Lock order: Worker.mu before pool.mu; never the reverse (see LOCKS.md).
type pool struct {
	w      *Worker
	key    string
	logger *zap.Logger

	mu sync.Mutex
	fn *gust.Function
	// cfg is fn.Config() with Min and Max narrowed to this worker's share.
	cfg       gust.FunctionConfig
	instances []*instance
	waiting   int
	// changed is closed (and replaced) whenever a slot frees or an
	// instance becomes ready or fails, waking every waiting call.
	changed     chan struct{}
	lastFailErr error
	lastFailAt  time.Time
	inflight    int
	invocations uint64
	closed      bool
	// scaler decides how many instances the pool wants (autoscale), fed
	// a sample every reap tick; want is its last answer without max.
	scaler *autoscale.Decider
	want   int
	// orderAt and orderShare are the last scale-function order applied
	// and this worker's share of it.
	orderAt    time.Time
	orderShare int
	// ordered is when this pool applied the last order: for a stable
	// window from then the idle timeout does not take the pool below it
	// (the decider holds it as long), so that an order of more instances
	// than the minimum is not undone as soon as it is carried out.
	ordered time.Time
	// cpu is the pool's CPU use in millicores, read at cpuAt, for a pool
	// scaled by CPU (cpu.go); cpuBegun is when the last reading round
	// began, cpuSampling whether one runs.
	cpu         float64
	cpuAt       time.Time
	cpuBegun    time.Time
	cpuSampling bool
	// peak is the most instances calls have had live at once: a pool
	// that has been bursty keeps more prepared (prepare.go); peakAt is
	// when it last had more than one live, after which the worker's
	// BurstMemory forgets the peak.
	peak   int
	peakAt time.Time
	// callTime is how long the pool's calls take when nothing holds them
	// up, which decides whether calls fill an instance (pickLocked): a
	// call faster than it sets it, a slower one raises it by a
	// callTimeRise-th of the difference. Calls that wait for CPU behind
	// others on a filled instance run longer than they need, but some
	// run alone and keep it low; a function whose every call is long
	// raises it the sooner the longer they are (20 ms calls: within 10).
	callTime time.Duration
}

// callTimeRise: a slower call raises callTime by this fraction of the
// difference.
const callTimeRise = 64

func newPool(w *Worker, fn *gust.Function) *pool {
	p := &pool{
		w:       w,
		key:     fn.Key(),
		logger:  w.logger.With(zap.String("function", fn.Key())),
		changed: make(chan struct{}),
	}
	p.fn = fn
	p.cfg = fn.Config()
	p.scaler = autoscale.New(policyOf(p.cfg), 0)
	if p.cfg.Min == 0 {
		// Nothing started yet, and nothing needed before a call.
		p.scaler.Lower(time.Now(), 0, 0)
	}
	return p
}

// policyOf is the autoscaling policy of a pool's config (its share).
func policyOf(c gust.FunctionConfig) autoscale.Policy {
	return autoscale.Policy{
		Type: c.ScaleType, Target: c.ScaleTarget, Proportion: c.ScaleProportion, Factor: c.ScaleFactor,
		Min: c.Min, Max: c.Max, Concurrency: c.Concurrency, Window: c.ScaleWindow,
	}
}

// setFunctionLocked applies a new function record and this worker's share
// of its scale and of its last scale-function order. Instances of an older
// version retire.
func (p *pool) setFunctionLocked(fn *gust.Function, minShare, maxShare, orderShare int) {
	if fn.Version != p.fn.Version {
		for _, in := range p.instances {
			if in.version != fn.Version {
				in.retiring = true
			}
		}
	}
	newVersion := fn.Version != p.fn.Version
	p.fn = fn
	if newVersion {
		p.w.dropStalePreparedLocked(p)
	}
	p.cfg = fn.Config()
	p.cfg.Min, p.cfg.Max = minShare, maxShare
	if p.cfg.Max < 1 {
		p.cfg.Max = 1
	}
	if p.cfg.Min > p.cfg.Max {
		p.cfg.Min = p.cfg.Max
	}
	p.scaler.SetPolicy(policyOf(p.cfg))
	now := time.Now()
	if o := fn.Scaled; o != nil {
		// A new order applies at once; a fresh one applies again when
		// this worker's share of it changes (the placement widened for
		// it). An order older than a stable window has been acted on.
		fresh := autoscale.OrderFresh(o.At, now)
		if fresh && (o.At.After(p.orderAt) || o.At.Equal(p.orderAt) && orderShare != p.orderShare) {
			p.scaler.Set(now, orderShare, p.invocations)
			p.ordered = now
		}
		p.orderAt, p.orderShare = o.At, orderShare
	}
	p.broadcastLocked()
}

func (p *pool) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// errStartFailed marks a call that waited for an instance that did not
// start.
var errStartFailed = errors.New("instance failed to start")

// startError is what acquire returns for a start that failed: it is
// errStartFailed, and unwraps (errors.Unwrap) to the start's own error.
// (fmt.Errorf with two %w would not: Unwrap then gives nil, and the
// caller's message lost its cause.)
type startError struct{ err error }

func (e *startError) Error() string        { return errStartFailed.Error() + ": " + e.err.Error() }
func (e *startError) Unwrap() error        { return e.err }
func (e *startError) Is(target error) bool { return target == errStartFailed }

// errNoSlot is returned by acquire when no slot came free within its wait.
var errNoSlot = errors.New("no free instance in time")

// errTooManyWaiting is returned by acquire when the pool already holds
// Config.MaxWaiting calls waiting for a slot: past that a caller is told
// to come back (429) rather than held, so that a flood on one function
// cannot pile up goroutines, memory and connections without end.
var errTooManyWaiting = errors.New("too many calls waiting")

// DefaultMaxWaiting is Config.MaxWaiting when it is not set.
const DefaultMaxWaiting = 500

// maxWaiting is the bound on the calls waiting in one pool.
func (w *Worker) maxWaiting() int {
	if w.cfg.MaxWaiting > 0 {
		return w.cfg.MaxWaiting
	}
	return DefaultMaxWaiting
}

// acquire takes a concurrency slot on a ready instance, starting one if
// the pool has no free slot and is below its max. It waits at most
// maxWait (the timer is made only when it must wait) or until ctx ends,
// and only while fewer than the worker's MaxWaiting calls wait already
// (errTooManyWaiting). cold reports that the call waited for an instance
// to start.
func (p *pool) acquire(ctx context.Context, maxWait time.Duration) (in *instance, cold bool, err error) {
	p.mu.Lock()
	waitStart := time.Time{}
	var timeout <-chan time.Time
	for {
		if p.closed {
			p.mu.Unlock()
			return nil, false, gust.ErrDraining
		}
		if in = p.pickLocked(); in != nil {
			in.inflight++
			p.inflight++
			p.invocations++
			cold = !waitStart.IsZero() && in.readyAt.After(waitStart)
			p.mu.Unlock()
			return in, cold, nil
		}
		if !waitStart.IsZero() && p.lastFailAt.After(waitStart) {
			err := p.lastFailErr
			p.mu.Unlock()
			return nil, false, &startError{err}
		}
		if waitStart.IsZero() {
			// A function whose last start failed a moment ago fails fast
			// rather than starting container after container.
			if p.readyCountLocked() == 0 && time.Since(p.lastFailAt) < time.Second {
				err := p.lastFailErr
				p.mu.Unlock()
				return nil, false, &startError{err}
			}
			if p.waiting >= p.w.maxWaiting() {
				p.mu.Unlock()
				return nil, false, errTooManyWaiting
			}
			waitStart = time.Now()
			t := time.NewTimer(maxWait)
			defer t.Stop()
			timeout = t.C
		}
		p.waiting++
		if !p.scaleUpLocked() {
			p.waiting--
			p.mu.Unlock()
			return nil, false, gust.ErrDraining
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
			p.mu.Lock()
			p.waiting--
		case <-ctx.Done():
			p.mu.Lock()
			p.waiting--
			p.mu.Unlock()
			return nil, false, ctx.Err()
		case <-timeout:
			p.mu.Lock()
			p.waiting--
			p.mu.Unlock()
			return nil, false, errNoSlot
		}
	}
}

// pickLocked returns the ready instance a call goes to: the oldest that
// carries fewer calls than the pool's fill (fillOf; 1 if its calls take
// fillCallTime or more) and has answered one within fillStall, or else
// the least loaded with a free slot.
func (p *pool) pickLocked() *instance {
	fill := 1
	if p.callTime < fillCallTime {
		fill = fillOf(&p.cfg)
	}
	var now time.Time
	var best *instance
	for _, in := range p.instances {
		if in.state != stateReady || in.suspect || in.retiring || in.inflight >= p.cfg.Concurrency {
			continue
		}
		if in.inflight < fill {
			if in.inflight == 0 {
				return in
			}
			if now.IsZero() {
				now = time.Now()
			}
			if now.Sub(in.lastUsed) < fillStall {
				return in
			}
		}
		if best == nil || in.inflight < best.inflight {
			best = in
		}
	}
	return best
}

// fillCallTime: calls that run this long or longer (callTime) are spread
// (a fill of 1) whatever the pool's type. Filling saves the wake-ups of
// instances that each get a call now and then, 60-100 µs of CPU a call
// here: as much as a short call costs, but at most 5% of one of 2 ms,
// whose calls would lose more by sharing one instance's CPU limit (a call
// that burns CPU) than they would save.
const fillCallTime = 2 * time.Millisecond

// fillStall is how long an instance with calls in flight may go without
// answering one and still be filled: past it, it gets calls only as the
// least loaded, so that an instance stuck on its calls does not take a
// fill's worth more before the first of them times out and marks it
// suspect.
const fillStall = time.Second

// fillOf is how many calls in flight an instance of a pool with config c
// carries before the next instance gets calls (OpenWhisk's invoker, too,
// gives a call to the first warm container with room). Spreading a few
// calls over many instances wakes every one of them for each call: on
// this machine kind, the hello function spent 38-56 µs of CPU per call
// when one instance took 4-64 concurrent calls, and 75-150 µs when four
// instances shared them, at about half the throughput (docs/benchmarks.md,
// "Issue 11, eighth pass"). Filling the oldest instances first also lets
// the newest go idle, so that the paused tier and the idle timeout take
// back what the load no longer needs.
//
// The fill is what the autoscaler sizes the pool by where it counts calls
// in flight (capacity: target × proportion), and the hard limit
// (gust.concurrency) × proportion without a type. A pool scaled by CPU or
// by calls per second spreads its calls (a fill of 1, least loaded first,
// as before): its owner sized each instance for a share of the CPU or of
// the rate, which only spreading gives it, and filling would leave the
// instances the decider keeps for that share idle until the idle timeout
// stopped them and the decider started them again.
func fillOf(c *gust.FunctionConfig) int {
	pol := autoscale.Policy{Target: c.ScaleTarget, Proportion: c.ScaleProportion}
	var f float64
	switch c.ScaleType {
	case autoscale.TypeCPU, autoscale.TypeRPS:
		return 1
	case autoscale.TypeCapacity:
		f = pol.PerInstance()
	default:
		f = float64(c.Concurrency) * pol.ProportionOrDefault()
	}
	return min(max(int(math.Ceil(f)), 1), c.Concurrency)
}

// readyCountLocked counts the instances that serve calls now or after a
// thaw.
func (p *pool) readyCountLocked() int {
	n := 0
	for _, in := range p.instances {
		if in.state != stateStarting && in.state != stateStopping {
			n++
		}
	}
	return n
}

// liveLocked counts instances that count towards max: starting or ready,
// not retiring. A paused instance counts as ready (it serves after a
// thaw); one resuming, or pausing but asked to wake, as starting (calls
// wait for it).
func (p *pool) liveLocked() (starting, ready int) {
	for _, in := range p.instances {
		if in.retiring || in.state == stateStopping {
			continue
		}
		switch {
		case in.state == stateStarting, in.state == stateResuming, in.state == statePausing && in.wake:
			starting++
		default:
			ready++
		}
	}
	return
}

// scaleUpLocked starts instances for waiting calls: enough that the slots
// of instances being started cover the calls waiting for them, up to max.
// One start serves every call that waits for it. It reports false if the
// worker refused a start (it is shutting down).
func (p *pool) scaleUpLocked() bool {
	starting, ready := p.liveLocked()
	need := (p.waiting + p.cfg.Concurrency - 1) / p.cfg.Concurrency
	// A paused instance is thawed in milliseconds: wake those first.
	for starting < need {
		in := p.pausedLocked()
		if in == nil {
			break
		}
		if !p.resumeLocked(in) {
			return false
		}
		starting, ready = starting+1, ready-1
	}
	started := false
	for starting < need && starting+ready < p.cfg.Max {
		if p.startLocked() == nil {
			return false
		}
		starting++
		started = true
	}
	p.peak = max(p.peak, starting+ready)
	if starting+ready > 1 {
		p.peakAt = time.Now()
	}
	if started || p.scaler.Asleep() {
		// gust.concurrency is the hard limit: the decider follows, and
		// scales down from here only after its stable window.
		p.scaler.Raise(time.Now(), starting+ready)
	}
	return true
}

// ensureDesiredLocked starts instances until the pool holds what its
// decider wants (at least its minimum while awake).
func (p *pool) ensureDesiredLocked() {
	starting, ready := p.liveLocked()
	for n := starting + ready; n < min(p.scaler.Desired(), p.cfg.Max); n++ {
		if p.startLocked() == nil {
			return
		}
	}
}

// autoscaleLocked feeds the decider what the pool measures now and starts
// what it wants; reapLocked stops what it no longer wants.
func (p *pool) autoscaleLocked(now time.Time) {
	_, ready := p.liveLocked()
	_, p.want = p.scaler.Observe(autoscale.Sample{
		At: now, InFlight: p.inflight + p.waiting, Calls: p.invocations, Ready: ready,
		CPU: p.cpuLocked(now), // -1 (none) unless scaled by CPU (cpu.go)
	})
	p.ensureDesiredLocked()
}

// startLocked adds a starting instance and starts its container in a
// goroutine of the worker's. It returns nil, and starts nothing, once the
// worker has stopped starting goroutines (Drain).
func (p *pool) startLocked() *instance {
	id, prepared := p.w.instanceIDLocked(p)
	in := &instance{id: id, version: p.fn.Version, state: stateStarting, prepared: prepared}
	fn := p.fn
	cfg := p.cfg
	if !p.w.tasks.Go(func(context.Context) { p.w.startInstance(p, in, fn, cfg) }) {
		return nil
	}
	// The start cannot touch the pool before this: it needs p.mu, which
	// the caller holds.
	p.instances = append(p.instances, in)
	return in
}

// started records the outcome of an instance start. It reports whether
// the instance must be stopped at once: it started, but its pool closed
// meanwhile (its function was deleted, or the worker drains), and nothing
// else would ever stop it.
func (p *pool) started(in *instance, err error) (stop bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil && p.closed {
		p.removeLocked(in)
		in.state = stateStopping
		p.broadcastLocked()
		return true
	}
	if err != nil {
		p.removeLocked(in)
		p.lastFailErr, p.lastFailAt = err, time.Now()
		p.w.metrics.InstanceStart(p.key, "failed")
	} else {
		p.w.metrics.InstanceStart(p.key, "ok")
		in.state = stateReady
		in.readyAt = time.Now()
		in.lastUsed = in.readyAt
		p.w.kickStatus()
	}
	p.broadcastLocked()
	return false
}

// release gives back the slot taken by acquire; took is how long the
// call ran on it (0: it did not run).
func (p *pool) release(in *instance, took time.Duration) {
	p.mu.Lock()
	in.inflight--
	p.inflight--
	in.lastUsed = time.Now()
	switch {
	case took <= 0:
	case took < p.callTime:
		p.callTime = took
	default:
		p.callTime += (took - p.callTime) / callTimeRise
	}
	if p.waiting > 0 {
		p.broadcastLocked()
	}
	closed := p.closed
	p.mu.Unlock()
	if closed {
		p.w.reapPool(p)
	}
}

// removeLocked takes in out of the pool. The decider follows the pool
// down (an instance that exited, crashed or failed to start is not
// replaced before a call or the load asks for it, as before autoscaling),
// except below a minimum, which is kept.
func (p *pool) removeLocked(in *instance) bool {
	for i, x := range p.instances {
		if x == in {
			p.instances = append(p.instances[:i], p.instances[i+1:]...)
			// No new call reaches it: its connections close, those of
			// calls in flight as they end.
			in.client.CloseIdle()
			if starting, ready := p.liveLocked(); starting+ready > 0 || p.cfg.Min == 0 {
				p.scaler.Lower(time.Now(), starting+ready, p.invocations)
			}
			return true
		}
	}
	return false
}

// reapLocked returns the instances to stop now: retiring ones, idle ones
// above what the decider wants (it scaled down, or an order did), and idle
// surplus (above the minimum, idle longer than the idle timeout; with
// scale to zero, all of them once every one is). It never picks an
// instance with a call in flight. It also returns the idle instances to
// pause now (pausesLocked), marked pausing.
func (p *pool) reapLocked(now time.Time) (stops, pauses []*instance) {
	var out []*instance
	starting, ready := p.liveLocked()
	live := starting + ready
	desired := p.scaler.Desired()
	idle := func(in *instance) bool { return now.Sub(in.lastUsed) >= p.cfg.IdleTimeout }
	held := 0 // what a fresh order holds
	if now.Sub(p.ordered) < max(p.cfg.ScaleWindow, autoscale.StableWindow) {
		held = p.orderShare
	}
	floor := max(p.cfg.Min, held)
	allIdle := p.cfg.ScaleToZero && held == 0 && p.inflight == 0 && p.waiting == 0 && starting == 0
	for _, in := range p.instances {
		if !in.retiring && in.state != stateStopping && !idle(in) {
			allIdle = false
		}
	}
	idled := false
	for _, in := range p.instances {
		if in.state != stateReady && in.state != statePaused || in.inflight > 0 {
			continue
		}
		switch {
		case p.closed, in.retiring:
		case live > desired, live > p.cfg.Max:
			live--
		case live > floor && idle(in), allIdle:
			live--
			idled = true
		default:
			continue
		}
		in.state = stateStopping
		out = append(out, in)
	}
	for _, in := range out {
		p.removeLocked(in)
	}
	if idled && !p.closed {
		// Unused for the idle timeout: the decider follows the pool
		// down (to sleep at zero) rather than start them again.
		p.scaler.Lower(now, live, p.invocations)
	}
	return out, p.pausesLocked(now, floor)
}

// status reports the pool for the status table.
func (p *pool) status() gust.PoolStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	starting, ready := p.liveLocked()
	paused := 0
	for _, in := range p.instances {
		if !in.retiring && (in.state == statePaused || in.state == statePausing && !in.wake) {
			paused++
		}
	}
	return gust.PoolStatus{
		Replicas:    starting + ready,
		Available:   ready,
		Paused:      paused,
		InFlight:    p.inflight,
		Invocations: p.invocations,
		Desired:     p.scaler.Desired(),
		Want:        p.want,
	}
}

// waitReady blocks until the pool has a ready instance, starting one if it
// has none. It serves deploys: the first instance starts at once, so a
// broken image shows up at deploy time and the first call is warm.
func (p *pool) waitReady(ctx context.Context) error {
	p.mu.Lock()
	start := time.Now()
	for {
		if p.closed {
			p.mu.Unlock()
			return gust.ErrDraining
		}
		starting, ready := p.liveLocked()
		if ready > 0 {
			p.mu.Unlock()
			return nil
		}
		if p.lastFailAt.After(start) || starting == 0 && time.Since(p.lastFailAt) < time.Second {
			err := p.lastFailErr
			p.mu.Unlock()
			return err
		}
		if starting == 0 {
			if p.startLocked() == nil {
				p.mu.Unlock()
				return gust.ErrDraining
			}
			// The deploy's instance stays until the idle timeout, as
			// one a call started would.
			p.scaler.Raise(time.Now(), 1)
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
	}
}

// reap runs every pool's decider, stops what no pool wants and starts
// what they want.
func (w *Worker) reap() {
	w.mu.Lock()
	pools := make([]*pool, 0, len(w.pools))
	for _, p := range w.pools {
		pools = append(pools, p)
	}
	draining := w.draining
	w.mu.Unlock()
	for _, p := range pools {
		if !draining {
			p.mu.Lock()
			if !p.closed {
				p.autoscaleLocked(time.Now())
			}
			p.mu.Unlock()
			w.startCPUSampling(p, time.Now())
		}
		w.reapPool(p)
	}
}

func (w *Worker) reapPool(p *pool) {
	p.mu.Lock()
	now := time.Now()
	w.trimPreparedLocked(p, now)
	victims, pauses := p.reapLocked(now)
	for _, in := range pauses {
		if !w.tasks.Go(func(context.Context) { w.pauseInstance(p, in) }) {
			in.state = stateReady // draining: it is stopped with the rest
		}
	}
	type stop struct{ id, cid string }
	stops := make([]stop, 0, len(victims))
	for _, in := range victims {
		stops = append(stops, stop{in.id, in.cid})
	}
	if len(victims) > 0 {
		p.broadcastLocked()
		if fn, cfg := p.fn, p.cfg; !p.closed {
			// Fewer live: a bursty pool prepares what its next burst
			// would start (prepare.go).
			w.tasks.Go(func(context.Context) { w.prepareNext(p, fn, cfg) })
		}
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
		if !w.tasks.Go(func(context.Context) { w.stopContainer(s.cid, logger) }) {
			// Drain has waited for the worker's goroutines already (a
			// call that outlived its wait released this instance): stop
			// it on the caller's goroutine.
			w.stopContainer(s.cid, logger)
		}
	}
}
