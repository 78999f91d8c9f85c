package sdk

import (
	"net/http"
	"strconv"
	"time"
)

// CloudEvent holds the CloudEvents attributes of an event-triggered call.
// Gust delivers events in HTTP binary mode: the attributes come as ce-*
// headers and the event data is the request body.
type CloudEvent struct {
	ID          string    // ce-id
	Source      string    // ce-source, e.g. nats://gust/orders.created
	Type        string    // ce-type, e.g. io.gust.nats.message
	Subject     string    // ce-subject: the NATS subject
	Time        time.Time // ce-time (zero when absent or not RFC 3339)
	SpecVersion string    // ce-specversion, "1.0"
	// Attempt is the attempt number of the call (1 for the first), from
	// X-Gust-Attempt; durable events and async calls may be retried.
	Attempt int
}

// Event returns the CloudEvent of a request, and false when the request
// carries none (a plain HTTP call).
func Event(r *http.Request) (CloudEvent, bool) {
	h := r.Header
	e := CloudEvent{
		ID: h.Get("Ce-Id"), Source: h.Get("Ce-Source"), Type: h.Get("Ce-Type"),
		Subject: h.Get("Ce-Subject"), SpecVersion: h.Get("Ce-Specversion"),
	}
	if e.ID == "" || e.SpecVersion == "" {
		return CloudEvent{}, false
	}
	if t, err := time.Parse(time.RFC3339Nano, h.Get("Ce-Time")); err == nil {
		e.Time = t
	}
	// A missing, malformed or non-positive attempt reads as the first:
	// no attempt has a number below 1.
	e.Attempt, _ = strconv.Atoi(h.Get("X-Gust-Attempt"))
	if e.Attempt < 1 {
		e.Attempt = 1
	}
	return e, true
}
