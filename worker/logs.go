package worker

import (
	"context"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// Log collection: every instance's stdout and stderr, line by line, go
// to the worker's log sink (the log stream, which keeps them after the
// instance is gone). One goroutine per instance follows its container's
// output through the runtime (gust.LogFollower) from the moment the
// container starts until its stream ends, which is when the container
// stops: a stop waits (briefly) for its collector, so that the last lines
// are read before the container is removed. Nothing of this touches the
// call path but the call spans below: a lock, a slot written, a lock.

// logsStopWait bounds how long a stop waits for the collector of the
// container stopped to read the last lines.
const logsStopWait = 2 * time.Second

// logsGrace is how long collectors outlive the worker's context, for the
// tails of the containers Drain stops.
const logsGrace = 5 * time.Second

// logCollector is the worker's log collection.
type logCollector struct {
	sink     gust.LogSink
	follower gust.LogFollower

	mu      sync.Mutex
	running map[string]chan struct{} // by container id; closed when its collector ends
}

// WithLogs makes the worker collect the output of every instance it
// starts into sink, when its runtime can follow containers' output
// (gust.LogFollower). Call it before Start.
func (w *Worker) WithLogs(sink gust.LogSink) *Worker {
	f, ok := w.rt.(gust.LogFollower)
	if sink == nil || !ok {
		return w
	}
	w.logs = &logCollector{sink: sink, follower: f, running: map[string]chan struct{}{}}
	return w
}

// collectLogs starts following the output of in's container cid.
func (w *Worker) collectLogs(fn *gust.Function, in *instance, cid string, logger *zap.Logger) {
	lc := w.logs
	if lc == nil {
		return
	}
	done := make(chan struct{})
	lc.mu.Lock()
	lc.running[cid] = done
	lc.mu.Unlock()
	end := func() {
		lc.mu.Lock()
		delete(lc.running, cid)
		lc.mu.Unlock()
		close(done)
	}
	// The stream ends with the container; the worker's end stops it only
	// after a grace, which leaves Drain's stops the time to be read.
	ctx, cancel := context.WithCancel(context.WithoutCancel(w.ctx))
	stopGrace := context.AfterFunc(w.ctx, func() { time.AfterFunc(logsGrace, cancel) })
	ns, name, id := fn.Spec.Namespace, fn.Spec.Service, in.id
	ok := w.tasks.Go(func(context.Context) {
		defer end()
		defer cancel()
		defer stopGrace()
		err := lc.follower.FollowLogs(ctx, cid, time.Time{}, func(stream string, ts time.Time, text string) {
			lc.sink.AddLog(&gust.LogLine{
				Name: name, Namespace: ns, Instance: id, Timestamp: ts.UTC(),
				Text: text, Stream: stream, CallID: in.calls.at(ts),
			})
		})
		if err != nil {
			logger.Debug("instance logs ended", zap.Error(err))
		}
	})
	if !ok {
		stopGrace()
		cancel()
		end()
	}
}

// awaitLogs waits, at most logsStopWait, until the collector of the
// stopped container cid has read its last lines.
func (w *Worker) awaitLogs(cid string) {
	lc := w.logs
	if lc == nil {
		return
	}
	lc.mu.Lock()
	done := lc.running[cid]
	lc.mu.Unlock()
	if done == nil {
		return
	}
	t := time.NewTimer(logsStopWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// callSpans remembers the last calls of an instance, when each began and
// ended, so that a line the instance wrote can be tied to the one call
// that ran when it was written. A line written while several calls ran,
// or none, is tied to none.
type callSpans struct {
	mu    sync.Mutex
	spans [callSpansKept]callSpan
	next  uint64 // serial of the next span; spans[serial % callSpansKept]
	// forgotten is the latest end of the spans written over (far future
	// for one still running then): a line before it may belong to a call
	// no longer known, so it is tied to none.
	forgotten time.Time
}

const callSpansKept = 32

type callSpan struct {
	id         string
	start, end time.Time // end zero: in flight
}

// farFuture stands for the end of a call still running.
var farFuture = time.Unix(1<<62, 0)

// begin records a call starting now and returns its serial for end.
func (c *callSpans) begin(callID string) uint64 {
	now := time.Now()
	c.mu.Lock()
	n := c.next
	c.next++
	s := &c.spans[n%callSpansKept]
	if n >= callSpansKept {
		e := s.end
		if e.IsZero() {
			e = farFuture
		}
		if e.After(c.forgotten) {
			c.forgotten = e
		}
	}
	*s = callSpan{id: callID, start: now}
	c.mu.Unlock()
	return n
}

// end records that call n ended now, unless it ended already.
func (c *callSpans) end(n uint64) {
	now := time.Now()
	c.mu.Lock()
	if c.next-n <= callSpansKept && c.spans[n%callSpansKept].end.IsZero() {
		c.spans[n%callSpansKept].end = now
	}
	c.mu.Unlock()
}

// callGrace is how long after a call's end a line may still be its: the
// Engine stamps a line when it reads it from the container's output,
// which can come after the worker has the answer of a short call. 20 ms
// was too little on a slower Engine (fuse-overlayfs under Firecracker,
// where a first call's line was stamped later than that); a longer grace
// only leaves more lines untied when calls follow each other closely.
const callGrace = 100 * time.Millisecond

// at returns the id of the one call that ran at ts, or "". A line in no
// call's span goes to the one call that ended at most callGrace before
// it, if only one did.
func (c *callSpans) at(ts time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.forgotten.IsZero() && !ts.After(c.forgotten.Add(callGrace)) {
		return ""
	}
	in, inN, after, afterN := "", 0, "", 0
	kept := min(c.next, callSpansKept)
	for i := uint64(0); i < kept; i++ {
		s := &c.spans[i]
		switch {
		case ts.Before(s.start):
		case s.end.IsZero() || !ts.After(s.end):
			in = s.id
			inN++
		case !ts.After(s.end.Add(callGrace)):
			after = s.id
			afterN++
		}
	}
	switch {
	case inN == 1:
		return in
	case inN == 0 && afterN == 1:
		return after
	}
	return ""
}
