package gust

import (
	"testing"
	"time"
)

// fakeLink is the connection state a test sets.
type fakeLink struct {
	up         bool
	reconnects uint64
}

func (l *fakeLink) LinkState() (bool, uint64) { return l.up, l.reconnects }

func TestLiveness(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	now := t0
	link := &fakeLink{up: true}
	l := NewLiveness(link)
	l.now = func() time.Time { return now }
	const timeout = 5 * time.Second

	if !l.Silent("w1", timeout) {
		t.Fatal("a worker never heard is not silent")
	}
	l.Heard("w1", t0)
	if l.Silent("w1", timeout) {
		t.Fatal("a worker heard just now is silent")
	}
	now = t0.Add(6 * time.Second)
	if !l.Silent("w1", timeout) {
		t.Fatal("a worker unheard for 6s (timeout 5s) is not silent")
	}

	// An older receipt does not move the last one back.
	l.Heard("w1", now)
	l.Heard("w1", t0)
	if l.Silent("w1", timeout) {
		t.Fatal("an older heartbeat made the worker silent")
	}

	// While the link is down nobody is judged: the last view holds.
	link.up = false
	now = now.Add(time.Minute)
	if l.Silent("w1", timeout) {
		t.Fatal("a worker was judged silent while this process could not hear it")
	}
	// Back up: silence counts from when the link came back.
	link.up, link.reconnects = true, 1
	if l.Silent("w1", timeout) {
		t.Fatal("a worker was judged silent right after the link came back")
	}
	now = now.Add(4 * time.Second)
	if l.Silent("w1", timeout) {
		t.Fatal("a worker was judged silent 4s after the link came back (timeout 5s)")
	}
	now = now.Add(2 * time.Second)
	if !l.Silent("w1", timeout) {
		t.Fatal("a worker unheard for 6s after the link came back is not silent")
	}

	l.Forget("w1")
	l.Heard("w2", now)
	if !l.Silent("w1", timeout) || l.Silent("w2", timeout) {
		t.Fatal("Forget: w1 should be silent, w2 alive")
	}
}

func TestLiveness_NoLink(t *testing.T) {
	now := time.Now()
	l := NewLiveness(nil)
	l.now = func() time.Time { return now }
	l.Heard("w1", now.Add(-10*time.Second))
	if !l.Silent("w1", 5*time.Second) {
		t.Fatal("with no link to read, a worker unheard for 10s is not silent")
	}
}
