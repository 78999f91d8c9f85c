// Package autoscale decides how many instances a function's pool wants,
// from what the pool measures over time. It is the one place where
// autoscaling targets and windows live (DESIGN.md, section 2): the worker's
// pool feeds it a Sample per tick and follows its answer; the scheduler
// reads that answer from the pool's status to widen a placement. It does
// no I/O and reads no clock: time comes in with every sample, so tests run
// on synthetic time.
//
// Two rules:
//
//   - With a scale type (com.openfaas.scale.type: capacity, rps or cpu), as
//     OpenFaaS Pro names them and Knative's KPA decides: the demand per
//     instance is compared with target × target-proportion. Over the stable
//     window (60 s) the average demand scales up; over the panic window
//     (6 s) a burst whose demand is at least twice the ready capacity scales
//     up at once, and nothing scales down while panicking (until a stable
//     window has passed without such a burst). Scaling down waits until the
//     demand has been lower for a whole stable window.
//   - Without one, OpenFaaS Community Edition's rule: a rate above 5
//     calls per second (over 10 s) for 5 s adds com.openfaas.scale.factor
//     percent of max (at least one instance), again every 10 s while it
//     lasts; 30 s below it, the pool goes back to its minimum.
//
// The answer is always within [max(Min, 1), Max] while the function is
// awake. Zero is not the decider's to choose: the pool goes to zero after
// its idle timeout (com.openfaas.scale.zero-duration) or on an order of 0
// (scale-function), and the decider sleeps (answers 0) until a call comes.
// The decider never stops anything itself: the pool stops only instances
// without a call in flight.
package autoscale

import (
	"math"
	"time"
)

// Scale types (com.openfaas.scale.type).
const (
	TypeCapacity = "capacity" // calls in flight per instance
	TypeRPS      = "rps"      // calls begun per second per instance
	TypeCPU      = "cpu"      // CPU millicores per instance
)

// OrderFresh reports whether a scale-function order given at at still
// holds at now: for a stable window, after which the decider has acted on
// it.
func OrderFresh(at, now time.Time) bool { return now.Sub(at) < StableWindow }

// Windows and thresholds.
const (
	// StableWindow is Knative's stable window: the average that scales,
	// and how long a lower demand must last before scaling down.
	StableWindow = 60 * time.Second
	// PanicWindow is Knative's panic window (10% of the stable window).
	PanicWindow = 6 * time.Second
	// PanicThreshold is Knative's: a panic-window demand at least twice
	// the ready capacity panics.
	PanicThreshold = 2.0
	// DefaultProportion is OpenFaaS Pro's com.openfaas.scale.target-proportion.
	DefaultProportion = 0.9
	// DefaultFactor is OpenFaaS's com.openfaas.scale.factor (percent of max).
	DefaultFactor = 20
	// DefaultTarget is OpenFaaS Pro's com.openfaas.scale.target.
	DefaultTarget = 50

	// CERate is the rate (calls per second) above which OpenFaaS CE's
	// alert (APIHighInvocationRate) fires.
	CERate = 5.0
	// CERateWindow is the window of that rate (rate(...[10s])).
	CERateWindow = 10 * time.Second
	// CEFor is how long the rate must stay above CERate (the alert's
	// "for: 5s").
	CEFor = 5 * time.Second
	// CERepeat is how often a firing alert scales up again.
	CERepeat = 10 * time.Second
	// CEResolve is how long the rate must stay at or below CERate before
	// the pool goes back to its minimum.
	CEResolve = 30 * time.Second
)

// Policy is what a function's labels say about its autoscaling, with Min
// and Max being this pool's share.
type Policy struct {
	Type       string  // "", TypeCapacity, TypeRPS or TypeCPU
	Target     float64 // per instance; DefaultTarget when 0
	Proportion float64 // DefaultProportion when 0
	Factor     int     // percent of Max per step of the CE rule
	Min, Max   int
	// Window is the stable window (gust.scale.window, as Knative's
	// autoscaling.knative.dev/window); StableWindow when 0. The panic
	// window is a tenth of it.
	Window time.Duration
	// Concurrency is gust.concurrency, the hard limit per instance:
	// whatever the rule, the pool does not go below what the calls in
	// flight over the stable window fill at that limit, so that a slow
	// function is not cut down between its calls only to start again.
	Concurrency int
}

// Sample is what a pool measures at one moment.
type Sample struct {
	At time.Time
	// InFlight is the calls running plus the calls waiting for a slot.
	InFlight int
	// Calls counts the calls begun so far (a counter that only grows).
	Calls uint64
	// CPU is the millicores the pool's instances use at At; negative
	// when the runtime does not measure it.
	CPU float64
	// Ready is the instances ready to take calls.
	Ready int
}

// rec is a recommendation made at one time.
type rec struct {
	at time.Time
	n  int
}

// Decider keeps one pool's history and answers how many instances it
// wants. It is not safe for concurrent use: the pool calls it under its
// lock.
type Decider struct {
	p       Policy
	samples []Sample // within StableWindow, oldest first
	recs    []rec    // within StableWindow, oldest first
	desired int
	asleep  bool
	// sleepCalls is Calls when it went to sleep: a later call wakes it.
	sleepCalls uint64
	panicUntil time.Time
	// CE rule.
	aboveSince, belowSince, lastStep time.Time
}

// New returns a decider that wants current instances.
func New(p Policy, current int) *Decider {
	d := &Decider{p: p}
	d.desired = d.clamp(current)
	return d
}

// stable is the policy's stable window.
func (d *Decider) stable() time.Duration {
	if d.p.Window > 0 {
		return d.p.Window
	}
	return StableWindow
}

// panicWindow is a tenth of the stable window, as Knative's default.
func (d *Decider) panicWindow() time.Duration { return d.stable() / 10 }

// SetPolicy applies new labels or a new share; history is kept.
func (d *Decider) SetPolicy(p Policy) {
	d.p = p
	if !d.asleep {
		d.desired = d.clamp(d.desired)
	}
}

// Policy returns the policy in force.
func (d *Decider) Policy() Policy { return d.p }

func (d *Decider) floor() int { return min(max(d.p.Min, 1), max(d.p.Max, 1)) }

func (d *Decider) clamp(n int) int { return min(max(n, d.floor()), max(d.p.Max, 1)) }

// Desired is the last answer: how many instances the pool wants.
func (d *Decider) Desired() int {
	if d.asleep {
		return 0
	}
	return d.desired
}

// Asleep reports whether the pool is at zero, waiting for a call.
func (d *Decider) Asleep() bool { return d.asleep }

// Set is an order (scale-function): want n instances from now. Scaling
// down from n waits a stable window; load may scale up at once. n = 0
// puts the pool to sleep until a call comes.
func (d *Decider) Set(now time.Time, n int, calls uint64) {
	d.panicUntil = time.Time{}
	d.aboveSince, d.belowSince, d.lastStep = time.Time{}, time.Time{}, time.Time{}
	if n <= 0 {
		d.sleep(calls)
		return
	}
	d.asleep = false
	d.desired = min(max(n, 0), max(d.p.Max, 1))
	d.recs = append(d.recs[:0], rec{now, d.desired})
}

// Lower records that the pool went down to n by itself (instances idle
// past the idle timeout): the decider follows rather than start them
// again. n = 0 puts it to sleep.
func (d *Decider) Lower(now time.Time, n int, calls uint64) {
	if n <= 0 {
		d.sleep(calls)
		return
	}
	if n < d.desired {
		d.desired = d.clamp(n)
		d.recs = append(d.recs[:0], rec{now, d.desired})
	}
}

// Raise records that the pool went up to n by itself (every slot was
// taken and calls waited: gust.concurrency is the hard limit): scaling
// down from there waits a stable window.
func (d *Decider) Raise(now time.Time, n int) {
	d.asleep = false
	if n > d.desired {
		d.desired = min(n, max(d.p.Max, 1))
		d.recs = append(d.recs, rec{now, d.desired})
	}
}

func (d *Decider) sleep(calls uint64) {
	d.asleep, d.sleepCalls = true, calls
	d.desired = 0
	d.recs = d.recs[:0]
}

// Observe adds a sample and returns how many instances the pool wants,
// and how many it would want without its Max (the scheduler widens a
// placement whose pools want more than they may hold).
func (d *Decider) Observe(s Sample) (desired, want int) {
	d.samples = append(d.samples, s)
	d.trim(s.At)
	if d.asleep {
		if s.Calls == d.sleepCalls {
			return 0, 0
		}
		// A call came: awake, at the floor, from now.
		d.asleep = false
		d.desired = d.floor()
		d.recs = append(d.recs[:0], rec{s.At, d.desired})
	}
	if d.p.Type == "" {
		want = d.observeCE(s)
	} else {
		want = d.observeTarget(s)
	}
	return d.desired, want
}

// trim drops what is older than the stable window.
func (d *Decider) trim(now time.Time) {
	cut := now.Add(-d.stable())
	i := 0
	for i < len(d.samples)-1 && d.samples[i].At.Before(cut) {
		i++
	}
	d.samples = d.samples[i:]
	j := 0
	for j < len(d.recs) && d.recs[j].at.Before(cut) {
		j++
	}
	d.recs = d.recs[j:]
}

// metric is the demand over the window ending at now: calls in flight
// (average), calls per second, or millicores (average).
func (d *Decider) metric(now time.Time, window time.Duration) float64 {
	return d.metricOf(d.p.Type, now, window)
}

// need is the instances the calls in flight over the stable window fill
// at gust.concurrency.
func (d *Decider) need(now time.Time) int {
	if d.p.Concurrency <= 0 {
		return 0
	}
	return int(math.Ceil(d.metricOf(TypeCapacity, now, d.stable()) / float64(d.p.Concurrency)))
}

func (d *Decider) metricOf(typ string, now time.Time, window time.Duration) float64 {
	cut := now.Add(-window)
	first := len(d.samples) - 1
	for first > 0 && !d.samples[first-1].At.Before(cut) {
		first--
	}
	ss := d.samples[first:]
	switch typ {
	case TypeRPS, "":
		if first > 0 {
			// The sample just before the window starts the count.
			ss = d.samples[first-1:]
		}
		el := ss[len(ss)-1].At.Sub(ss[0].At).Seconds()
		if el <= 0 {
			return 0
		}
		return float64(ss[len(ss)-1].Calls-ss[0].Calls) / el
	case TypeCPU:
		sum, n := 0.0, 0
		for _, s := range ss {
			if s.CPU >= 0 {
				sum += s.CPU
				n++
			}
		}
		if n == 0 {
			return 0
		}
		return sum / float64(n)
	default: // TypeCapacity
		sum := 0
		for _, s := range ss {
			sum += s.InFlight
		}
		return float64(sum) / float64(len(ss))
	}
}

// perInstance is what one instance should carry: target × proportion.
func (d *Decider) perInstance() float64 { return d.p.PerInstance() }

// PerInstance is what one instance should carry under the policy, in the
// unit of its type: target × proportion, with their defaults.
func (p Policy) PerInstance() float64 {
	return orDefault(p.Target, DefaultTarget) * p.ProportionOrDefault()
}

// ProportionOrDefault is the policy's proportion, DefaultProportion when
// unset.
func (p Policy) ProportionOrDefault() float64 { return orDefault(p.Proportion, DefaultProportion) }

func orDefault(v, def float64) float64 {
	if v <= 0 {
		return def
	}
	return v
}

func (d *Decider) observeTarget(s Sample) int {
	per := d.perInstance()
	stable := int(math.Ceil(d.metric(s.At, d.stable()) / per))
	panicWant := int(math.Ceil(d.metric(s.At, d.panicWindow()) / per))
	if float64(panicWant) >= PanicThreshold*float64(max(s.Ready, 1)) && panicWant > s.Ready {
		// A burst: panic from now until a stable window passes
		// without another.
		d.panicUntil = s.At.Add(d.stable())
	}
	want := stable
	panicking := s.At.Before(d.panicUntil)
	if panicking {
		want = max(stable, panicWant)
	}
	// What the recent (panic-window) demand asks for, kept a stable
	// window: scaling down goes to the largest of them, so only once the
	// demand has been lower for a whole stable window.
	need := d.need(s.At)
	d.recs = append(d.recs, rec{s.At, d.clamp(max(panicWant, need))})
	switch n := d.clamp(max(want, need)); {
	case n > d.desired:
		d.desired = n
	case n < d.desired && !panicking:
		hold := n
		for _, r := range d.recs {
			hold = max(hold, r.n)
		}
		d.desired = min(d.desired, hold)
	}
	return max(want, d.desired)
}

func (d *Decider) observeCE(s Sample) int {
	rate := d.metric(s.At, CERateWindow)
	if rate > CERate {
		d.belowSince = time.Time{}
		if d.aboveSince.IsZero() {
			d.aboveSince = s.At
		}
		if s.At.Sub(d.aboveSince) >= CEFor && (d.lastStep.IsZero() || s.At.Sub(d.lastStep) >= CERepeat) && d.p.Factor > 0 {
			d.lastStep = s.At
			step := max(1, int(math.Ceil(float64(d.p.Max)*float64(d.p.Factor)/100)))
			want := d.desired + step
			d.desired = d.clamp(want)
			return want
		}
		return d.desired
	}
	d.aboveSince, d.lastStep = time.Time{}, time.Time{}
	if d.belowSince.IsZero() {
		d.belowSince = s.At
	}
	if s.At.Sub(d.belowSince) >= CEResolve {
		d.desired = min(d.desired, d.clamp(d.need(s.At)))
	}
	return d.desired
}
