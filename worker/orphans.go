package worker

import (
	"context"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// Orphans: the containers of a worker that never comes back stay on its
// host until someone removes them. A worker that comes back with its id
// removes them itself as it starts (removeLeftovers). Otherwise a live
// worker on the same container engine removes them, once that worker is
// gone: deleted from the cluster's workers (by the scheduler, which
// judges it silent) or unheard, for Config.OrphanGrace while this
// worker's own link to NATS was up (gust.Liveness). Only the containers
// of workers it has known in its cluster's state are its business: an
// engine may run the containers of several clusters.

// DefaultOrphanGrace is Config.OrphanGrace when it is not set.
const DefaultOrphanGrace = time.Minute

// others follows the other workers of the cluster.
type others struct {
	live *gust.Liveness
	mu   sync.Mutex
	// known are the workers seen in the cluster's state, by id.
	known map[string]bool
}

func newOthers(reqs gust.Requests) *others {
	link, _ := reqs.(gust.Link)
	return &others{live: gust.NewLiveness(link), known: map[string]bool{}}
}

// onWorker follows the workers' table. A deletion counts as the last
// time the worker was heard of: its silence (and grace) starts there.
func (w *Worker) onWorker(c gust.Change[gust.WorkerInfo]) {
	if c.Key == w.cfg.ID {
		return
	}
	at := c.Received
	if c.Deleted || at.IsZero() {
		at = time.Now()
	}
	w.others.mu.Lock()
	w.others.known[c.Key] = true
	w.others.mu.Unlock()
	w.others.live.Heard(c.Key, at)
}

// orphanGrace is the silence after which a known worker is gone.
func (w *Worker) orphanGrace() time.Duration {
	if w.cfg.OrphanGrace > 0 {
		return w.cfg.OrphanGrace
	}
	return DefaultOrphanGrace
}

// removeOrphans removes the containers of known workers that are gone.
// It lists the engine's containers only when one is: a sweep with every
// known worker alive costs no Engine request, however many containers
// the engine holds (a list decodes every one of them).
func (w *Worker) removeOrphans() {
	grace := w.orphanGrace()
	w.others.mu.Lock()
	known := make([]string, 0, len(w.others.known))
	for owner := range w.others.known {
		known = append(known, owner)
	}
	w.others.mu.Unlock()
	var gone map[string]bool
	for _, owner := range known {
		if owner != w.cfg.ID && w.others.live.Silent(owner, grace) {
			if gone == nil {
				gone = map[string]bool{}
			}
			gone[owner] = true
		}
	}
	if len(gone) == 0 {
		return
	}
	cs, err := w.rt.List(w.ctx, nil)
	if err != nil {
		if w.ctx.Err() == nil {
			w.logger.Warn("list containers for orphans", zap.Error(err))
		}
		return
	}
	for _, c := range cs {
		owner := c.Labels[gust.LabelWorker]
		if !gone[owner] {
			continue
		}
		w.logger.Info("removing a container of a worker gone", zap.String("gone_worker_id", owner), zap.String("container_id", shortID(c.ID)), zap.String("function", c.Labels[gust.LabelNamespace]+"."+c.Labels[gust.LabelFunction]))
		ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
		if err := w.rt.Remove(ctx, c.ID); err != nil && w.ctx.Err() == nil {
			w.logger.Warn("remove a container of a worker gone", zap.String("container_id", shortID(c.ID)), zap.Error(err))
		}
		cancel()
	}
}
