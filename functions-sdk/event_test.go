package sdk

import (
	"net/http/httptest"
	"testing"
	"time"
)

func TestEvent(t *testing.T) {
	r := httptest.NewRequest("POST", "/", nil)
	if _, ok := Event(r); ok {
		t.Fatal("plain request reported as an event")
	}
	r.Header.Set("ce-id", "e1")
	r.Header.Set("ce-specversion", "1.0")
	r.Header.Set("ce-source", "nats://gust/orders.created")
	r.Header.Set("ce-type", "io.gust.nats.message")
	r.Header.Set("ce-subject", "orders.created")
	r.Header.Set("ce-time", "2026-11-27T10:00:00.5Z")
	r.Header.Set("X-Gust-Attempt", "2")
	got, ok := Event(r)
	want := CloudEvent{ID: "e1", Source: "nats://gust/orders.created", Type: "io.gust.nats.message", Subject: "orders.created",
		Time: time.Date(2026, 11, 27, 10, 0, 0, 5e8, time.UTC), SpecVersion: "1.0", Attempt: 2}
	if !ok || got != want {
		t.Errorf("Event = %+v, %v; want %+v", got, ok, want)
	}
}
