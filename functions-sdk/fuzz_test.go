package sdk

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readRequest parses a request with the given headers off the wire, as
// the function's HTTP server would; ok is false when net/http refuses it,
// or when a value is not one line (it would write other header lines, or
// fold, which no sender of an event does).
func readRequest(headers [][2]string) (*http.Request, bool) {
	var b strings.Builder
	b.WriteString("POST / HTTP/1.1\r\nHost: fn\r\nContent-Length: 0\r\n")
	for _, h := range headers {
		if strings.ContainsAny(h[1], "\r\n") {
			return nil, false
		}
		b.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	b.WriteString("\r\n")
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(b.String())))
	return r, err == nil
}

// FuzzEvent decodes the CloudEvent of a request carrying the ce-* headers
// and X-Gust-Attempt as they come off the wire. A request is an event
// exactly when it has an id and a spec version; an event's attributes are
// its headers, its time is the ce-time it was sent or zero, its attempt is
// at least 1; and sending the decoded event again decodes to the same
// event.
func FuzzEvent(f *testing.F) {
	f.Add("e1", "1.0", "nats://gust/orders.created", "io.gust.nats.message", "orders.created", "2026-11-27T10:00:00.5Z", "2")
	f.Add("01JDX6Y0Q8", "1.0", "nats://gust/GUST_ORDERS", "io.gust.jetstream.message", "orders.eu.created", "2026-11-27T10:00:00.123456789+01:00", "")
	f.Add("e1", "", "s", "t", "", "", "1")
	f.Add("", "1.0", "s", "t", "", "", "1")
	f.Add("e1", "1.0", "", "", "", "yesterday", "0")
	f.Add("e1", "1.0", "", "", "", "2026-11-27 10:00:00Z", "-3")
	f.Add("e1", "1.0", "", "", "", "2026-11-27T10:00:00-23:59", "99999999999999999999")
	f.Add("e1", "1.0", "", "", "", "0000-01-01T00:00:00Z", "+7")
	f.Add("e1", "1.0", "", "", "", "9999-12-31T23:59:59.999999999Z", " 2 ")
	f.Add(" spaced id ", "1.0", "ü", "\t", "a b", "2026-02-30T00:00:00Z", "1e3")
	f.Fuzz(func(t *testing.T, id, spec, source, typ, subject, ceTime, attempt string) {
		r, ok := readRequest([][2]string{
			{"Ce-Id", id}, {"Ce-Specversion", spec}, {"Ce-Source", source}, {"Ce-Type", typ},
			{"Ce-Subject", subject}, {"Ce-Time", ceTime}, {"X-Gust-Attempt", attempt},
		})
		if !ok {
			return // not a request a function can be sent
		}
		h := r.Header
		e, isEvent := Event(r)
		if isEvent != (h.Get("Ce-Id") != "" && h.Get("Ce-Specversion") != "") {
			t.Fatalf("Event(%v) = %v, want an event exactly when ce-id and ce-specversion are set", h, isEvent)
		}
		if !isEvent {
			if e != (CloudEvent{}) {
				t.Fatalf("Event(%v) = %+v, false; want the zero event", h, e)
			}
			return
		}
		if e.ID != h.Get("Ce-Id") || e.SpecVersion != h.Get("Ce-Specversion") || e.Source != h.Get("Ce-Source") ||
			e.Type != h.Get("Ce-Type") || e.Subject != h.Get("Ce-Subject") {
			t.Fatalf("Event(%v) = %+v: attributes differ from the headers", h, e)
		}
		if e.Attempt < 1 {
			t.Fatalf("Event(%v) has attempt %d, want at least 1", h, e.Attempt)
		}
		if n, err := strconv.Atoi(h.Get("X-Gust-Attempt")); err == nil && n >= 1 && e.Attempt != n {
			t.Fatalf("X-Gust-Attempt %q gave attempt %d", h.Get("X-Gust-Attempt"), e.Attempt)
		}
		if want, err := time.Parse(time.RFC3339Nano, h.Get("Ce-Time")); (err == nil && !e.Time.Equal(want)) || (err != nil && !e.Time.IsZero()) {
			t.Fatalf("ce-time %q gave %v", h.Get("Ce-Time"), e.Time)
		}
		// Sent on (a function calling another with its event), the event
		// decodes to itself.
		again := [][2]string{
			{"Ce-Id", e.ID}, {"Ce-Specversion", e.SpecVersion}, {"Ce-Source", e.Source}, {"Ce-Type", e.Type},
			{"Ce-Subject", e.Subject}, {"X-Gust-Attempt", strconv.Itoa(e.Attempt)},
		}
		if !e.Time.IsZero() {
			again = append(again, [2]string{"Ce-Time", e.Time.Format(time.RFC3339Nano)})
		}
		r2, ok := readRequest(again)
		if !ok {
			t.Fatalf("event %+v cannot be sent again", e)
		}
		e2, ok := Event(r2)
		if !ok || !e2.Time.Equal(e.Time) {
			t.Fatalf("event %+v sent again decodes to %+v, %v", e, e2, ok)
		}
		e2.Time = e.Time
		if e2 != e {
			t.Fatalf("event %+v sent again decodes to %+v", e, e2)
		}
	})
}
