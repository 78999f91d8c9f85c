package worker

import (
	"context"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// An operator's drain (gust worker drain ID) moves a worker's functions
// elsewhere without failing a call. The worker advertises draining, so
// the scheduler places nothing new on it and places its share of each
// function's warm minimum on other workers; it keeps serving the calls
// it gets on the instances it has meanwhile. A function's pool here stops
// once its placement no longer lists this worker and another worker of
// it has a ready instance (or the function keeps none warm); calls in
// flight on it finish first. A call that still comes here afterwards is
// turned away unmetered, and its gateway sends it to another worker
// (gust.HeaderHandoff). The worker then holds nothing and stays draining
// until it is stopped.

// serveDrain answers the drain requests of the gateways' admin API
// (gust.SubjectDrainPrefix + this worker's id) until the worker closes.
func (w *Worker) serveDrain() error {
	_, err := w.reqs.Handle(w.ctx, gust.SubjectDrainPrefix+w.cfg.ID, "", func(ctx context.Context, _ []byte) any {
		n, err := w.Evacuate(ctx)
		return gust.DrainReply{Reply: gust.ReplyOf(err), Instances: n}
	})
	return err
}

// Evacuate starts the operator's drain (above) and returns at once with
// the number of instances the worker holds; calling it again does no
// more. A worker that is closing (Drain) answers gust.ErrDraining.
func (w *Worker) Evacuate(ctx context.Context) (instances int, err error) {
	w.mu.Lock()
	closing, already := w.closing, w.draining
	w.draining = true
	pools := make([]*pool, 0, len(w.pools))
	for _, p := range w.pools {
		pools = append(pools, p)
	}
	w.mu.Unlock()
	if closing {
		return 0, gust.ErrDraining
	}
	for _, p := range pools {
		p.mu.Lock()
		instances += len(p.instances)
		p.mu.Unlock()
	}
	if already {
		return instances, nil
	}
	w.logger.Info("draining: no new function here; each pool stops once replaced elsewhere", zap.Int("instances", instances))
	// Advertised now, not at the next beat: the scheduler moves the warm
	// minimums as soon as it sees it.
	if err := w.heartbeat(ctx); err != nil {
		w.logger.Warn("heartbeat", zap.Error(err))
	}
	w.tasks.Go(func(life context.Context) {
		t := time.NewTicker(w.cfg.Heartbeat)
		defer t.Stop()
		for w.evacuate(life) > 0 {
			select {
			case <-life.Done():
				return
			case <-t.C:
			}
		}
		w.logger.Info("drained: every pool replaced elsewhere and stopped")
	})
	return instances, nil
}

// evacuate stops the pools that are replaced elsewhere and returns how
// many are left.
func (w *Worker) evacuate(ctx context.Context) int {
	type held struct {
		p      *pool
		pl     gust.Placement
		placed bool
		fn     *gust.Function
	}
	w.mu.Lock()
	pools := make([]held, 0, len(w.pools))
	for key, p := range w.pools {
		pl, placed := w.placements[key]
		pools = append(pools, held{p, pl, placed, w.functions[key]})
	}
	w.mu.Unlock()
	left := 0
	for _, h := range pools {
		if !w.replaced(ctx, h.p.key, h.pl, h.placed, h.fn) {
			left++
			continue
		}
		w.mu.Lock()
		mine := w.pools[h.p.key] == h.p
		if mine {
			delete(w.pools, h.p.key)
		}
		w.mu.Unlock()
		if mine {
			h.p.logger.Info("drain: replaced elsewhere, stopping the pool")
			w.closePool(h.p)
		}
	}
	if len(pools) > 0 {
		w.kickStatus()
	}
	return left
}

// replaced reports whether the function key's calls can do without this
// worker: its placement lists other workers only, and one of them has a
// ready instance, or the function keeps none warm or is placed nowhere
// (its calls start one where they land, as anywhere). A function no
// longer placed is replaced too: it was deleted.
func (w *Worker) replaced(ctx context.Context, key string, pl gust.Placement, placed bool, fn *gust.Function) bool {
	if !placed {
		return true
	}
	if slicesIndex(pl.Workers, w.cfg.ID) >= 0 {
		return false
	}
	if fn == nil || fn.Config().Min == 0 || len(pl.Workers) == 0 {
		return true
	}
	for _, id := range pl.Workers {
		st, _, err := w.state.Status.Get(ctx, key+"."+id)
		if err == nil && st.Available > 0 {
			return true
		}
	}
	return false
}
