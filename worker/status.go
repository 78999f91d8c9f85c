package worker

import (
	"context"
	"slices"
	"strings"
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
	_, err := w.state.Workers.Put(ctx, w.cfg.ID, w.info())
	return err
}

// info is what the heartbeat advertises: capacity, state, and what the
// worker holds (its instances, by function, and the images it knows are
// present), so that the scheduler places by what is free.
func (w *Worker) info() gust.WorkerInfo {
	w.mu.Lock()
	info := gust.WorkerInfo{
		ID: w.cfg.ID, Addr: w.cfg.Addr, Started: w.started, Seen: time.Now(), Draining: w.draining,
		MemoryBytes: w.cfg.MemoryBytes, NanoCPUs: w.cfg.NanoCPUs,
	}
	for ref, ok := range w.images {
		if ok {
			info.Images = append(info.Images, ref)
		}
	}
	pools := make([]*pool, 0, len(w.pools))
	for _, p := range w.pools {
		pools = append(pools, p)
	}
	w.mu.Unlock()
	for _, p := range pools {
		// Every instance holds its memory until it is gone, retiring and
		// stopping ones too.
		p.mu.Lock()
		held := gust.HeldPool{Function: p.key, Instances: len(p.instances), MemoryBytes: p.cfg.MemoryBytes}
		p.mu.Unlock()
		if held.Instances > 0 {
			info.Pools = append(info.Pools, held)
		}
	}
	slices.Sort(info.Images)
	slices.SortFunc(info.Pools, func(a, b gust.HeldPool) int { return strings.Compare(a.Function, b.Function) })
	return info
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
		if ok && prev.Replicas == st.Replicas && prev.Available == st.Available && prev.Paused == st.Paused && prev.Invocations == st.Invocations && prev.InFlight == st.InFlight && prev.Desired == st.Desired && prev.Want == st.Want && time.Since(prev.Updated) < 30*time.Second {
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
