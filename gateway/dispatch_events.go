package gateway

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// streamConsumer names the durable consumer of a function's stream
// trigger: "trigger_NS_NAME". Names hold no '_', so no two functions share
// one; under the name earlier releases gave it, "trigger-NS-NAME", two
// could (namespace a, function b-c and namespace a-b, function c), and the
// one deployed last set the filter both read: one tenant's function would
// receive another's messages.
func streamConsumer(ns, name string) string { return "trigger_" + ns + "_" + name }

// legacyStreamConsumer is the earlier name, adopted where its consumer
// still reads this function's filter, so that its position is kept (a new
// consumer starts at the stream's first message).
func legacyStreamConsumer(ns, name string) string { return "trigger-" + ns + "-" + name }

// consumeStream starts the durable stream trigger of fn, at most limit
// calls at a time, and returns what stops it (nil if it could not start,
// which is logged and counted).
func (d *Dispatcher) consumeStream(fn *gust.Function, cfg gust.FunctionConfig, limit int, logger *zap.Logger) func() {
	key := fn.Key()
	stop, err := d.async.Queue.Consume(d.ctx, gust.ConsumerSpec{
		Stream: cfg.Stream, Durable: streamConsumer(fn.Spec.Namespace, fn.Spec.Service),
		Adopt: legacyStreamConsumer(fn.Spec.Namespace, fn.Spec.Service), Filter: cfg.StreamFilter,
		Max: limit, AckWait: ackWait,
	}, func(dl gust.Delivery) { d.runStreamEvent(key, dl) })
	if err != nil {
		if d.ctx.Err() != nil {
			return nil
		}
		// The stream may not exist (yet): say so where an operator
		// looks, and count it.
		logger.Error("durable trigger not started: its stream cannot be consumed", zap.String("stream", cfg.Stream), zap.Error(err))
		d.metrics.EventDropped(key, "stream_unavailable")
		return nil
	}
	logger.Info("durable trigger started", zap.String("stream", cfg.Stream), zap.String("filter", cfg.StreamFilter))
	return stop
}

// queuedEvent is a trigger message waiting in a function's buffer, with
// the bytes it holds there.
type queuedEvent struct {
	m *gust.Message
	n int64
}

// eventSize is what a message holds in memory while it waits: its data,
// subject and headers.
func eventSize(m *gust.Message) int64 {
	n := len(m.Data) + len(m.Subject)
	for k, vs := range m.Header {
		n += len(k)
		for _, v := range vs {
			n += len(v)
		}
	}
	return int64(n)
}

// subscribe starts the core-NATS triggers of fn: one queue subscription
// per subject, a buffer bounded in messages (EventBuffer) and in bytes
// (EventBufferBytes), and limit runners.
func (d *Dispatcher) subscribe(fn *gust.Function, cfg gust.FunctionConfig, limit int, logger *zap.Logger) []func() {
	key := fn.Key()
	ch := make(chan queuedEvent, d.EventBuffer)
	// queued is the bytes of the messages in ch: NATS messages can be
	// megabytes each, so a count alone would let a flood of large ones
	// hold gigabytes.
	var queued atomic.Int64
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
				case q := <-ch:
					queued.Add(-q.n)
					d.runEvent(ctx, key, q.m)
				}
			}
		}()
	}
	stops := []func(){func() { cancel(); wg.Wait() }}
	var lastDropLog time.Time
	var dropMu sync.Mutex
	for _, subj := range cfg.Topics {
		stop, err := d.async.Events.Subscribe(subj, "gust-trigger."+key, func(m *gust.Message) {
			d.metrics.EventReceived(key, "nats")
			q := queuedEvent{m: m, n: eventSize(m)}
			if queued.Add(q.n) <= d.EventBufferBytes {
				select {
				case ch <- q:
					return
				default:
				}
			}
			queued.Add(-q.n)
			d.metrics.EventDropped(key, "buffer_full")
			dropMu.Lock()
			if time.Since(lastDropLog) > time.Second {
				lastDropLog = time.Now()
				logger.Warn("event dropped: the function's buffer is full", zap.String("subject", m.Subject),
					zap.Int("buffer", d.EventBuffer), zap.Int64("buffer_bytes", d.EventBufferBytes))
			}
			dropMu.Unlock()
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

// runStreamEvent runs one message of a durable stream trigger.
func (d *Dispatcher) runStreamEvent(key string, dl gust.Delivery) {
	ns, name := splitKey(key)
	if dl.Attempt() == 1 {
		d.metrics.EventReceived(key, "stream")
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

// eventRequest builds the call of a trigger message: its data as the
// body, its headers as HTTP headers, and CloudEvents attributes in HTTP
// binary mode.
func eventRequest(ns, name, subject string, header map[string][]string, data []byte, at time.Time) *gust.AsyncRequest {
	// Sized for the CloudEvents headers, and their values in one slice,
	// each capped at its length (an Add copies): a map grown header by
	// header was 5% of an event's CPU.
	h := make(http.Header, len(header)+7)
	for k, v := range header {
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		h[http.CanonicalHeaderKey(k)] = v
	}
	id := newCallID()
	v := []string{
		id, "1.0", "nats://gust/" + subject, "io.gust.nats.message", subject,
		at.UTC().Format(time.RFC3339Nano), "application/octet-stream",
	}
	h["Ce-Id"] = v[0:1:1]
	h["Ce-Specversion"] = v[1:2:2]
	h["Ce-Source"] = v[2:3:3]
	h["Ce-Type"] = v[3:4:4]
	h["Ce-Subject"] = v[4:5:5]
	h["Ce-Time"] = v[5:6:6]
	if h.Get("Content-Type") == "" {
		h["Content-Type"] = v[6:7:7]
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
		d.metrics.EventDropped(key, "unknown_function")
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
