package scheduler

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// election holds, or waits for, the leader's lease: one key
// (gust.LeaderKey) in a table whose keys expire a TTL after their last
// write (a JetStream KV bucket with a TTL). The leader renews it by
// compare-and-set at its revision, four times per TTL; a standby creates
// it once it is gone (it expired: the leader died) or takes it at its
// revision once it was given up (Holder "": the leader stopped cleanly).
// The store's compare-and-set alone decides who leads.
type election struct {
	table  gust.Table[gust.Lease]
	id     string
	ttl    time.Duration
	logger *zap.Logger
	// onChange is called after every attempt with whether this
	// scheduler leads (see Scheduler.onLeading).
	onChange func(leading bool)

	mu  sync.Mutex
	rev uint64 // the lease's revision while leading
	// until is when this scheduler stops counting itself leader unless
	// it renews: when it sent its last write that succeeded, plus the
	// TTL, less one renewal interval of margin. The store's TTL runs
	// from when it took the write, which is after it was sent, so the
	// lease is still ours until then.
	until time.Time
	since time.Time
	// ch is closed and replaced whenever leading changes.
	ch     chan struct{}
	holder string // the other leader last seen, for the log
}

func newElection(table gust.Table[gust.Lease], id string, ttl time.Duration, logger *zap.Logger) *election {
	return &election{table: table, id: id, ttl: ttl, logger: logger, ch: make(chan struct{}), onChange: func(bool) {}}
}

// interval is how often the lease is renewed, or looked at by a standby.
func (e *election) interval() time.Duration { return e.ttl / 4 }

// leading reports whether this scheduler holds the lease now.
func (e *election) leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return time.Now().Before(e.until)
}

// changed returns a channel closed when leading next changes.
func (e *election) changed() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ch
}

// run renews or tries for the lease every interval until ctx ends.
func (e *election) run(ctx context.Context) {
	t := time.NewTicker(e.interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.tick(ctx)
		}
	}
}

// errHeld is a lease another scheduler holds.
var errHeld = errors.New("held by another scheduler")

// tick renews the lease when leading, else tries to take it.
func (e *election) tick(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, e.interval())
	defer cancel()
	sent := time.Now()
	e.mu.Lock()
	rev, was, since := e.rev, sent.Before(e.until), e.since
	e.mu.Unlock()
	if !was {
		since = sent
	}
	lease := gust.Lease{Holder: e.id, Since: since}
	var err error
	if was {
		rev, err = e.table.Update(ctx, gust.LeaderKey, lease, rev)
	} else {
		rev, err = e.acquire(ctx, lease)
	}
	e.mu.Lock()
	switch {
	case err == nil:
		e.rev, e.until, e.since = rev, sent.Add(e.ttl-e.interval()), since
	case errors.Is(err, gust.ErrConflict):
		// Another wrote the lease since: it leads.
		e.until = time.Time{}
	}
	// Any other error (NATS unreachable) changes nothing: a leader that
	// cannot renew stops leading when until passes.
	now := time.Now().Before(e.until)
	if now != was {
		close(e.ch)
		e.ch = make(chan struct{})
	}
	e.mu.Unlock()
	switch {
	case now && !was:
		e.logger.Info("leading", zap.String("scheduler", e.id))
	case was && !now:
		e.logger.Warn("no longer leading", zap.String("scheduler", e.id), zap.Error(err))
	case err != nil && !errors.Is(err, errHeld) && ctx.Err() == nil:
		e.logger.Warn("leader lease", zap.Error(err))
	}
	e.onChange(now)
}

// acquire takes the lease if nobody holds it.
func (e *election) acquire(ctx context.Context, lease gust.Lease) (uint64, error) {
	cur, rev, err := e.table.Get(ctx, gust.LeaderKey)
	switch {
	case errors.Is(err, gust.ErrNotFound):
		return e.table.Create(ctx, gust.LeaderKey, lease)
	case err != nil:
		return 0, err
	case cur.Holder == "", cur.Holder == e.id:
		// Given up, or this scheduler's own lease, which it stopped
		// counting on when it could not renew it in time (NATS was
		// away): taken at its revision. Scheduler ids differ (see
		// Config.ID), so no other scheduler writes this holder.
		return e.table.Update(ctx, gust.LeaderKey, lease, rev)
	}
	if cur.Holder != e.holder {
		e.holder = cur.Holder
		e.logger.Info("standing by", zap.String("leader", cur.Holder))
	}
	return 0, errHeld
}

// release gives the lease up, if this scheduler holds it, so that a
// standby takes over at its next look rather than when the lease expires.
func (e *election) release() {
	e.mu.Lock()
	rev, was := e.rev, time.Now().Before(e.until)
	e.until = time.Time{}
	e.mu.Unlock()
	if !was {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.interval())
	defer cancel()
	if _, err := e.table.Update(ctx, gust.LeaderKey, gust.Lease{}, rev); err != nil {
		e.logger.Warn("give up the leader lease", zap.Error(err))
	}
}
