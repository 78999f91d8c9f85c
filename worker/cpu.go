package worker

import (
	"context"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/autoscale"
	"go.uber.org/zap"
)

// CPU sampling for the pools scaled by CPU (com.openfaas.scale.type=cpu).
// OpenFaaS Pro's cpu type compares the CPU use per replica with
// com.openfaas.scale.target; the target is in millicores (1000 = one core,
// as Kubernetes' CPU units that its autoscaler queries), so a target of 500
// is half a core per instance. The decider (internal/autoscale) takes the
// pool's total millicores in Sample.CPU and divides by the target.
//
// The runtime's cumulative CPU time (gust.CPUSampler) is read every
// cpuSampleInterval, not every reap tick: a read is one Engine request per
// container, and a delta over 2 s is steadier than one over 250 ms. It is
// read in a goroutine of its own, without pool.mu (LOCKS.md), at most one
// round per pool at a time.

// cpuSampleInterval is how often a CPU-scaled pool reads its instances'
// CPU time.
const cpuSampleInterval = 2 * time.Second

// cpuStale is how old the last figure may be and still be fed to the
// decider; past it (reads failing or slow) the decider gets none.
const cpuStale = 3 * cpuSampleInterval

// millicores is the CPU use between two readings of a cumulative CPU time
// taken dt apart: 1000 per core kept busy. ok is false when there is no
// rate to tell (no time passed, or the counter went back: a new container).
func millicores(prev, cur, dt time.Duration) (m float64, ok bool) {
	if dt <= 0 || cur < prev {
		return 0, false
	}
	return float64(cur-prev) / float64(dt) * 1000, true
}

// cpuRead is one instance's reading in a sampling round.
type cpuRead struct {
	in    *instance
	cid   string
	total time.Duration
	at    time.Time
	err   error
}

// cpuDueLocked reports the ready instances to read now, if the pool is
// scaled by CPU, the runtime can tell, no round is running and the last
// one began cpuSampleInterval ago or more. It marks the round begun.
func (p *pool) cpuDueLocked(now time.Time, canSample bool) []cpuRead {
	if !canSample || p.cfg.ScaleType != autoscale.TypeCPU || p.closed || p.cpuSampling || now.Sub(p.cpuBegun) < cpuSampleInterval {
		return nil
	}
	var reads []cpuRead
	for _, in := range p.instances {
		if in.state == stateReady && in.cid != "" {
			reads = append(reads, cpuRead{in: in, cid: in.cid})
		}
	}
	if len(reads) == 0 {
		return nil
	}
	p.cpuSampling, p.cpuBegun = true, now
	return reads
}

// sampleCPU reads the instances' CPU time (no lock held), then records the
// pool's millicores: the sum over the instances read twice in a row,
// scaled to every instance read this round (one that just started has no
// rate yet, and would otherwise count as idle while it takes its share).
func (w *Worker) sampleCPU(ctx context.Context, p *pool, cs gust.CPUSampler, reads []cpuRead) {
	for i := range reads {
		r := &reads[i]
		r.total, r.err = cs.CPUUsage(ctx, r.cid)
		r.at = time.Now()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cpuSampling = false
	sum, rated, read := 0.0, 0, 0
	for _, r := range reads {
		if r.err != nil {
			if ctx.Err() == nil {
				p.logger.Debug("reading CPU use", zap.String("container_id", shortID(r.cid)), zap.Error(r.err))
			}
			continue
		}
		if r.in.state != stateReady {
			continue // stopping: gone from the pool's load
		}
		read++
		if !r.in.cpuAt.IsZero() {
			if m, ok := millicores(r.in.cpuTotal, r.total, r.at.Sub(r.in.cpuAt)); ok {
				sum += m
				rated++
			}
		}
		r.in.cpuTotal, r.in.cpuAt = r.total, r.at
	}
	if rated > 0 {
		p.cpu, p.cpuAt = poolMillicores(sum, rated, read), time.Now()
	}
}

// poolMillicores is the pool's CPU use from the sum over the rated
// instances, scaled to the instances read.
func poolMillicores(sum float64, rated, read int) float64 {
	if rated <= 0 {
		return 0
	}
	return sum / float64(rated) * float64(max(read, rated))
}

// cpuLocked is the figure to feed the decider: the last one, while fresh;
// -1 (none) otherwise or for other scale types.
func (p *pool) cpuLocked(now time.Time) float64 {
	if p.cfg.ScaleType != autoscale.TypeCPU || p.cpuAt.IsZero() || now.Sub(p.cpuAt) > cpuStale {
		return -1
	}
	return p.cpu
}

// startCPUSampling begins a sampling round for p if one is due.
func (w *Worker) startCPUSampling(p *pool, now time.Time) {
	cs, ok := w.rt.(gust.CPUSampler)
	p.mu.Lock()
	reads := p.cpuDueLocked(now, ok)
	p.mu.Unlock()
	if len(reads) == 0 {
		return
	}
	if !w.tasks.Go(func(ctx context.Context) { w.sampleCPU(ctx, p, cs, reads) }) {
		p.mu.Lock()
		p.cpuSampling = false
		p.mu.Unlock()
	}
}
