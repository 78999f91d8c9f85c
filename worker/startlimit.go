package worker

import (
	"context"
	"sync"
	"time"
)

// The start limit (issue 11: a start rate per worker limited by
// measurement rather than by a constant). Past a few starts at once the
// Docker Engine of a small host does no more starts a second, it makes
// each one slower: measured on two cores, 20 starts of containers
// prepared ahead ended after 1.6 s two at a time, 0.9 s four at a time,
// 1.1 s eight at a time and 1.0 s all twenty at once, each start taking
// 0.16, 0.18, 0.43 and 0.91 s. So the worker runs as many starts at once
// as keeps each one near the quickest it has seen, and narrows when they
// slow down: additive increase, multiplicative decrease (AIMD) on the
// Engine's start latency.
//
// A start holds its slot for the Engine's Start only, not for the
// readiness check after it, which does not load the Engine. Starts of a
// prepared container (one Engine call) and fresh ones (create, start and
// more) are compared each with the quickest of their own kind.

// Bounds and steps of the start limit.
const (
	startLimitMin = 1
	startLimitMax = 32
	// startSlow: a start that takes more than this many times the
	// quickest recent start of its kind narrows the limit.
	startSlow = 2.0
	// startNarrow is what the limit is multiplied by when it narrows,
	// at most once per round of starts (starts begun before the last
	// narrowing do not narrow it again).
	startNarrow = 0.75
	// startForget is how fast the quickest recent start is forgotten:
	// each slower start moves it this fraction of the way towards
	// itself, so that a host that has become slower for good is not
	// held to what it once did.
	startForget = 0.02
)

// Kinds of start, each with its own quickest latency.
const (
	startFresh = iota
	startPrepared
	startKinds
)

// startLimit bounds the Engine starts a worker runs at once.
type startLimit struct {
	mu       sync.Mutex
	limit    float64
	inflight int
	waiting  int
	// free is closed (and replaced) when a slot frees or the limit
	// widens; quiet when no start runs or waits.
	free  chan struct{}
	quiet chan struct{}
	// base is the quickest recent start of each kind (0: none yet).
	base [startKinds]time.Duration
	// narrowed is when the limit last narrowed.
	narrowed time.Time
}

func newStartLimit(initial int) *startLimit {
	l := &startLimit{limit: float64(min(max(initial, startLimitMin), startLimitMax)), free: make(chan struct{}), quiet: make(chan struct{})}
	close(l.quiet)
	return l
}

// acquire waits for a slot, or until ctx ends. It returns when the slot
// was taken, for release.
func (l *startLimit) acquire(ctx context.Context) (time.Time, error) {
	l.mu.Lock()
	l.waiting++
	l.busyLocked()
	for l.inflight >= int(l.limit) {
		ch := l.free
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			l.mu.Lock()
			l.waiting--
			l.quietLocked()
			l.mu.Unlock()
			return time.Time{}, ctx.Err()
		}
		l.mu.Lock()
	}
	l.waiting--
	l.inflight++
	now := time.Now()
	l.mu.Unlock()
	return now, nil
}

// release gives back a slot taken at began. took is how long the
// Engine's start took, kind what it started; a failed start (ok false)
// says nothing about the Engine's pace.
func (l *startLimit) release(began time.Time, kind int, took time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight--
	if ok {
		l.sampleLocked(began, kind, took)
	}
	l.wakeLocked()
	l.quietLocked()
}

// sampleLocked moves the limit after a start of kind began at began
// that took took.
func (l *startLimit) sampleLocked(began time.Time, kind int, took time.Duration) {
	b := l.base[kind]
	switch {
	case b == 0 || took <= b:
		l.base[kind] = took
	default:
		l.base[kind] = b + time.Duration(float64(took-b)*startForget)
	}
	if b == 0 || float64(took) <= startSlow*float64(b) {
		// As quick as ever: one more slot per limit's worth of starts.
		l.limit = min(l.limit+1/l.limit, startLimitMax)
		return
	}
	if began.After(l.narrowed) {
		l.limit = max(l.limit*startNarrow, startLimitMin)
		l.narrowed = time.Now()
	}
}

func (l *startLimit) wakeLocked() {
	close(l.free)
	l.free = make(chan struct{})
}

func (l *startLimit) busyLocked() {
	select {
	case <-l.quiet:
		l.quiet = make(chan struct{})
	default:
	}
}

func (l *startLimit) quietLocked() {
	if l.inflight == 0 && l.waiting == 0 {
		select {
		case <-l.quiet:
		default:
			close(l.quiet)
		}
	}
}

// whenQuiet waits until no start runs or waits, or until ctx ends. Work
// done ahead of need (preparing containers) waits for it: it loads the
// same Engine, and a call that waits for a start should not wait for it.
func (l *startLimit) whenQuiet(ctx context.Context) error {
	l.mu.Lock()
	ch := l.quiet
	l.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// current returns the limit now, for tests and logs.
func (l *startLimit) current() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}
