package worker

import (
	"context"
	"slices"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// The paused tier (issue 11): an instance above the warm minimum that has
// been idle for the function's pause-after (gust.pause-after) is frozen
// before the idle timeout stops it. Paused, it holds its memory and its
// address but uses no CPU, and a call that needs it thaws it (about a
// millisecond through the cgroup freezer, 10-15 ms through the Engine's
// unpause: internal/docker/freezer.go) instead of waiting for a cold
// start. The instance record counts its paused time apart
// (InstanceRecord.PausedMs). A runtime without gust.Pauser never pauses.

// pausesLocked picks the instances to pause now, marks them pausing and
// returns them: ready ones idle for the pool's pause-after, least recently
// used first, for as long as more than floor (the warm minimum, or what a
// fresh scale order holds) stay unpaused. A pause-after of 0, or at or
// past the idle timeout, never pauses.
func (p *pool) pausesLocked(now time.Time, floor int) []*instance {
	after := p.cfg.PauseAfter
	if after <= 0 || after >= p.cfg.IdleTimeout || p.closed {
		return nil
	}
	if _, ok := p.w.rt.(gust.Pauser); !ok {
		return nil
	}
	unpaused := 0
	var idle []*instance
	for _, in := range p.instances {
		if in.retiring {
			continue
		}
		switch in.state {
		case stateStarting, stateReady, stateResuming:
			unpaused++
		case statePausing:
			if in.wake {
				unpaused++
			}
		}
		if in.state == stateReady && in.inflight == 0 && !in.suspect && now.Sub(in.lastUsed) >= after {
			idle = append(idle, in)
		}
	}
	slices.SortFunc(idle, func(a, b *instance) int { return a.lastUsed.Compare(b.lastUsed) })
	var out []*instance
	for _, in := range idle {
		if unpaused <= floor {
			break
		}
		in.state = statePausing
		unpaused--
		out = append(out, in)
	}
	return out
}

// pausedLocked returns an instance to wake for a waiting call: paused, or
// being paused and not yet asked to wake; nil if there is none.
func (p *pool) pausedLocked() *instance {
	for _, in := range p.instances {
		if !in.retiring && (in.state == statePaused || in.state == statePausing && !in.wake) {
			return in
		}
	}
	return nil
}

// resumeLocked wakes in for the calls waiting: a pause still in progress
// is asked to resume as it ends; a paused instance is thawed on a
// goroutine of the worker's. It reports false when the worker no longer
// starts goroutines (it drains).
func (p *pool) resumeLocked(in *instance) bool {
	if in.state == statePausing {
		in.wake = true
		return true
	}
	in.state = stateResuming
	if !p.w.tasks.Go(func(context.Context) { p.w.resumeInstance(p, in) }) {
		in.state = statePaused
		return false
	}
	return true
}

// pauseInstance freezes in (marked pausing by pausesLocked). A pause that
// fails leaves it ready, idle from now. A call that needed it meanwhile
// (wake) thaws it again at once.
func (w *Worker) pauseInstance(p *pool, in *instance) {
	err := w.rt.(gust.Pauser).Pause(w.ctx, in.cid)
	now := time.Now()
	p.mu.Lock()
	if in.state != statePausing {
		p.mu.Unlock() // it exited meanwhile (watchExit)
		return
	}
	wake := in.wake
	in.wake = false
	if err != nil {
		in.state, in.lastUsed = stateReady, now
		p.broadcastLocked()
		p.mu.Unlock()
		if w.ctx.Err() == nil {
			p.logger.Warn("pause instance", zap.String("instance_id", in.id), zap.Error(err))
		}
		return
	}
	in.state, in.pausedAt = statePaused, now
	if wake {
		in.state = stateResuming
	}
	p.broadcastLocked()
	closed := p.closed
	p.mu.Unlock()
	w.metrics.InstancePause(p.key, "paused")
	p.logger.Debug("paused instance", zap.String("instance_id", in.id))
	switch {
	case wake:
		w.resumeInstance(p, in)
	case closed:
		w.reapPool(p) // the pool closed while it paused: stop it too
	}
}

// resumeInstance thaws in (marked resuming) and gives it to the calls
// waiting. One that does not thaw is replaced: removed, and the waiting
// calls start another.
func (w *Worker) resumeInstance(p *pool, in *instance) {
	t0 := time.Now()
	err := w.rt.(gust.Pauser).Unpause(w.ctx, in.cid)
	now := time.Now()
	p.mu.Lock()
	if in.state != stateResuming {
		p.mu.Unlock()
		return
	}
	if !in.pausedAt.IsZero() {
		in.pausedFor += now.Sub(in.pausedAt)
		in.pausedAt = time.Time{}
	}
	logger := p.logger.With(zap.String("instance_id", in.id), zap.String("container_id", shortID(in.cid)))
	if err != nil {
		p.removeLocked(in)
		in.state = stateStopping
		p.broadcastLocked()
		p.mu.Unlock()
		logger.Warn("replacing an instance that did not resume", zap.Error(err))
		w.instanceStopped(p, in)
		w.kickStatus()
		w.removeContainer(in.cid, logger)
		return
	}
	// Used now: the next reap must not pause it again before the calls
	// that woke it take it.
	in.state, in.lastUsed = stateReady, now
	p.broadcastLocked()
	closed := p.closed
	p.mu.Unlock()
	w.metrics.InstancePause(p.key, "resumed")
	logger.Debug("resumed instance", zap.Duration("unpause", now.Sub(t0)))
	if closed {
		w.reapPool(p)
	}
}
