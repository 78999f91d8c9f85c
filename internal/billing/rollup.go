package billing

import (
	"math"
	"time"

	"github.com/gustfaas/gust"
)

// Rollups are per-hour and per-day sums of call records per namespace,
// function, outcome and memory size, and per-hour sums of instance
// records per namespace, function and memory size. A billing store keeps
// them beside the raw records, in the transaction that inserts those,
// and only for the records it really inserted, so that a report over
// whole hours or days reads a few rows per function instead of every
// call. This file holds what every store shares: the buckets, the sums
// of a batch, and how a report's range splits between raw records and
// rollups.

// Rollup bucket widths. UTC days are whole multiples of an hour from the
// Unix epoch (Unix time has no leap seconds), so an hour bucket lies in
// exactly one day bucket and both agree with UTC calendar hours, days
// and months.
const (
	HourNs = int64(time.Hour)
	DayNs  = 24 * HourNs
)

// Bucket returns the start of the bucket of width w that holds ns:
// floor(ns / w) × w, also for instants before 1970.
func Bucket(ns, w int64) int64 {
	r := ns % w
	if r < 0 {
		r += w
	}
	return ns - r
}

// CallRollupKey identifies one rollup row of calls: the bucket's start
// (Unix ns), and the call's namespace, function, outcome and memory.
type CallRollupKey struct {
	StartNs   int64
	Namespace string
	Function  string
	Outcome   string
	MemoryMiB int64
}

// CallRollup is the sums of one rollup row. Errors are not a sum of their
// own: they are the requests of the rows whose outcome is not ok.
type CallRollup struct {
	Requests   int64
	ColdStarts int64
	DurationNs int64
	BilledNs   int64
	// MiBMicros is Σ memory MiB × (billed ns / 1000), as UsageRow's.
	MiBMicros int64
}

// RollCalls sums recs into rollup rows of bucket width w.
func RollCalls(recs []gust.CallRecord, w int64) map[CallRollupKey]*CallRollup {
	out := make(map[CallRollupKey]*CallRollup)
	for i := range recs {
		r := &recs[i]
		k := CallRollupKey{StartNs: Bucket(unixNano(r.Start), w), Namespace: r.Namespace,
			Function: r.Function, Outcome: r.Outcome, MemoryMiB: r.MemoryMiB}
		sum := out[k]
		if sum == nil {
			sum = &CallRollup{}
			out[k] = sum
		}
		sum.Requests++
		if r.ColdStart {
			sum.ColdStarts++
		}
		sum.DurationNs += r.DurationNs
		sum.BilledNs += r.BilledNs
		sum.MiBMicros += r.MemoryMiB * (r.BilledNs / 1000)
	}
	return out
}

// InstanceRollupKey identifies one hourly rollup row of instances: the
// hour of their ready time, namespace, function and memory.
type InstanceRollupKey struct {
	StartNs   int64
	Namespace string
	Function  string
	MemoryMiB int64
}

// InstanceRollup is the sums of one instance rollup row.
type InstanceRollup struct {
	Instances int64
	// HeldNs is Σ HeldNs(record).
	HeldNs int64
	// PausedNs is Σ PausedNs(record): the part of HeldNs spent paused.
	PausedNs int64
}

// HeldNs is the time r held its instance: max(stopped - ready, 0), as a
// record whose stop precedes its ready time (clock step) holds nothing.
func HeldNs(r *gust.InstanceRecord) int64 {
	return max(unixNano(r.Stopped)-unixNano(r.Ready), 0)
}

// PausedNs is the part of HeldNs(r) that r spent paused, in nanoseconds:
// r.PausedMs, none if negative, and at most the held time, so that the
// active part (held - paused) is never negative when the pause count and
// the ready and stop times disagree (a clock step, a bad record). The
// comparison comes before the multiplication, so that no PausedMs
// overflows. The stores' SQL over raw records computes the same.
func PausedNs(r *gust.InstanceRecord) int64 {
	held := HeldNs(r)
	switch {
	case r.PausedMs <= 0:
		return 0
	case r.PausedMs > held/int64(time.Millisecond):
		return held
	}
	return r.PausedMs * int64(time.Millisecond)
}

// RollInstances sums recs into hourly rollup rows.
func RollInstances(recs []gust.InstanceRecord) map[InstanceRollupKey]*InstanceRollup {
	out := make(map[InstanceRollupKey]*InstanceRollup)
	for i := range recs {
		r := &recs[i]
		k := InstanceRollupKey{StartNs: Bucket(unixNano(r.Ready), HourNs), Namespace: r.Namespace,
			Function: r.Function, MemoryMiB: r.MemoryMiB}
		sum := out[k]
		if sum == nil {
			sum = &InstanceRollup{}
			out[k] = sum
		}
		sum.Instances++
		sum.HeldNs += HeldNs(r)
		sum.PausedNs += PausedNs(r)
	}
	return out
}

// Source is where a report reads one part of its range.
type Source int

// Sources of a report's parts.
const (
	Raw   Source = iota // the records themselves
	Hours               // hourly rollups
	Days                // daily rollups
)

// Open ends of a Span.
const (
	OpenFrom = math.MinInt64
	OpenTo   = math.MaxInt64
)

// Span is one part [From, To) of a report's range (Unix ns; OpenFrom and
// OpenTo for no bound) and the source that answers it. A rollup span's
// bounds are multiples of its bucket width (or open), so every bucket it
// reads lies wholly inside the report's range.
type Span struct {
	Source   Source
	From, To int64
}

// Spans splits the range [from, to) of start times (zero: open) into the
// fewest parts that rollups answer: whole days from daily rollups (if
// days), the whole hours around them from hourly rollups, and the partial
// hours at either edge from raw records. A report grouped by hour reads
// no daily rollups, which cannot tell the hours apart.
func Spans(from, to time.Time, days bool) []Span {
	lo, hi := int64(OpenFrom), int64(OpenTo)
	if !from.IsZero() {
		lo = from.UnixNano()
	}
	if !to.IsZero() {
		hi = to.UnixNano()
	}
	if lo >= hi {
		return nil
	}
	var out []Span
	if days {
		dLo, dHi := ceilTo(lo, DayNs), floorTo(hi, DayNs)
		if dLo < dHi {
			out = append(out, hourSpans(lo, dLo)...)
			out = append(out, Span{Days, dLo, dHi})
			return append(out, hourSpans(dHi, hi)...)
		}
	}
	return hourSpans(lo, hi)
}

// Pruned adapts spans to a store whose call records before rawFrom (an
// hour's start; 0: none pruned) are gone: the part of a raw span below
// rawFrom is read from the hourly rollups of the hours it touches, which
// counts those partial hours whole. Rollup spans are unchanged.
func Pruned(spans []Span, rawFrom int64) []Span {
	if rawFrom == 0 {
		return spans
	}
	var out []Span
	for _, sp := range spans {
		if sp.Source != Raw || sp.From >= rawFrom {
			out = append(out, sp)
			continue
		}
		cut := min(sp.To, rawFrom)
		out = append(out, Span{Hours, floorTo(sp.From, HourNs), ceilTo(cut, HourNs)})
		if cut < sp.To {
			out = append(out, Span{Raw, cut, sp.To})
		}
	}
	return out
}

// hourSpans splits [lo, hi) into whole hours and the raw edges around
// them; an empty range gives nothing.
func hourSpans(lo, hi int64) []Span {
	if lo >= hi {
		return nil
	}
	hLo, hHi := ceilTo(lo, HourNs), floorTo(hi, HourNs)
	if hLo >= hHi {
		return []Span{{Raw, lo, hi}}
	}
	var out []Span
	if lo < hLo {
		out = append(out, Span{Raw, lo, hLo})
	}
	out = append(out, Span{Hours, hLo, hHi})
	if hHi < hi {
		out = append(out, Span{Raw, hHi, hi})
	}
	return out
}

// floorTo and ceilTo round ns to a multiple of w, leaving open ends open.
func floorTo(ns, w int64) int64 {
	if ns == OpenFrom || ns == OpenTo {
		return ns
	}
	return Bucket(ns, w)
}

func ceilTo(ns, w int64) int64 {
	if ns == OpenFrom || ns == OpenTo {
		return ns
	}
	b := Bucket(ns, w)
	if b == ns {
		return ns
	}
	return b + w
}

// unixNano is a time as stored: Unix nanoseconds, the zero time 0.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
