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
// container of its next instance prepared: after an instance starts, the
// next one's container is made ready but not started, under an instance
// id chosen now. The pool's next start takes that id (startLocked), and
// the runtime only starts the container, so a call at zero instances
// pays for the start of the process and not for the container's making.
// Functions with secrets are not prepared: their secrets are read at each
// start. A prepared container carries the worker's label like any
// other, so Drain's and a restart's removal of leftovers finds it.

// preparedSet is the prepared instance of each pool. Its mutex is taken
// after pool.mu and before the tasks group's.
type preparedSet struct {
	mu   sync.Mutex
	m    map[*pool]preparedInst
	busy map[*pool]bool // a preparation in flight
}

type preparedInst struct {
	id      string // instance id
	name    string // container name
	version uint64 // function version it was prepared for
}

// prepareTimeout bounds one preparation.
const prepareTimeout = time.Minute

// instanceIDLocked returns the id of p's next instance: the prepared
// one's when it is of p's version, a new one otherwise. Called with p.mu
// held.
func (w *Worker) instanceIDLocked(p *pool) string {
	w.prep.mu.Lock()
	defer w.prep.mu.Unlock()
	e, ok := w.prep.m[p]
	if !ok {
		return newID()
	}
	delete(w.prep.m, p)
	if e.version == p.fn.Version {
		return e.id
	}
	// Prepared for a version since replaced.
	w.tasks.Go(func(context.Context) { w.unprepare(e.name) })
	return newID()
}

// prepareNext prepares the container of p's next instance, unless the
// runtime cannot, fn has secrets, or one is prepared or being prepared.
func (w *Worker) prepareNext(p *pool, fn *gust.Function, cfg gust.FunctionConfig) {
	pr, ok := w.rt.(gust.Preparer)
	if !ok || len(fn.Spec.Secrets) > 0 {
		return
	}
	p.mu.Lock()
	w.prep.mu.Lock()
	_, has := w.prep.m[p]
	skip := has || w.prep.busy[p] || p.closed || p.fn.Version != fn.Version
	if !skip {
		if w.prep.busy == nil {
			w.prep.busy, w.prep.m = map[*pool]bool{}, map[*pool]preparedInst{}
		}
		w.prep.busy[p] = true
	}
	w.prep.mu.Unlock()
	p.mu.Unlock()
	if skip {
		return
	}
	id := newID()
	spec := w.containerSpec(fn, cfg, &instance{id: id})
	ctx, cancel := context.WithTimeout(w.ctx, prepareTimeout)
	err := pr.Prepare(ctx, spec)
	cancel()
	p.mu.Lock()
	w.prep.mu.Lock()
	delete(w.prep.busy, p)
	keep := err == nil && !p.closed && p.fn.Version == fn.Version
	if keep {
		w.prep.m[p] = preparedInst{id: id, name: spec.Name, version: fn.Version}
	}
	w.prep.mu.Unlock()
	p.mu.Unlock()
	switch {
	case err != nil && w.ctx.Err() == nil:
		p.logger.Info("next instance not prepared", zap.Error(err))
	case err == nil && !keep:
		w.unprepare(spec.Name)
	}
}

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

// dropPrepared removes the container prepared for p (closePool).
func (w *Worker) dropPrepared(p *pool) {
	w.prep.mu.Lock()
	e, ok := w.prep.m[p]
	delete(w.prep.m, p)
	w.prep.mu.Unlock()
	if ok {
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
