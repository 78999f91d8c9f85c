package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// asyncConsumer names the durable consumer of a function's async queue:
// "async_NS_NAME". Names hold lower-case letters, digits and '-', never
// '_', so no two functions share one (a durable name may not hold '.',
// '*', '>' or whitespace, so the key itself cannot be used).
func asyncConsumer(ns, name string) string { return "async_" + ns + "_" + name }

// legacyAsyncConsumer is the name earlier releases gave the consumer,
// "async-NS-NAME": openfaas.fn-resize and openfaas-fn.resize shared
// "async-openfaas-fn-resize", so each took the other's calls or lost
// them, and deleting one deleted the consumer of both.
func legacyAsyncConsumer(ns, name string) string { return "async-" + ns + "-" + name }

// consumeAsync starts the consumer of fn's async calls, at most limit at
// a time, and returns what stops it (nil if it could not start, which is
// logged).
func (d *Dispatcher) consumeAsync(fn *gust.Function, limit int, logger *zap.Logger) func() {
	key, ns, name := fn.Key(), fn.Spec.Namespace, fn.Spec.Service
	// A consumer under the legacy name, left by an earlier release, goes
	// first: the async stream is a work queue, where two consumers may not
	// filter the same subject. Its calls stay in the stream (a work queue
	// drops a message only once it is acknowledged) and the new consumer
	// gets them. A gateway of the earlier release still running in the
	// cluster finds its consumer gone and stops taking this function's
	// calls; gateways of this release take them.
	if err := d.async.Queue.DeleteConsumer(d.ctx, d.async.Stream, legacyAsyncConsumer(ns, name)); err != nil {
		logger.Warn("delete legacy async consumer", zap.Error(err))
	}
	stop, err := d.async.Queue.Consume(d.ctx, gust.ConsumerSpec{
		// Calls are queued under the function's subject (asyncSubject);
		// one release queued them under the function's subject followed
		// by the call id, which the second filter still takes.
		Stream: d.async.Stream, Durable: asyncConsumer(ns, name), Filter: gust.SubjectAsyncPrefix + key,
		Filters: []string{gust.SubjectAsyncPrefix + key + ".*"}, Max: limit, AckWait: ackWait,
	}, func(dl gust.Delivery) { d.runAsync(key, dl) })
	if err != nil {
		if d.ctx.Err() == nil {
			logger.Error("async consumer", zap.Error(err))
		}
		return nil
	}
	return stop
}

// deleteAsyncConsumer removes the async consumer of a deleted function,
// under its name and the legacy one.
func (d *Dispatcher) deleteAsyncConsumer(ns, name string) error {
	return errors.Join(
		d.async.Queue.DeleteConsumer(d.ctx, d.async.Stream, asyncConsumer(ns, name)),
		d.async.Queue.DeleteConsumer(d.ctx, d.async.Stream, legacyAsyncConsumer(ns, name)),
	)
}

// runAsync runs one delivery of an async call: the attempt, then a retry
// with backoff, a dead letter, or done; the callback follows the final
// result. The message is acknowledged only once that is decided and
// recorded.
func (d *Dispatcher) runAsync(key string, dl gust.Delivery) {
	var req gust.AsyncRequest
	if err := json.Unmarshal(dl.Data(), &req); err != nil {
		d.logger.Error("undecodable async call dropped", zap.String("function", key), zap.Error(err))
		_ = dl.Ack()
		return
	}
	d.attempt(&req, dl)
}

// attempt runs one attempt of a queued call and settles the delivery.
func (d *Dispatcher) attempt(req *gust.AsyncRequest, dl gust.Delivery) {
	key := gust.FunctionKey(req.Namespace, req.Function)
	// The logger with the call's fields is built only when something is
	// logged: most attempts log nothing.
	logger := lazyLogger{base: d.logger, key: key, id: req.CallID}
	ctx := d.ctx
	try := dl.Attempt()                // delivery of this queue message
	attempt := req.AttemptOffset + try // attempt of the call, across redrives
	fn := d.router.Function(req.Namespace, req.Function)
	var cfg gust.FunctionConfig
	if fn != nil {
		cfg = fn.Config()
	}
	tooOld := func() bool { return try > 1 && time.Since(req.Enqueued) > cfg.Retry.MaxAge }
	// On a first delivery, one conditional write marks the call running:
	// it replaces the "queued" status written just before the enqueue
	// (StatusRev), or creates the status of a call an earlier release
	// enqueued without one (NoStatus). It succeeds only if nothing has
	// written the status since, and every attempt writes "running" before
	// it runs, so no attempt has started: it is the redelivery check
	// below without its read.
	claimed := (req.NoStatus || req.StatusRev != 0) && try == 1 && fn != nil &&
		d.claim(req, attempt) == nil
	if !claimed {
		// A redelivery of a call that already finished (the process died
		// before acknowledging, or the ack was lost) does not run it
		// again. Even a first delivery may be one: after a crash
		// JetStream may not have kept that it delivered the message. A
		// redrive resets the status (to its attempt offset) before it
		// enqueues.
		if st, _, err := d.async.Calls.Get(ctx, req.CallID); err == nil &&
			(st.State == gust.AsyncSucceeded || st.State == gust.AsyncDeadLettered) && st.Attempts > req.AttemptOffset {
			_ = dl.Ack()
			return
		}
		if fn == nil {
			d.deadLetter(req, dl, attempt, 0, "function "+key+" does not exist", logger.get())
			return
		}
		if tooOld() {
			d.deadLetter(req, dl, attempt-1, 0, fmt.Sprintf("older than gust.retry.max-age %s", cfg.Retry.MaxAge), logger.get())
			return
		}
		d.setStatus(req, gust.AsyncRunning, attempt, 0, "", nil)
	}
	stopBeat := d.heartbeat(dl)
	res := d.run(ctx, fn, req, attempt)
	stopBeat()
	if ctx.Err() != nil {
		return // shutting down: the message comes back to whoever runs next
	}
	switch {
	case res.status < 400:
		d.setStatus(req, gust.AsyncSucceeded, attempt, res.status, "", nil)
		d.metrics.AsyncAttempt(key, "succeeded")
		if req.CallbackURL != "" {
			d.callback(req, res, logger.get())
		}
		_ = dl.Ack()
	case cfg.Retry.Retryable(res.status, res.outcome) && try < cfg.Retry.MaxAttempts:
		delay := cfg.Retry.Backoff(try, rand.Float64())
		next := time.Now().Add(delay)
		d.setStatus(req, gust.AsyncFailed, attempt, res.status, res.err, &next)
		d.metrics.AsyncAttempt(key, "retried")
		logger.get().Info("async call failed; will retry", zap.Int("attempt", attempt), zap.Int("status", res.status), zap.Duration("delay", delay))
		_ = dl.Retry(delay)
	default:
		l := logger.get()
		d.deadLetter(req, dl, attempt, res.status, res.err, l)
		d.callback(req, res, l)
	}
}

// claim writes the "running" status of a call's attempt on the condition
// that no status was written since the call was enqueued: none for a call
// enqueued without one, the "queued" one at req.StatusRev otherwise. An
// error (ErrConflict when something wrote it) says it did not.
func (d *Dispatcher) claim(req *gust.AsyncRequest, attempt int) error {
	st := gust.AsyncStatus{
		CallID: req.CallID, Namespace: req.Namespace, Function: req.Function, State: gust.AsyncRunning,
		Attempts: attempt, Enqueued: req.Enqueued, Updated: time.Now().UTC(),
	}
	var err error
	if req.StatusRev != 0 {
		_, err = d.async.Calls.Update(d.ctx, req.CallID, st, req.StatusRev)
	} else {
		_, err = d.async.Calls.Create(d.ctx, req.CallID, st)
	}
	return err
}

// lazyLogger is the dispatcher's logger with a call's fields, made on
// first use.
type lazyLogger struct {
	base    *zap.Logger
	key, id string
	l       *zap.Logger
}

func (l *lazyLogger) get() *zap.Logger {
	if l.l == nil {
		l.l = l.base.With(zap.String("function", l.key), zap.String("invocation_id", l.id))
	}
	return l.l
}

// ackWait is how long a delivery may go without word before JetStream
// hands it to another dispatcher: a dispatcher that died holding a call
// gives it up this soon. Calls that run longer send heartbeats.
const ackWait = 30 * time.Second

// heartbeat tells the queue, while a call runs, that its delivery is still
// being worked on. It returns the function that stops it; once that has
// returned, no heartbeat is sent. A timer, not a goroutine: most calls end
// long before the first beat.
func (d *Dispatcher) heartbeat(dl gust.Delivery) func() {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock()
	t = time.AfterFunc(ackWait/3, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = dl.InProgress()
		t.Reset(ackWait / 3)
	})
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

func (d *Dispatcher) setStatus(req *gust.AsyncRequest, state string, attempts, status int, lastErr string, next *time.Time) {
	if req.Trigger == gust.TriggerEvent && state != gust.AsyncDeadLettered && attempts == 1 && state != gust.AsyncFailed {
		// Durable events keep a status only once they need one: a
		// retry or a dead letter. Most succeed at once.
		return
	}
	st := gust.AsyncStatus{
		CallID: req.CallID, Namespace: req.Namespace, Function: req.Function, State: state, Attempts: attempts,
		LastStatus: status, LastError: lastErr, Enqueued: req.Enqueued, Updated: time.Now().UTC(), NextAttempt: next,
	}
	if _, err := d.async.Calls.Put(d.ctx, req.CallID, st); err != nil && d.ctx.Err() == nil {
		d.logger.Warn("record async call status", zap.String("invocation_id", req.CallID), zap.Error(err))
	}
}

// deadLetter moves a call to the dead-letter stream and acknowledges it.
func (d *Dispatcher) deadLetter(req *gust.AsyncRequest, dl gust.Delivery, attempts, status int, lastErr string, logger *zap.Logger) {
	key := gust.FunctionKey(req.Namespace, req.Function)
	err := d.async.DeadLetters.Add(d.ctx, gust.DeadLetter{Request: *req, Attempts: attempts, LastError: lastErr, Status: status, Failed: time.Now().UTC()})
	if err != nil {
		// Not acknowledged: it comes back and gets dead-lettered then.
		logger.Error("dead-letter failed; the call stays queued", zap.Error(err))
		_ = dl.Retry(5 * time.Second)
		return
	}
	d.setStatus(req, gust.AsyncDeadLettered, attempts, status, lastErr, nil)
	d.metrics.AsyncAttempt(key, "dead_lettered")
	logger.Warn("call dead-lettered", zap.Int("attempts", attempts), zap.String("error", lastErr))
	_ = dl.Ack()
}
