package worker

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// deadlineOnly is a context whose deadline has passed but whose timer has
// not fired yet: what a call sees when its function drops the connection
// exactly at the deadline it was told.
type deadlineOnly struct {
	context.Context
	at time.Time
}

func (c deadlineOnly) Deadline() (time.Time, bool) { return c.at, true }

// TestTimedOut checks that a call whose deadline has passed is a timeout
// even before its context says so (TestBadInput/Timeout in cmd/gust got a
// 502 for a function that drops the connection at its deadline).
func TestTimedOut(t *testing.T) {
	past := deadlineOnly{context.Background(), time.Now().Add(-time.Millisecond)}
	if !timedOut(past) {
		t.Error("timedOut = false for a call past its deadline whose context has not ended yet")
	}
	future := deadlineOnly{context.Background(), time.Now().Add(time.Hour)}
	if timedOut(future) {
		t.Error("timedOut = true before the deadline")
	}
	if timedOut(context.Background()) {
		t.Error("timedOut = true for a call without a deadline")
	}
	ended, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	<-ended.Done()
	if !timedOut(ended) {
		t.Error("timedOut = false for an ended deadline")
	}
}

// TestAppendSeconds: durations as seconds with nine decimals, as
// strconv's float formatting wrote them for every duration a call has.
func TestAppendSeconds(t *testing.T) {
	for _, ns := range []int64{0, 1, 999, 1000, 123456789, 999999999, 1e9, 1e9 + 1, 61e9 + 500, 3600e9 + 123, 86400e9 * 3, -1, -1500000000} {
		got := string(appendSeconds(nil, ns))
		want := strconv.FormatFloat(float64(ns)/1e9, 'f', 9, 64)
		if got != want {
			t.Errorf("appendSeconds(%d) = %q, want %q", ns, got, want)
		}
	}
}
