package gateway

import (
	"net/http"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

// TestEventRequest_Headers: an event's call carries the message's headers
// (not NATS's own), the CloudEvents binary-mode headers, which win over
// the message's, and a default content type only when the message has
// none.
func TestEventRequest_Headers(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 5, time.FixedZone("x", 3600))
	req := eventRequest("ns", "fn", "orders.new", map[string][]string{
		"x-trace":          {"a", "b"},
		"Nats-Msg-Id":      {"m1"},
		"Ce-Type":          {"spoofed"},
		"Nats-Expected-Ls": {"1"},
	}, []byte("body"), at)
	h := req.Header
	want := map[string]string{
		"X-Trace":        "a",
		"Ce-Id":          req.CallID,
		"Ce-Specversion": "1.0",
		"Ce-Source":      "nats://gust/orders.new",
		"Ce-Type":        "io.gust.nats.message",
		"Ce-Subject":     "orders.new",
		"Ce-Time":        "2026-12-03T09:00:00.000000005Z",
		"Content-Type":   "application/octet-stream",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if len(h) != len(want) {
		t.Errorf("headers %v, want exactly the keys of %v", h, want)
	}
	if got := h.Values("X-Trace"); len(got) != 2 {
		t.Errorf("X-Trace = %q, want both values", got)
	}
	// Values share one slice: adding to one must not change another.
	h.Add("Ce-Id", "more")
	if h.Get("Ce-Specversion") != "1.0" {
		t.Errorf("Add to Ce-Id changed Ce-Specversion to %q", h.Get("Ce-Specversion"))
	}
	if req.CallID == "" || req.Trigger != gust.TriggerEvent || req.Method != http.MethodPost || string(req.Body) != "body" {
		t.Errorf("request %+v", req)
	}

	typed := eventRequest("ns", "fn", "s", map[string][]string{"content-type": {"application/json"}}, nil, at)
	if got := typed.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q, want the message's", got)
	}
}
