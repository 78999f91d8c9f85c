package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// callbackSubject carries results to deliver to callback URLs; no function
// key can take this token ("_" is not allowed in names).
const callbackSubject = gust.SubjectAsyncPrefix + "_callbacks"

// callbackMsg is a result waiting to be POSTed to a callback URL.
type callbackMsg struct {
	URL      string `json:"url"`
	CallID   string `json:"callId"`
	Function string `json:"function"`
	// Loopback: the call was the admin's, its callback may go to
	// loopback (AsyncRequest.CallbackLoopback).
	Loopback bool        `json:"loopback,omitempty"`
	Status   int         `json:"status"`
	Header   http.Header `json:"header,omitempty"`
	Body     []byte      `json:"body,omitempty"`
	Duration float64     `json:"duration"`
}

// HeaderBodyTruncated marks a callback whose body is not the function's
// whole answer: the answer did not fit in one queue message (an 8 MiB
// message holds about 6 MiB of body, base64-encoded). Its value is the
// length of the whole answer in bytes; the callback carries its first
// bytes.
const HeaderBodyTruncated = "X-Gust-Body-Truncated"

// callback queues the result for its callback URL, durably: the target
// may be down for a while. A body too large for one queue message is cut
// to fit, and the callback says so in HeaderBodyTruncated.
func (d *Dispatcher) callback(req *gust.AsyncRequest, res result, logger *zap.Logger) {
	if req.CallbackURL == "" {
		return
	}
	cb := callbackMsg{URL: req.CallbackURL, CallID: req.CallID, Function: req.Function, Loopback: req.CallbackLoopback, Status: res.status,
		Header: res.header, Body: res.body, Duration: res.duration.Seconds()}
	if res.size > int64(len(res.body)) {
		cb.truncate(res.size, len(res.body)) // the recorder kept only the first maxRecordedBody bytes
	}
	data, err := json.Marshal(cb)
	if err == nil && len(data) > d.async.maxData() {
		// base64 takes 4 bytes for every 3 of the body: keep what fits
		// beside the rest of the message.
		body := cb.Body
		cb.Body = nil
		var rest []byte
		if rest, err = json.Marshal(cb); err == nil {
			room := max(d.async.maxData()-len(rest)-len(`,"body":""`)-len(HeaderBodyTruncated)-32, 0)
			cb.Body = body
			cb.truncate(res.size, room/4*3)
			data, err = json.Marshal(cb)
		}
	}
	if err == nil {
		err = d.async.Queue.Enqueue(d.ctx, callbackSubject, "cb-"+req.CallID, data)
	}
	if err != nil {
		// Not silent: the caller waits for a callback that will not come.
		logger.Error("callback not queued; it will not be sent", zap.String("callback", req.CallbackURL), zap.Error(err))
		d.metrics.Callback("dropped")
	}
}

// truncate keeps the first n bytes of the body of an answer size bytes
// long, and says so in a header.
func (cb *callbackMsg) truncate(size int64, n int) {
	cb.Body = cb.Body[:min(n, len(cb.Body))]
	h := cb.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set(HeaderBodyTruncated, strconv.FormatInt(size, 10))
	cb.Header = h
}

// deliverCallback POSTs one queued result to its callback URL, retried
// with backoff (CallbackRetry) while the target fails or is away.
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
	client := d.client
	if cb.Loopback {
		client = d.adminClient
	}
	resp, err := client.Do(req)
	if errors.Is(err, errRefusedAddr) {
		// No retry will change where the URL leads.
		d.metrics.Callback("dropped")
		logger.Warn("callback dropped: it leads to an address refused for calls made for users", zap.Error(err))
		_ = dl.Ack()
		return
	}
	if err == nil {
		// Read a little of the answer so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		if resp.StatusCode < 300 {
			d.metrics.Callback("delivered")
			_ = dl.Ack()
			return
		}
		err = fmt.Errorf("callback answered %s", resp.Status)
	}
	if d.ctx.Err() != nil {
		return
	}
	if dl.Attempt() >= d.CallbackRetry.MaxAttempts {
		d.metrics.Callback("dropped")
		logger.Error("callback dropped after its last attempt", zap.Int("attempts", dl.Attempt()), zap.Error(err))
		_ = dl.Ack()
		return
	}
	d.metrics.Callback("retried")
	delay := d.CallbackRetry.Backoff(dl.Attempt(), rand.Float64())
	logger.Warn("callback failed; will retry", zap.Int("attempt", dl.Attempt()), zap.Duration("delay", delay), zap.Error(err))
	_ = dl.Retry(delay)
}

// validCallback checks an X-Callback-Url: an absolute http or https URL
// whose host is no refused address (outbound.go) unless allow lets it.
func validCallback(s string, allow OutboundAllow) error {
	u, err := url.Parse(s)
	if err == nil {
		err = allow.checkURL(u)
	}
	if err != nil {
		return gust.Invalidf(gust.HeaderCallbackURL, "%s %q: %v", gust.HeaderCallbackURL, s, err)
	}
	return nil
}
