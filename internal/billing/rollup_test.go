package billing

import (
	"reflect"
	"testing"
	"time"
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
