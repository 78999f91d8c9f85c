package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
	"go.uber.org/zap"
)

// Async is what the gateway needs for async calls, event triggers and dead
// letters. All of it lives in NATS and JetStream in production.
type Async struct {
	Queue       gust.Queue
	Events      gust.Events
	DeadLetters gust.DeadLetters
	Calls       gust.Table[gust.AsyncStatus]
	Idempotency gust.Table[string]
	// Streams is the stream holding async calls and callbacks.
	Stream string
}

// Dispatcher runs async calls, event-triggered calls and callbacks through
// the same warm-pool path as sync calls. It keeps, per function, a durable
// consumer of its async queue, its core-NATS trigger subscriptions (in a
// queue group per function, so several gateways never run one message
// twice) and its durable stream trigger. Each runs at most the function's
// max instances × concurrency calls at once: a flood waits in JetStream
// (async, durable triggers) or in a bounded buffer (core-NATS triggers,
// where an overflow is counted and logged).
type Dispatcher struct {
	async   *Async
	state   *gust.State
	router  *Router
	meter   gust.Meter
	metrics *metrics.Metrics
	logger  *zap.Logger
	client  *http.Client
	// EventBuffer bounds the core-NATS messages waiting per function.
	EventBuffer int

	ctx    context.Context
	cancel context.CancelFunc

	mu            sync.Mutex
	funcs         map[string]*dispatch // by function key
	stopCallbacks func()
}

// dispatch is what runs for one function version.
type dispatch struct {
	version uint64
	stops   []func()
}

// NewDispatcher returns a dispatcher; Start runs it.
func NewDispatcher(a *Async, state *gust.State, router *Router, meter gust.Meter, m *metrics.Metrics, logger *zap.Logger) *Dispatcher {
	return &Dispatcher{
		async: a, state: state, router: router, meter: meter, metrics: m,
		logger: logger.Named("dispatch"), EventBuffer: 10000,
		client: &http.Client{Timeout: 30 * time.Second},
		funcs:  map[string]*dispatch{},
	}
}

// callbackSubject carries results to deliver to callback URLs; no function
// key can take this token ("_" is not allowed in names).
const callbackSubject = gust.SubjectAsyncPrefix + "_callbacks"

// Start follows the registry and starts the callback deliverer.
func (d *Dispatcher) Start(ctx context.Context) error {
	d.ctx, d.cancel = context.WithCancel(context.Background())
	stop, err := d.async.Queue.Consume(d.ctx, gust.ConsumerSpec{
		Stream: d.async.Stream, Durable: "gust-callbacks", Filter: callbackSubject, Max: 64, AckWait: time.Minute,
	}, d.deliverCallback)
	if err != nil {
		return err
	}
	d.stopCallbacks = stop
	return d.state.Functions.Watch(d.ctx, ">", func(c gust.Change[gust.Function]) {
		if c.Deleted {
			d.stopFunction(c.Key)
			// Its durable consumers go too; calls still queued for it stay
			// in the stream and run if it is deployed again.
			ns, name := splitKey(c.Key)
			gone := &gust.Function{Spec: gust.FunctionSpec{Namespace: ns, Service: name}}
			if err := d.async.Queue.DeleteConsumer(d.ctx, d.async.Stream, durableName("async", gone)); err != nil {
				d.logger.Warn("delete async consumer", zap.String("function", c.Key), zap.Error(err))
			}
			return
		}
		fn := c.Value
		go d.startFunction(&fn)
	})
}

// Close stops every consumer and subscription; calls in flight finish.
func (d *Dispatcher) Close() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.mu.Lock()
	keys := make([]string, 0, len(d.funcs))
	for k := range d.funcs {
		keys = append(keys, k)
	}
	d.mu.Unlock()
	for _, k := range keys {
		d.stopFunction(k)
	}
	if d.stopCallbacks != nil {
		d.stopCallbacks()
	}
}

func durableName(prefix string, fn *gust.Function) string {
	return prefix + "-" + fn.Spec.Namespace + "-" + fn.Spec.Service
}

// startFunction (re)starts the consumers and subscriptions of a function.
func (d *Dispatcher) startFunction(fn *gust.Function) {
	key := fn.Key()
	d.mu.Lock()
	if cur := d.funcs[key]; cur != nil && cur.version == fn.Version {
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	d.stopFunction(key)
	cfg := fn.Config()
	limit := min(cfg.Max*cfg.Concurrency, 1000)
	logger := d.logger.With(zap.String("function", key))
	dp := &dispatch{version: fn.Version}
	stop, err := d.async.Queue.Consume(d.ctx, gust.ConsumerSpec{
		Stream: d.async.Stream, Durable: durableName("async", fn), Filter: gust.SubjectAsyncPrefix + key,
		Max: limit, AckWait: ackWait,
	}, func(dl gust.Delivery) { d.runAsync(key, dl) })
	if err != nil {
		logger.Error("async consumer", zap.Error(err))
	} else {
		dp.stops = append(dp.stops, stop)
	}
	if len(cfg.Topics) > 0 {
		dp.stops = append(dp.stops, d.subscribe(fn, cfg, limit, logger)...)
	}
	if cfg.Stream != "" {
		stop, err := d.async.Queue.Consume(d.ctx, gust.ConsumerSpec{
			Stream: cfg.Stream, Durable: durableName("trigger", fn), Filter: cfg.StreamFilter, Max: limit, AckWait: ackWait,
		}, func(dl gust.Delivery) { d.runStreamEvent(key, dl) })
		if err != nil {
			// The stream may not exist (yet): say so where an operator
			// looks, and count it.
			logger.Error("durable trigger not started: its stream cannot be consumed", zap.String("stream", cfg.Stream), zap.Error(err))
			if d.metrics != nil {
				d.metrics.EventsDropped.WithLabelValues(key, "stream_unavailable").Inc()
			}
		} else {
			dp.stops = append(dp.stops, stop)
			logger.Info("durable trigger started", zap.String("stream", cfg.Stream), zap.String("filter", cfg.StreamFilter))
		}
	}
	d.mu.Lock()
	if old := d.funcs[key]; old != nil {
		// A newer start won the race; keep one.
		d.mu.Unlock()
		for _, s := range dp.stops {
			s()
		}
		return
	}
	d.funcs[key] = dp
	d.mu.Unlock()
}

func (d *Dispatcher) stopFunction(key string) {
	d.mu.Lock()
	dp := d.funcs[key]
	delete(d.funcs, key)
	d.mu.Unlock()
	if dp == nil {
		return
	}
	for _, s := range dp.stops {
		s()
	}
}

// subscribe starts the core-NATS triggers of fn: one queue subscription
// per subject, a bounded buffer, and limit runners.
func (d *Dispatcher) subscribe(fn *gust.Function, cfg gust.FunctionConfig, limit int, logger *zap.Logger) []func() {
	key := fn.Key()
	ch := make(chan *gust.Message, d.EventBuffer)
	ctx, cancel := context.WithCancel(d.ctx)
	var wg sync.WaitGroup
	for i := 0; i < limit; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case m := <-ch:
					d.runEvent(ctx, key, m)
				}
			}
		}()
	}
	stops := []func(){func() { cancel(); wg.Wait() }}
	var lastDropLog time.Time
	var dropMu sync.Mutex
	for _, subj := range cfg.Topics {
		stop, err := d.async.Events.Subscribe(subj, "gust-trigger."+key, func(m *gust.Message) {
			if d.metrics != nil {
				d.metrics.EventsReceived.WithLabelValues(key, "nats").Inc()
			}
			select {
			case ch <- m:
			default:
				if d.metrics != nil {
					d.metrics.EventsDropped.WithLabelValues(key, "buffer_full").Inc()
				}
				dropMu.Lock()
				if time.Since(lastDropLog) > time.Second {
					lastDropLog = time.Now()
					logger.Warn("event dropped: the function's buffer is full", zap.String("subject", m.Subject), zap.Int("buffer", d.EventBuffer))
				}
				dropMu.Unlock()
			}
		})
		if err != nil {
			logger.Error("trigger subscription", zap.String("subject", subj), zap.Error(err))
			continue
		}
		logger.Info("trigger subscribed", zap.String("subject", subj))
		// Drain the subscription first, then stop the runners.
		stops = append([]func(){func() { _ = stop() }}, stops...)
	}
	return stops
}

// result is the answer of a call the dispatcher made.
type result struct {
	status   int
	outcome  string
	header   http.Header
	body     []byte
	duration time.Duration
	err      string
}

// run makes one call of the function through its invoker.
func (d *Dispatcher) run(ctx context.Context, fn *gust.Function, req *gust.AsyncRequest, attempt int) result {
	path := req.Path
	if path == "" {
		path = "/"
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, "http://gust"+path, bytes.NewReader(req.Body))
	if err != nil {
		return result{status: http.StatusBadRequest, outcome: gust.OutcomeRejected, err: err.Error()}
	}
	hr.URL.RawQuery = req.Query
	for k, v := range req.Header {
		hr.Header[k] = v
	}
	hr.Header.Set(gust.HeaderCallID, req.CallID)
	hr.Header.Set(gust.HeaderGustCallID, req.CallID)
	hr.Header.Set(gust.HeaderTrigger, req.Trigger)
	hr.Header.Set(gust.HeaderAttempt, strconv.Itoa(attempt))
	hr.ContentLength = int64(len(req.Body))
	t0 := time.Now()
	rec := newRecorder()
	inv, err := d.router.Invoker(ctx, fn)
	if err == nil {
		err = inv.Invoke(rec, hr, fn)
	}
	// The worker that ran (or turned away) the call says how it went.
	res := result{duration: time.Since(t0), header: rec.header, outcome: rec.header.Get(gust.HeaderOutcome)}
	if err != nil {
		res.status, res.err = gust.HTTPStatus(err), gust.ErrorMessage(err)
		if res.outcome == "" {
			// No worker metered it: it never reached one.
			res.outcome = gust.OutcomeRejected
			if d.meter != nil {
				r := gust.RejectedCall(fn, gust.AttemptID(req.CallID, attempt), req.Trigger, t0, res.status)
				d.meter.RecordCall(&r)
			}
		}
		return res
	}
	res.status, res.body = rec.status, rec.body.Bytes()
	if res.status == 0 {
		res.status = http.StatusOK
	}
	if res.status >= 400 {
		res.err = fmt.Sprintf("function answered %d: %s", res.status, truncate(res.body, 200))
	}
	return res
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
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

// runStreamEvent runs one message of a durable stream trigger.
func (d *Dispatcher) runStreamEvent(key string, dl gust.Delivery) {
	ns, name := splitKey(key)
	if d.metrics != nil && dl.Attempt() == 1 {
		d.metrics.EventsReceived.WithLabelValues(key, "stream").Inc()
	}
	req := eventRequest(ns, name, dl.Subject(), dl.Header(), dl.Data(), dl.Published())
	// The id is stable across redeliveries, so the attempts of one
	// message share it.
	if meta := dl.Header()["Nats-Msg-Id"]; len(meta) > 0 {
		req.CallID = "ev-" + meta[0]
		req.Header.Set("Ce-Id", meta[0])
	} else {
		req.CallID = "ev-" + strconv.FormatInt(dl.Published().UnixNano(), 36) + "-" + sanitize(dl.Subject())
	}
	d.attempt(req, dl)
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '*' || r == '>' || r == ' ' {
			return '-'
		}
		return r
	}, s)
}

// attempt runs one attempt of a queued call and settles the delivery.
func (d *Dispatcher) attempt(req *gust.AsyncRequest, dl gust.Delivery) {
	key := gust.FunctionKey(req.Namespace, req.Function)
	logger := d.logger.With(zap.String("function", key), zap.String("invocation_id", req.CallID))
	ctx := d.ctx
	try := dl.Attempt()                // delivery of this queue message
	attempt := req.AttemptOffset + try // attempt of the call, across redrives
	// A redelivery of a call that already finished (the process died
	// before acknowledging, or the ack was lost) does not run it again.
	// Even a first delivery may be one: after a crash JetStream may not
	// have kept that it delivered the message. A redrive resets the
	// status (to its attempt offset) before it enqueues.
	if st, _, err := d.async.Calls.Get(ctx, req.CallID); err == nil &&
		(st.State == gust.AsyncSucceeded || st.State == gust.AsyncDeadLettered) && st.Attempts > req.AttemptOffset {
		_ = dl.Ack()
		return
	}
	fn := d.router.Function(req.Namespace, req.Function)
	if fn == nil {
		d.deadLetter(req, dl, attempt, 0, "function "+key+" does not exist", logger)
		return
	}
	cfg := fn.Config()
	if age := time.Since(req.Enqueued); try > 1 && age > cfg.Retry.MaxAge {
		d.deadLetter(req, dl, attempt-1, 0, fmt.Sprintf("older than gust.retry.max-age %s", cfg.Retry.MaxAge), logger)
		return
	}
	d.setStatus(req, gust.AsyncRunning, attempt, 0, "", nil)
	stopBeat := d.heartbeat(dl)
	res := d.run(ctx, fn, req, attempt)
	stopBeat()
	if ctx.Err() != nil {
		return // shutting down: the message comes back to whoever runs next
	}
	switch {
	case res.status < 400:
		d.setStatus(req, gust.AsyncSucceeded, attempt, res.status, "", nil)
		d.count(key, "succeeded")
		d.callback(req, res, logger)
		_ = dl.Ack()
	case cfg.Retry.Retryable(res.status, res.outcome) && try < cfg.Retry.MaxAttempts:
		delay := cfg.Retry.Backoff(try, rand.Float64())
		next := time.Now().Add(delay)
		d.setStatus(req, gust.AsyncFailed, attempt, res.status, res.err, &next)
		d.count(key, "retried")
		logger.Info("async call failed; will retry", zap.Int("attempt", attempt), zap.Int("status", res.status), zap.Duration("delay", delay))
		_ = dl.Retry(delay)
	default:
		d.deadLetter(req, dl, attempt, res.status, res.err, logger)
		d.callback(req, res, logger)
	}
}

// ackWait is how long a delivery may go without word before JetStream
// hands it to another dispatcher: a dispatcher that died holding a call
// gives it up this soon. Calls that run longer send heartbeats.
const ackWait = 30 * time.Second

// heartbeat tells the queue, while a call runs, that its delivery is still
// being worked on. It returns the function that stops it.
func (d *Dispatcher) heartbeat(dl gust.Delivery) func() {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = dl.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

func (d *Dispatcher) count(key, result string) {
	if d.metrics != nil {
		d.metrics.AsyncAttempts.WithLabelValues(key, result).Inc()
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
	d.count(key, "dead_lettered")
	logger.Warn("call dead-lettered", zap.Int("attempts", attempts), zap.String("error", lastErr))
	_ = dl.Ack()
}

// callbackMsg is a result waiting to be POSTed to a callback URL.
type callbackMsg struct {
	URL      string      `json:"url"`
	CallID   string      `json:"callId"`
	Function string      `json:"function"`
	Status   int         `json:"status"`
	Header   http.Header `json:"header,omitempty"`
	Body     []byte      `json:"body,omitempty"`
	Duration float64     `json:"duration"`
}

// callback queues the result for its callback URL, durably: the target
// may be down for a while.
func (d *Dispatcher) callback(req *gust.AsyncRequest, res result, logger *zap.Logger) {
	if req.CallbackURL == "" {
		return
	}
	cb := callbackMsg{URL: req.CallbackURL, CallID: req.CallID, Function: req.Function, Status: res.status,
		Header: res.header, Body: res.body, Duration: res.duration.Seconds()}
	data, err := json.Marshal(cb)
	if err == nil {
		err = d.async.Queue.Enqueue(d.ctx, callbackSubject, "cb-"+req.CallID, data)
	}
	if err != nil {
		logger.Error("queue callback", zap.Error(err))
	}
}

// Callback delivery: up to callbackAttempts tries, backing off from 1s to
// 5 minutes (about an hour in all) before giving up loudly.
const callbackAttempts = 20

var callbackRetry = gust.RetryPolicy{MinDelay: time.Second, MaxDelay: 5 * time.Minute}

func (d *Dispatcher) deliverCallback(dl gust.Delivery) {
	var cb callbackMsg
	if err := json.Unmarshal(dl.Data(), &cb); err != nil {
		_ = dl.Ack()
		return
	}
	logger := d.logger.With(zap.String("invocation_id", cb.CallID), zap.String("callback", cb.URL))
	ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cb.URL, bytes.NewReader(cb.Body))
	if err != nil {
		logger.Error("callback dropped: bad URL", zap.Error(err))
		_ = dl.Ack()
		return
	}
	for k, v := range cb.Header {
		if k != "Content-Length" && k != "Trailer" {
			req.Header[k] = v
		}
	}
	req.Header.Set(gust.HeaderCallID, cb.CallID)
	req.Header.Set(gust.HeaderFunctionStatus, strconv.Itoa(cb.Status))
	req.Header.Set(gust.HeaderFunctionName, cb.Function)
	req.Header.Set(gust.HeaderDuration, strconv.FormatFloat(cb.Duration, 'f', 6, 64))
	resp, err := d.client.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 300 {
			d.countCallback("delivered")
			_ = dl.Ack()
			return
		}
		err = fmt.Errorf("callback answered %s", resp.Status)
	}
	if d.ctx.Err() != nil {
		return
	}
	if dl.Attempt() >= callbackAttempts {
		d.countCallback("dropped")
		logger.Error("callback dropped after its last attempt", zap.Int("attempts", dl.Attempt()), zap.Error(err))
		_ = dl.Ack()
		return
	}
	d.countCallback("retried")
	delay := callbackRetry.Backoff(dl.Attempt(), rand.Float64())
	logger.Warn("callback failed; will retry", zap.Int("attempt", dl.Attempt()), zap.Duration("delay", delay), zap.Error(err))
	_ = dl.Retry(delay)
}

func (d *Dispatcher) countCallback(result string) {
	if d.metrics != nil {
		d.metrics.Callbacks.WithLabelValues(result).Inc()
	}
}

// eventRequest builds the call of a trigger message: its data as the
// body, its headers as HTTP headers, and CloudEvents attributes in HTTP
// binary mode.
func eventRequest(ns, name, subject string, header map[string][]string, data []byte, at time.Time) *gust.AsyncRequest {
	h := http.Header{}
	for k, v := range header {
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		h[http.CanonicalHeaderKey(k)] = v
	}
	id := newID(16)
	h.Set("Ce-Id", id)
	h.Set("Ce-Specversion", "1.0")
	h.Set("Ce-Source", "nats://gust/"+subject)
	h.Set("Ce-Type", "io.gust.nats.message")
	h.Set("Ce-Subject", subject)
	h.Set("Ce-Time", at.UTC().Format(time.RFC3339Nano))
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/octet-stream")
	}
	return &gust.AsyncRequest{
		CallID: id, Namespace: ns, Function: name, Method: http.MethodPost, Path: "/", Header: h,
		Body: data, Enqueued: at.UTC(), Trigger: gust.TriggerEvent,
	}
}

// runEvent runs one core-NATS trigger message: one call, and the answer
// as the reply when the message asked for one.
func (d *Dispatcher) runEvent(ctx context.Context, key string, m *gust.Message) {
	ns, name := splitKey(key)
	fn := d.router.Function(ns, name)
	if fn == nil {
		d.logger.Warn("event for a function that does not exist", zap.String("function", key), zap.String("subject", m.Subject))
		if d.metrics != nil {
			d.metrics.EventsDropped.WithLabelValues(key, "unknown_function").Inc()
		}
		if m.Respond != nil {
			_ = m.Respond(nil, map[string][]string{gust.HeaderFunctionStatus: {"404"}})
		}
		return
	}
	req := eventRequest(ns, name, m.Subject, m.Header, m.Data, time.Now())
	res := d.run(ctx, fn, req, 1)
	if res.status >= 400 {
		d.logger.Warn("event call failed", zap.String("function", key), zap.String("invocation_id", req.CallID), zap.Int("status", res.status), zap.String("error", res.err))
	}
	if m.Respond != nil {
		h := map[string][]string{}
		for k, v := range res.header {
			h[k] = v
		}
		h[gust.HeaderCallID] = []string{req.CallID}
		h[gust.HeaderFunctionStatus] = []string{strconv.Itoa(res.status)}
		if err := m.Respond(res.body, h); err != nil {
			d.logger.Warn("reply to event", zap.String("function", key), zap.Error(err))
		}
	}
}

// validCallback checks an X-Callback-Url.
func validCallback(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return gust.Invalidf(gust.HeaderCallbackURL, "%s %q: want an absolute http or https URL", gust.HeaderCallbackURL, s)
	}
	return nil
}
