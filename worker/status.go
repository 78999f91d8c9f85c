package worker

import (
	"context"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// kickStatus asks for the pool status to be published now.
func (w *Worker) kickStatus() {
	select {
	case w.statusKick <- struct{}{}:
	default:
	}
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
