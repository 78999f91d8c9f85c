package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gustfaas/gust"
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
}

func newPool(w *Worker, fn *gust.Function) *pool {
	p := &pool{
		w:       w,
		key:     fn.Key(),
		logger:  w.logger.With(zap.String("function", fn.Key())),
		changed: make(chan struct{}),
	}
	p.fn = fn
	p.cfg = fn.Config()
	return p
}

// setFunctionLocked applies a new function record and this worker's share
// of its scale. Instances of an older version retire.
func (p *pool) setFunctionLocked(fn *gust.Function, minShare, maxShare int) {
	if fn.Version != p.fn.Version {
		for _, in := range p.instances {
			if in.version != fn.Version {
				in.retiring = true
			}
		}
	}
	p.fn = fn
	p.cfg = fn.Config()
	p.cfg.Min, p.cfg.Max = minShare, maxShare
	if p.cfg.Max < 1 {
		p.cfg.Max = 1
	}
	if p.cfg.Min > p.cfg.Max {
		p.cfg.Min = p.cfg.Max
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

// pickLocked returns the least-loaded ready instance with a free slot.
func (p *pool) pickLocked() *instance {
	var best *instance
	for _, in := range p.instances {
		if in.state != stateReady || in.suspect || in.retiring || in.inflight >= p.cfg.Concurrency {
			continue
		}
		if best == nil || in.inflight < best.inflight {
			best = in
		}
	}
	return best
}

func (p *pool) readyCountLocked() int {
	n := 0
	for _, in := range p.instances {
		if in.state == stateReady {
			n++
		}
	}
	return n
}

// liveLocked counts instances that count towards max: starting or ready,
// not retiring.
func (p *pool) liveLocked() (starting, ready int) {
	for _, in := range p.instances {
		if in.retiring || in.state == stateStopping {
			continue
		}
		switch in.state {
		case stateStarting:
			starting++
		case stateReady:
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
	for starting < need && starting+ready < p.cfg.Max {
		if p.startLocked() == nil {
			return false
		}
		starting++
	}
	return true
}

// ensureMinLocked starts instances until the pool holds its minimum.
func (p *pool) ensureMinLocked() {
	starting, ready := p.liveLocked()
	for n := starting + ready; n < p.cfg.Min; n++ {
		if p.startLocked() == nil {
			return
		}
	}
}

// startLocked adds a starting instance and starts its container in a
// goroutine of the worker's. It returns nil, and starts nothing, once the
// worker has stopped starting goroutines (Drain).
func (p *pool) startLocked() *instance {
	in := &instance{id: newID(), version: p.fn.Version, state: stateStarting}
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

// release gives back the slot taken by acquire.
func (p *pool) release(in *instance) {
	p.mu.Lock()
	in.inflight--
	p.inflight--
	in.lastUsed = time.Now()
	if p.waiting > 0 {
		p.broadcastLocked()
	}
	closed := p.closed
	p.mu.Unlock()
	if closed {
		p.w.reapPool(p)
	}
}

func (p *pool) removeLocked(in *instance) bool {
	for i, x := range p.instances {
		if x == in {
			p.instances = append(p.instances[:i], p.instances[i+1:]...)
			return true
		}
	}
	return false
}

// reapLocked returns the instances to stop now: retiring or surplus idle
// ones (above the minimum, idle longer than the idle timeout). It never
// picks an instance with a call in flight.
func (p *pool) reapLocked(now time.Time) []*instance {
	var out []*instance
	starting, ready := p.liveLocked()
	live := starting + ready
	for _, in := range p.instances {
		if in.state != stateReady || in.inflight > 0 {
			continue
		}
		switch {
		case p.closed, in.retiring:
		case live > p.cfg.Min && now.Sub(in.lastUsed) >= p.cfg.IdleTimeout:
			live--
		case live > p.cfg.Max:
			live--
		default:
			continue
		}
		in.state = stateStopping
		out = append(out, in)
	}
	for _, in := range out {
		p.removeLocked(in)
	}
	return out
}

// status reports the pool for the status table.
func (p *pool) status() gust.PoolStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	starting, ready := p.liveLocked()
	return gust.PoolStatus{
		Replicas:    starting + ready,
		Available:   ready,
		InFlight:    p.inflight,
		Invocations: p.invocations,
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
		if starting == 0 && p.startLocked() == nil {
			p.mu.Unlock()
			return gust.ErrDraining
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
		if !w.tasks.Go(func(context.Context) { w.stopContainer(s.cid, logger) }) {
			// Drain has waited for the worker's goroutines already (a
			// call that outlived its wait released this instance): stop
			// it on the caller's goroutine.
			w.stopContainer(s.cid, logger)
		}
	}
}
