package worker

import (
	"context"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// Prepared instances (issue 11, a faster cold start): on a runtime that
// can prepare containers ahead (gust.Preparer), each pool keeps the
// containers of its next instances prepared: made ready but not started,
// under instance ids chosen then. The pool's next starts take those ids
// (startLocked), and the runtime only starts the containers, so a call at
// zero instances pays for the start of the process and not for the
// container's making. A pool keeps one prepared; a pool that has been
// bursty keeps as many as its largest burst would start from where it
// stands (its peak of live instances less those live), up to
// maxPreparedPerPool, and the worker keeps at most maxPreparedExtra
// beyond one per pool; a burst older than Config.BurstMemory is forgotten
// and the extra ones removed (trimPreparedLocked). Preparing waits while starts run or wait (it loads
// the same Engine, startlimit.go), so it happens after a burst, and again
// after a scale down. Functions with secrets are not prepared: their
// secrets are read at each start. A prepared container carries the
// worker's label like any other, so Drain's and a restart's removal of
// leftovers finds it.

// Bounds of the containers prepared ahead. On Docker each holds a network
// holder, a running process with a containerd shim (~3.5 MB proportional
// resident memory measured here, 13 MB RSS), so a worker holds at most
// maxPreparedExtra of them beyond one per pool. Measured on two cores
// (Docker 20.10): 20 starts of prepared containers were all ready within
// 0.9 s four at a time, 20 fresh starts took 3.2 s at best; 100 calls of
// 50 ms on a pool back at zero with concurrency 1 and max 20 ended within
// 0.84 s with 20 prepared, 1.03 s with 8.
const (
	maxPreparedPerPool = 20
	maxPreparedExtra   = 32
)

// preparedSet is the prepared instances of each pool. Its mutex is taken
// after pool.mu and before the tasks group's.
type preparedSet struct {
	mu   sync.Mutex
	m    map[*pool][]preparedInst
	busy map[*pool]bool // preparations in flight
}

type preparedInst struct {
	id      string // instance id
	name    string // container name
	version uint64 // function version it was prepared for
}

// prepareTimeout bounds one preparation.
const prepareTimeout = time.Minute

// instanceIDLocked returns the id of p's next instance: a prepared one's
// when one is of p's version (prepared true), a new one otherwise.
// Called with p.mu held.
func (w *Worker) instanceIDLocked(p *pool) (id string, prepared bool) {
	w.prep.mu.Lock()
	defer w.prep.mu.Unlock()
	for es := w.prep.m[p]; len(es) > 0; es = w.prep.m[p] {
		e := es[len(es)-1]
		w.prep.m[p] = es[:len(es)-1]
		if e.version == p.fn.Version {
			return e.id, true
		}
		// Prepared for a version since replaced.
		w.tasks.Go(func(context.Context) { w.unprepare(e.name) })
	}
	return newID(), false
}

// dropStalePreparedLocked removes the instances prepared for a version of
// p's function other than its own (setFunctionLocked), rather than at
// its next start, which may be a burst's. Called with p.mu held.
func (w *Worker) dropStalePreparedLocked(p *pool) {
	w.prep.mu.Lock()
	defer w.prep.mu.Unlock()
	es := w.prep.m[p]
	if len(es) == 0 {
		return
	}
	keep := es[:0]
	for _, e := range es {
		if e.version == p.fn.Version {
			keep = append(keep, e)
			continue
		}
		w.tasks.Go(func(context.Context) { w.unprepare(e.name) })
	}
	w.prep.m[p] = keep
}

// preparedWantLocked is how many instances p keeps prepared: one, or for
// a pool that has been bursty, what its largest burst would start from
// here. Called with p.mu held.
func (p *pool) preparedWantLocked() int {
	starting, ready := p.liveLocked()
	return max(1, min(p.peak-starting-ready, p.cfg.Max, maxPreparedPerPool))
}

// extraPreparedLocked counts the prepared instances beyond one per pool. Called
// with w.prep.mu held.
func (w *Worker) extraPreparedLocked() int {
	n := 0
	for _, es := range w.prep.m {
		n += max(len(es)-1, 0)
	}
	return n
}

// prepareNext prepares the containers of p's next instances, one after
// the other, until p has what it wants prepared, unless the runtime
// cannot, fn has secrets, or preparations of p are in flight.
func (w *Worker) prepareNext(p *pool, fn *gust.Function, cfg gust.FunctionConfig) {
	pr, ok := w.rt.(gust.Preparer)
	if !ok || len(fn.Spec.Secrets) > 0 {
		return
	}
	w.prep.mu.Lock()
	if w.prep.busy[p] {
		w.prep.mu.Unlock()
		return
	}
	if w.prep.busy == nil {
		w.prep.busy, w.prep.m = map[*pool]bool{}, map[*pool][]preparedInst{}
	}
	w.prep.busy[p] = true
	w.prep.mu.Unlock()
	defer func() {
		w.prep.mu.Lock()
		delete(w.prep.busy, p)
		w.prep.mu.Unlock()
	}()
	failed := 0
	for {
		// Work ahead of need waits until no start runs or waits: it
		// loads the same Engine, and during a burst every start not
		// made yet has a call waiting for it. (Drain ends the wait.)
		if w.starts.whenQuiet(w.ctx) != nil {
			return
		}
		p.mu.Lock()
		w.prep.mu.Lock()
		have := len(w.prep.m[p])
		more := !p.closed && p.fn.Version == fn.Version && have < p.preparedWantLocked() &&
			(have == 0 || w.extraPreparedLocked() < maxPreparedExtra)
		w.prep.mu.Unlock()
		p.mu.Unlock()
		if !more {
			return
		}
		id := newID()
		spec := w.containerSpec(fn, cfg, &instance{id: id})
		ctx, cancel := context.WithTimeout(w.ctx, prepareTimeout)
		err := pr.Prepare(ctx, spec)
		cancel()
		p.mu.Lock()
		w.prep.mu.Lock()
		keep := err == nil && !p.closed && p.fn.Version == fn.Version
		if keep {
			w.prep.m[p] = append(w.prep.m[p], preparedInst{id: id, name: spec.Name, version: fn.Version})
		}
		w.prep.mu.Unlock()
		p.mu.Unlock()
		switch {
		case err != nil && w.ctx.Err() == nil:
			p.logger.Info("next instance not prepared", zap.Error(err))
			// A loaded Engine fails a start now and then ("cannot start
			// a stopped process"): the round goes on, but not against
			// an Engine that keeps refusing.
			if failed++; failed < prepareTries {
				continue
			}
			return
		case err == nil && !keep:
			w.unprepare(spec.Name)
		}
		if !keep {
			return
		}
		failed = 0
	}
}

// prepareTries is how many preparations in a row may fail before a
// round of them ends (the next start or scale down begins another).
const prepareTries = 3

// prepareFirst prepares the first instance of p, a pool just placed
// here, so that even its first call does not pay for making a container.
// The image is made present first, as a start would.
func (w *Worker) prepareFirst(p *pool) {
	if _, ok := w.rt.(gust.Preparer); !ok {
		return
	}
	p.mu.Lock()
	fn, cfg := p.fn, p.cfg
	starting, ready := p.liveLocked()
	p.mu.Unlock()
	if fn == nil || starting+ready > 0 || len(fn.Spec.Secrets) > 0 {
		return // started already: prepareNext follows the start
	}
	ctx, cancel := context.WithTimeout(w.ctx, prepareTimeout)
	err := w.ensureImage(ctx, fn.Spec.Image)
	cancel()
	if err != nil {
		return // the first start says why
	}
	w.prepareNext(p, fn, cfg)
}

// DefaultBurstMemory is Config.BurstMemory when it is not set: an hour
// after its last burst, a pool keeps one container prepared again.
const DefaultBurstMemory = time.Hour

// trimPreparedLocked removes what p keeps prepared beyond its need: all
// but one once its last burst is older than the worker's BurstMemory (the
// peak is forgotten), and any beyond its max share (a placement that gave
// this worker less of it). Called with p.mu held, by the reap.
func (w *Worker) trimPreparedLocked(p *pool, now time.Time) {
	memory := w.cfg.BurstMemory
	if memory <= 0 {
		memory = DefaultBurstMemory
	}
	if p.peak > 1 && now.Sub(p.peakAt) >= memory {
		if starting, ready := p.liveLocked(); starting+ready <= 1 {
			p.peak = 0
		}
	}
	keep := max(1, min(p.cfg.Max, maxPreparedPerPool))
	if p.peak <= 1 {
		keep = 1
	}
	w.prep.mu.Lock()
	es := w.prep.m[p]
	if len(es) <= keep || w.prep.busy[p] {
		w.prep.mu.Unlock()
		return
	}
	extra := append([]preparedInst(nil), es[keep:]...)
	w.prep.m[p] = es[:keep:keep]
	w.prep.mu.Unlock()
	for _, e := range extra {
		w.tasks.Go(func(context.Context) { w.unprepare(e.name) })
	}
	p.logger.Debug("prepared containers trimmed", zap.Int("removed", len(extra)), zap.Int("kept", keep))
}

// dropPrepared removes the containers prepared for p (closePool).
func (w *Worker) dropPrepared(p *pool) {
	w.prep.mu.Lock()
	es := w.prep.m[p]
	delete(w.prep.m, p)
	w.prep.mu.Unlock()
	for _, e := range es {
		w.unprepare(e.name)
	}
}

func (w *Worker) unprepare(name string) {
	pr, ok := w.rt.(gust.Preparer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), prepareTimeout)
	defer cancel()
	if err := pr.Unprepare(ctx, name); err != nil {
		w.logger.Warn("remove prepared container", zap.String("container", name), zap.Error(err))
	}
}
