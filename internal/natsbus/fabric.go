package natsbus

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// In a NATS cluster, a stream whose leader's server dies takes no writes
// and serves no new consumers until the other servers elect a new leader:
// nats-server's Raft waits 4 to 9 s of silence before it campaigns, so a
// stream may stall for ten seconds while every server this process talks
// to is up. Heartbeats written into such a stream are not lost to a dead
// worker but to the fabric (which is why workers also beat over core NATS,
// beats.go). The bus therefore watches the streams of the
// tables it watches: while one has no leader, LinkState reports the link
// down (Liveness then judges nobody), and when the stream is back it
// counts as the link coming back (Liveness counts silence from then; the
// watches start over, as their consumers may have died with the leader).
const (
	// fabricProbeEvery is how often the bus asks each watched stream's
	// leader for the stream's info, and fabricProbeTimeout how long an
	// answer may take before the stream counts as stalled.
	fabricProbeEvery   = time.Second
	fabricProbeTimeout = time.Second
	// fabricMaxStall bounds how long a stall pauses the judging of
	// heartbeats: past it, something other than an election is wrong, and
	// silence counts again.
	fabricMaxStall = 30 * time.Second
	// fabricStandaloneLook is how often the bus looks again whether its
	// server is one of a cluster when it is not: its probes wait for a
	// reconnect besides.
	fabricStandaloneLook = time.Minute
)

// fabric is the state of the streams of a bus's watched tables.
type fabric struct {
	once sync.Once

	mu      sync.Mutex
	watched map[string]int // stream → watches on it
	// stalledSince is when the probes of a watched stream began to fail,
	// zero while every watched stream answers.
	stalledSince time.Time
	// recoveries counts the stalls that ended: LinkState adds them to the
	// connection's reconnects.
	recoveries uint64
	// restarting counts the watches starting over after the link came
	// back (since restartingSince), which may take longer than the
	// streams' election (a new consumer needs the cluster's meta leader,
	// elected apart): until they have, nothing they watch is heard.
	// restarted counts the restarts done, which count as the link coming
	// back again.
	restarting      int
	restartingSince time.Time
	restarted       uint64
	// changed is closed, and forgotten, when the link changes as
	// fabricState sees it: a disconnect, a reconnect, a stall beginning
	// or ending (fabricChanged).
	changed chan struct{}
}

// fabricChanged returns a channel closed at the next change of the link
// as fabricState sees it, but for the end of fabricMaxStall, which only
// time tells: the watches wait on it rather than look every tick.
func (b *Bus) fabricChanged() <-chan struct{} {
	f := &b.fabric
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.changed == nil {
		f.changed = make(chan struct{})
	}
	return f.changed
}

// fabricChange wakes what waits on fabricChanged.
func (b *Bus) fabricChange() {
	b.fabric.mu.Lock()
	b.fabric.changedLocked()
	b.fabric.mu.Unlock()
}

func (f *fabric) changedLocked() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// watchStream registers a watch on stream and returns its release. The
// first registration starts the probes.
func (b *Bus) watchStream(stream string) (release func()) {
	f := &b.fabric
	f.mu.Lock()
	if f.watched == nil {
		f.watched = map[string]int{}
	}
	f.watched[stream]++
	f.mu.Unlock()
	f.once.Do(func() { b.tasks.Go(b.probeFabric) })
	return func() {
		f.mu.Lock()
		if f.watched[stream]--; f.watched[stream] <= 0 {
			delete(f.watched, stream)
		}
		f.mu.Unlock()
	}
}

// probeFabric asks the watched streams' leaders for their info until the
// bus closes, and records stalls and recoveries.
func (b *Bus) probeFabric(ctx context.Context) {
	tick := time.NewTimer(fabricProbeEvery)
	defer tick.Stop()
	for {
		changed := b.fabricChanged()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changed:
		}
		tick.Reset(fabricProbeEvery)
		if !b.NC.IsConnected() {
			continue // the connection's own state says it all
		}
		b.fabric.mu.Lock()
		if b.fabric.stalledSince.IsZero() && b.NC.ConnectedClusterName() == "" {
			// A server outside a cluster leads every stream itself:
			// there is no leader to elect, and nothing to probe. A
			// reconnect (to another server) wakes the loop.
			b.fabric.mu.Unlock()
			tick.Reset(fabricStandaloneLook)
			continue
		}
		streams := make([]string, 0, len(b.fabric.watched))
		for s := range b.fabric.watched {
			streams = append(streams, s)
		}
		b.fabric.mu.Unlock()
		var stalled string
		for _, s := range streams {
			if b.streamStalled(ctx, s) {
				stalled = s
				break
			}
		}
		b.fabric.mu.Lock()
		switch {
		case stalled != "" && b.fabric.stalledSince.IsZero():
			b.fabric.stalledSince = time.Now()
			b.fabric.changedLocked()
			b.logger.Warn("a watched stream has no leader: heartbeats are not judged until it is back", zap.String("stream", stalled))
		case stalled == "" && !b.fabric.stalledSince.IsZero():
			b.logger.Info("watched streams answer again", zap.Duration("stalled", time.Since(b.fabric.stalledSince)))
			b.fabric.stalledSince = time.Time{}
			b.fabric.recoveries++
			b.fabric.changedLocked()
		}
		b.fabric.mu.Unlock()
	}
}

// streamStalled reports whether stream's leader did not answer: a
// request that timed out or that the cluster refused as unavailable. A
// stream that is gone, or any other answer, is not a stall.
func (b *Bus) streamStalled(ctx context.Context, stream string) bool {
	pctx, cancel := context.WithTimeout(ctx, fabricProbeTimeout)
	defer cancel()
	_, err := b.JS.Stream(pctx, stream)
	if err == nil || ctx.Err() != nil || !b.NC.IsConnected() {
		return false
	}
	return leaderMissing(err)
}

// fabricState is the link as the watches see it: connected, and no
// watched stream stalled (for fabricMaxStall at most); recoveries from
// stalls count as reconnects. A watch starts over when the count changes.
func (b *Bus) fabricState() (bool, uint64) {
	up, n := b.NC.IsConnected(), b.NC.Stats().Reconnects
	b.fabric.mu.Lock()
	defer b.fabric.mu.Unlock()
	if s := b.fabric.stalledSince; !s.IsZero() && time.Since(s) < fabricMaxStall {
		up = false
	}
	return up, n + b.fabric.recoveries
}

// linkUp is the link as LinkState reports it: fabricState, and no watch
// still starting over (for fabricMaxStall at most); a watch that started
// over counts as the link coming back.
func (b *Bus) linkUp() (bool, uint64) {
	up, n := b.fabricState()
	b.fabric.mu.Lock()
	defer b.fabric.mu.Unlock()
	if b.fabric.restarting > 0 && time.Since(b.fabric.restartingSince) < fabricMaxStall {
		up = false
	}
	return up, n + b.fabric.restarted
}

// watchRestarting records that a watch starts over (+1) or has (-1, done)
// or gave up (-1, not done).
func (b *Bus) watchRestarting(delta int, done bool) {
	b.fabric.mu.Lock()
	defer b.fabric.mu.Unlock()
	if b.fabric.restarting == 0 && delta > 0 {
		b.fabric.restartingSince = time.Now()
	}
	b.fabric.restarting += delta
	if done {
		b.fabric.restarted++
	}
}

// A write that is safe to send again (a put, a publish deduplicated by
// its message id) is sent again while a stream elects a new leader: the
// one it went to may have died before answering, and a request that got
// no answer is retried with a deadline of its own, for electionWait at
// most. Creates and compare-and-set updates are not: sent again after
// they took effect, they would fail as conflicts.
const (
	electionWait    = 15 * time.Second
	electionAttempt = 3 * time.Second
	electionRetry   = 250 * time.Millisecond
)

// acrossElection runs op until it succeeds, fails otherwise than by a
// stream's missing leader, ctx ends or electionWait has passed.
func acrossElection(ctx context.Context, op func(context.Context) error) error {
	deadline := time.Now().Add(electionWait)
	for {
		actx, cancel := context.WithTimeout(ctx, electionAttempt)
		err := op(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !leaderMissing(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(electionRetry):
		}
	}
}

// leaderMissing reports whether err is what a request to a stream gets
// while the stream has no leader: no answer, no responder, or the
// cluster's "unavailable".
func leaderMissing(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}
