package billing

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

func TestBucket(t *testing.T) {
	for _, tt := range []struct{ ns, w, want int64 }{
		{0, HourNs, 0},
		{HourNs - 1, HourNs, 0},
		{HourNs, HourNs, HourNs},
		{-1, HourNs, -HourNs},
		{-HourNs, HourNs, -HourNs},
		{DayNs + 5, DayNs, DayNs},
	} {
		if got := Bucket(tt.ns, tt.w); got != tt.want {
			t.Errorf("Bucket(%d, %d) = %d, want %d", tt.ns, tt.w, got, tt.want)
		}
	}
}

func TestSpans(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ns := func(s string) int64 { return at(s).UnixNano() }
	tests := []struct {
		name     string
		from, to string
		days     bool
		want     []Span
	}{
		{"open", "", "", true, []Span{{Days, OpenFrom, OpenTo}}},
		{"open by hour", "", "", false, []Span{{Hours, OpenFrom, OpenTo}}},
		{"empty", "2024-02-01T05:00:00Z", "2024-02-01T05:00:00Z", true, nil},
		{"reversed", "2024-02-02T00:00:00Z", "2024-02-01T00:00:00Z", true, nil},
		{"inside one hour", "2024-02-01T05:10:00Z", "2024-02-01T05:50:00Z", true,
			[]Span{{Raw, ns("2024-02-01T05:10:00Z"), ns("2024-02-01T05:50:00Z")}}},
		{"whole hours", "2024-02-01T05:00:00Z", "2024-02-01T07:00:00Z", true,
			[]Span{{Hours, ns("2024-02-01T05:00:00Z"), ns("2024-02-01T07:00:00Z")}}},
		{"hours with edges", "2024-02-01T05:00:00.000000001Z", "2024-02-01T08:30:00Z", true, []Span{
			{Raw, ns("2024-02-01T05:00:00.000000001Z"), ns("2024-02-01T06:00:00Z")},
			{Hours, ns("2024-02-01T06:00:00Z"), ns("2024-02-01T08:00:00Z")},
			{Raw, ns("2024-02-01T08:00:00Z"), ns("2024-02-01T08:30:00Z")},
		}},
		{"month with edges", "2024-01-31T22:15:00Z", "2024-03-01T01:10:00Z", true, []Span{
			{Raw, ns("2024-01-31T22:15:00Z"), ns("2024-01-31T23:00:00Z")},
			{Hours, ns("2024-01-31T23:00:00Z"), ns("2024-02-01T00:00:00Z")},
			{Days, ns("2024-02-01T00:00:00Z"), ns("2024-03-01T00:00:00Z")},
			{Hours, ns("2024-03-01T00:00:00Z"), ns("2024-03-01T01:00:00Z")},
			{Raw, ns("2024-03-01T01:00:00Z"), ns("2024-03-01T01:10:00Z")},
		}},
		{"month by hour", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", false,
			[]Span{{Hours, ns("2024-02-01T00:00:00Z"), ns("2024-03-01T00:00:00Z")}}},
		{"from only", "2024-02-01T00:30:00Z", "", true, []Span{
			{Raw, ns("2024-02-01T00:30:00Z"), ns("2024-02-01T01:00:00Z")},
			{Hours, ns("2024-02-01T01:00:00Z"), ns("2024-02-02T00:00:00Z")},
			{Days, ns("2024-02-02T00:00:00Z"), OpenTo},
		}},
		{"to only", "", "2024-02-01T00:30:00Z", true, []Span{
			{Days, OpenFrom, ns("2024-02-01T00:00:00Z")},
			{Raw, ns("2024-02-01T00:00:00Z"), ns("2024-02-01T00:30:00Z")},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var from, to time.Time
			if tt.from != "" {
				from = at(tt.from)
			}
			if tt.to != "" {
				to = at(tt.to)
			}
			if got := Spans(from, to, tt.days); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Spans = %+v\nwant    %+v", got, tt.want)
			}
		})
	}
}

// TestPausedNs: the paused part of an instance's held time is its
// PausedMs, none if negative, and never more than the time it held, also
// for counts that would overflow in nanoseconds.
func TestPausedNs(t *testing.T) {
	ready := time.Date(2024, 2, 1, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name     string
		stopped  time.Time
		pausedMs int64
		held     int64
		paused   int64
	}{
		{"none", ready.Add(time.Minute), 0, int64(time.Minute), 0},
		{"part", ready.Add(time.Minute), 45_250, int64(time.Minute), int64(45250 * time.Millisecond)},
		{"all", ready.Add(time.Minute), 60_000, int64(time.Minute), int64(time.Minute)},
		{"more than held", ready.Add(time.Minute + 500*time.Microsecond), 60_001, int64(time.Minute + 500*time.Microsecond),
			int64(time.Minute + 500*time.Microsecond)},
		{"negative", ready.Add(time.Minute), -5, int64(time.Minute), 0},
		{"overflowing", ready.Add(time.Minute), math.MaxInt64, int64(time.Minute), int64(time.Minute)},
		{"stopped before ready", ready.Add(-time.Second), 500, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := gust.InstanceRecord{Ready: ready, Stopped: tt.stopped, PausedMs: tt.pausedMs}
			if got := HeldNs(&r); got != tt.held {
				t.Errorf("HeldNs = %d, want %d", got, tt.held)
			}
			if got := PausedNs(&r); got != tt.paused {
				t.Errorf("PausedNs = %d, want %d", got, tt.paused)
			}
		})
	}
}

// TestRollInstances: instances sum per hour of their ready time,
// function and memory, with their held and paused times.
func TestRollInstances(t *testing.T) {
	h := time.Date(2024, 2, 1, 10, 0, 0, 0, time.UTC)
	rec := func(id string, ready time.Time, held time.Duration, pausedMs int64) gust.InstanceRecord {
		return gust.InstanceRecord{Instance: id, Namespace: "a", Function: "f", Worker: "w1", MemoryMiB: 128,
			Ready: ready, Stopped: ready.Add(held), PausedMs: pausedMs}
	}
	got := RollInstances([]gust.InstanceRecord{
		rec("i1", h.Add(time.Minute), 10*time.Minute, 240_000),
		rec("i2", h.Add(59*time.Minute), 2*time.Hour, 0),
		rec("i3", h.Add(time.Hour), time.Minute, 90_000), // paused longer than held: counts the held minute
	})
	key := func(start time.Time) InstanceRollupKey {
		return InstanceRollupKey{StartNs: start.UnixNano(), Namespace: "a", Function: "f", MemoryMiB: 128}
	}
	want := map[InstanceRollupKey]*InstanceRollup{
		key(h):                {Instances: 2, HeldNs: int64(2*time.Hour + 10*time.Minute), PausedNs: int64(4 * time.Minute)},
		key(h.Add(time.Hour)): {Instances: 1, HeldNs: int64(time.Minute), PausedNs: int64(time.Minute)},
	}
	if !reflect.DeepEqual(got, want) {
		for k, v := range got {
			t.Logf("got %+v: %+v", k, *v)
		}
		t.Errorf("RollInstances differs from %+v", want)
	}
}
