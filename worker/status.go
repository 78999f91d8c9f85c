package worker

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
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
	pools := slices.Collect(maps.Values(w.pools))
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

// poolGauges is what the pool gauges (gust_instances and the others of
// metrics.Pools) read at a scrape: every pool's numbers, as its status.
func (w *Worker) poolGauges() []metrics.PoolGauges {
	w.mu.Lock()
	pools := slices.Collect(maps.Values(w.pools))
	w.mu.Unlock()
	out := make([]metrics.PoolGauges, 0, len(pools))
	for _, p := range pools {
		st := p.status()
		out = append(out, metrics.PoolGauges{
			Function: p.key, Starting: st.Replicas - st.Available, Ready: st.Available - st.Paused, Paused: st.Paused,
			InFlight: st.InFlight, Desired: st.Desired,
		})
	}
	return out
}

// publishStatus writes the status of every pool whose numbers changed.
func (w *Worker) publishStatus() {
	w.mu.Lock()
	pools := slices.Collect(maps.Values(w.pools))
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
