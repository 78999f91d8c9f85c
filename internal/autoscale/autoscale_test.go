package autoscale

import (
	"testing"
	"time"
)

// sim drives a decider on synthetic time: one sample per tick, with the
// pool following the decider's answer at once (Ready = desired).
type sim struct {
	t     *testing.T
	d     *Decider
	now   time.Time
	calls uint64
	ready int
	tick  time.Duration
}

func newSim(t *testing.T, p Policy, ready int) *sim {
	return &sim{t: t, d: New(p, ready), now: time.Unix(1_700_000_000, 0), ready: ready, tick: 250 * time.Millisecond}
}

// run advances dur with rps calls begun per second and inflight calls in
// flight (and cpu millicores), and returns the desired count after each
// whole second.
func (s *sim) run(dur time.Duration, rps float64, inflight int, cpu float64) []int {
	var out []int
	acc := 0.0
	for el := time.Duration(0); el < dur; el += s.tick {
		s.now = s.now.Add(s.tick)
		acc += rps * s.tick.Seconds()
		for acc >= 1 {
			s.calls++
			acc--
		}
		n, _ := s.d.Observe(Sample{At: s.now, InFlight: inflight, Calls: s.calls, CPU: cpu, Ready: s.ready})
		s.ready = n
		if (el+s.tick)%time.Second == 0 {
			out = append(out, n)
		}
	}
	return out
}

// firstAt is the first second at which the series reaches want (-1: never).
func firstAt(series []int, want int) int {
	for i, n := range series {
		if n == want {
			return i + 1
		}
	}
	return -1
}

func TestCE_SteadyRateScalesUpAndBack(t *testing.T) {
	// 5-10 calls per second, max 2: two instances within a minute, back
	// to the minimum within a minute after the load stops.
	s := newSim(t, Policy{Factor: DefaultFactor, Min: 0, Max: 2, Concurrency: 100}, 1)
	up := s.run(60*time.Second, 8, 1, -1)
	if at := firstAt(up, 2); at < 0 || at > 60 {
		t.Fatalf("under 8 rps: got %v, want 2 within 60 s", up)
	}
	if at := firstAt(up, 2); at < int(CEFor/time.Second) {
		t.Errorf("scaled up after %d s, want not before the alert's %s", at, CEFor)
	}
	if got := s.run(5*time.Second, 8, 1, -1); got[len(got)-1] != 2 {
		t.Errorf("still under load: got %v, want 2 (max)", got)
	}
	down := s.run(60*time.Second, 0, 0, -1)
	if at := firstAt(down, 1); at < 0 || at > 60 {
		t.Fatalf("after the load: got %v, want back to 1 within 60 s", down)
	}
}

func TestCE_BelowRateStays(t *testing.T) {
	s := newSim(t, Policy{Factor: DefaultFactor, Max: 10, Concurrency: 100}, 1)
	if got := s.run(60*time.Second, 4, 1, -1); got[len(got)-1] != 1 {
		t.Errorf("at 4 rps: got %v, want 1 (at most 5 rps does not scale)", got)
	}
}

func TestCE_FactorStep(t *testing.T) {
	// Factor 20 of max 10: 2 instances a step, every CERepeat.
	s := newSim(t, Policy{Factor: 20, Max: 10, Concurrency: 100}, 1)
	got := s.run(30*time.Second, 20, 1, -1)
	if firstAt(got, 3) < 0 || firstAt(got, 5) < 0 || firstAt(got, 2) >= 0 {
		t.Errorf("at 20 rps: got %v, want steps of 2 (1, 3, 5, ...)", got)
	}
	// Factor 0: the rate never scales.
	s = newSim(t, Policy{Factor: 0, Max: 10, Concurrency: 100}, 1)
	if got := s.run(30*time.Second, 20, 1, -1); got[len(got)-1] != 1 {
		t.Errorf("factor 0: got %v, want 1", got)
	}
}

func TestRPS_TargetAndStableWindow(t *testing.T) {
	// 25 calls/s against target 10 × 0.9 per instance: 3 instances. Down
	// only once a whole stable window has been lower.
	s := newSim(t, Policy{Type: TypeRPS, Target: 10, Proportion: 0.9, Max: 10, Concurrency: 100}, 3)
	up := s.run(60*time.Second, 25, 1, -1)
	if got := up[len(up)-1]; got != 3 {
		t.Fatalf("at 25 rps: got %v, want 3", up)
	}
	down := s.run(80*time.Second, 0, 0, -1)
	at := firstAt(down, 1)
	if at < 0 {
		t.Fatalf("after the load: got %v, want back to 1", down)
	}
	if at < int(StableWindow/time.Second) {
		t.Errorf("scaled down after %d s, want not before the stable window (%s): %v", at, StableWindow, down)
	}
	if at > int((StableWindow+PanicWindow)/time.Second)+1 {
		t.Errorf("scaled down after %d s, want within stable + panic window: %v", at, down)
	}
}

func TestWindow(t *testing.T) {
	// A stable window of 20 s (gust.scale.window): down 20 s after the
	// load, not 60; the panic window is 2 s.
	s := newSim(t, Policy{Type: TypeRPS, Target: 10, Proportion: 0.9, Max: 10, Concurrency: 100, Window: 20 * time.Second}, 3)
	s.run(30*time.Second, 25, 1, -1)
	down := s.run(40*time.Second, 0, 0, -1)
	if at := firstAt(down, 1); at < 20 || at > 23 {
		t.Errorf("after the load: back to 1 after %d s, want 20-23 s: %v", at, down)
	}
}

func TestCapacity_TargetProportion(t *testing.T) {
	// 9 calls in flight, target 5 × 0.9 = 4.5 per instance: 2 instances;
	// with proportion 0.5 (2.5 per instance): 4.
	for _, tt := range []struct {
		prop float64
		want int
	}{{0.9, 2}, {0.5, 4}, {1, 2}} {
		s := newSim(t, Policy{Type: TypeCapacity, Target: 5, Proportion: tt.prop, Max: 10, Concurrency: 100}, tt.want)
		got := s.run(70*time.Second, 1, 9, -1)
		if got[len(got)-1] != tt.want {
			t.Errorf("proportion %v: got %v, want %d", tt.prop, got, tt.want)
		}
	}
}

func TestCPU_Target(t *testing.T) {
	// 1200 millicores over target 500 × 0.9 per instance: 3 instances.
	s := newSim(t, Policy{Type: TypeCPU, Target: 500, Proportion: 0.9, Max: 10, Concurrency: 100}, 1)
	got := s.run(70*time.Second, 1, 1, 1200)
	if got[len(got)-1] != 3 {
		t.Errorf("at 1200m: got %v, want 3", got)
	}
	// A runtime without CPU figures (negative): no scaling on it.
	s = newSim(t, Policy{Type: TypeCPU, Target: 500, Max: 10, Concurrency: 100}, 1)
	if got := s.run(70*time.Second, 1, 1, -1); got[len(got)-1] != 1 {
		t.Errorf("without CPU figures: got %v, want 1", got)
	}
}

func TestPanic_Burst(t *testing.T) {
	// A burst of 40 in flight against 1 instance of target 10: the stable
	// average alone would take most of a minute; the panic window gets
	// there in seconds, and nothing scales down while it panics.
	p := Policy{Type: TypeCapacity, Target: 10, Proportion: 1, Max: 10, Concurrency: 100}
	s := newSim(t, p, 1)
	s.run(10*time.Second, 0, 0, -1)
	burst := s.run(6*time.Second, 40, 40, -1)
	if at := firstAt(burst, 4); at < 0 || at > int(PanicWindow/time.Second) {
		t.Fatalf("burst: got %v, want 4 within the panic window", burst)
	}
	// The same burst without a panic window would be at the stable
	// average: 40 × 6/16 s ≈ 15 in flight, 2 instances.
	after := s.run(30*time.Second, 0, 0, -1)
	for _, n := range after {
		if n < 4 {
			t.Fatalf("after the burst: got %v, want no scale-down while panicking", after)
		}
	}
	if got := s.run(60*time.Second, 0, 0, -1); got[len(got)-1] != 1 {
		t.Errorf("a stable window after the panic: got %v, want 1", got)
	}
}

func TestBounds(t *testing.T) {
	// Never below min, never above max.
	s := newSim(t, Policy{Type: TypeCapacity, Target: 1, Proportion: 1, Min: 2, Max: 5, Concurrency: 100}, 2)
	for _, n := range s.run(20*time.Second, 100, 100, -1) {
		if n > 5 {
			t.Fatalf("got %d, want at most max 5", n)
		}
	}
	for _, n := range s.run(120*time.Second, 0, 0, -1) {
		if n < 2 {
			t.Fatalf("got %d, want at least min 2", n)
		}
	}
	// Min equal to max: no autoscaling.
	s = newSim(t, Policy{Type: TypeRPS, Target: 1, Min: 3, Max: 3, Concurrency: 100}, 3)
	for _, n := range append(s.run(20*time.Second, 100, 100, -1), s.run(100*time.Second, 0, 0, -1)...) {
		if n != 3 {
			t.Fatalf("min = max = 3: got %d", n)
		}
	}
}

func TestConcurrencyFloor(t *testing.T) {
	// Slow calls that keep 3 instances of concurrency 1 busy at a low rate:
	// the CE rule's return to min stops at what they fill.
	s := newSim(t, Policy{Factor: DefaultFactor, Max: 5, Concurrency: 1}, 1)
	s.d.Raise(s.now, 3)
	if got := s.run(60*time.Second, 1, 3, -1); got[len(got)-1] != 3 {
		t.Errorf("3 slow calls in flight: got %v, want 3 kept", got)
	}
}

func TestOrders(t *testing.T) {
	p := Policy{Type: TypeRPS, Target: 10, Max: 5, Concurrency: 100}
	s := newSim(t, p, 1)
	s.run(5*time.Second, 0, 0, -1)

	// An order of 3 holds for a stable window, then the load decides.
	s.d.Set(s.now, 3, s.calls)
	got := s.run(70*time.Second, 0, 0, -1)
	if got[0] != 3 || got[55] != 3 || got[len(got)-1] != 1 {
		t.Errorf("after an order of 3 without load: got %v, want 3 for a stable window, then 1", got)
	}
	// An order of 0 sleeps until a call comes, however long.
	s.d.Set(s.now, 0, s.calls)
	if got := s.run(120*time.Second, 0, 0, -1); got[len(got)-1] != 0 {
		t.Errorf("after an order of 0: got %v, want 0", got)
	}
	if !s.d.Asleep() {
		t.Errorf("Asleep = false after an order of 0")
	}
	if got := s.run(time.Second, 1, 1, -1); got[0] != 1 {
		t.Errorf("a call after an order of 0: got %v, want 1", got)
	}
	// Above max: max.
	s.d.Set(s.now, 9, s.calls)
	if got := s.d.Desired(); got != 5 {
		t.Errorf("order of 9 with max 5: got %d, want 5", got)
	}
	// The pool went to zero by itself (idle timeout): it stays there.
	s.d.Lower(s.now, 0, s.calls)
	if got := s.run(10*time.Second, 0, 0, -1); got[len(got)-1] != 0 {
		t.Errorf("after Lower(0): got %v, want 0", got)
	}
}
