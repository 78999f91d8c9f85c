package worker

import (
	"context"
	"testing"
	"time"
)

// TestStartLimit: the limit begins at its initial value, holds a start
// past it until a slot frees, widens while starts take at most startSlow
// times the quickest of their kind, narrows once per round when they take
// more (not again for starts begun before it narrowed), stays within its
// bounds, and compares prepared and fresh starts each with their own kind.
func TestStartLimit(t *testing.T) {
	l := newStartLimit(2)
	ctx := context.Background()
	a, err := l.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := l.acquire(ctx)
	third := make(chan time.Time, 1)
	go func() {
		c, _ := l.acquire(ctx)
		third <- c
	}()
	select {
	case <-third:
		t.Fatal("a third start ran at a limit of 2")
	case <-time.After(20 * time.Millisecond):
	}
	// Quickest so far: widens by 1/limit.
	l.release(a, startFresh, 100*time.Millisecond, true)
	c := <-third
	if got := l.current(); got != 2.5 {
		t.Errorf("limit after a quick start: %v, want 2.5", got)
	}
	// Twice as slow: still within startSlow, widens.
	l.release(b, startFresh, 200*time.Millisecond, true)
	if got := l.current(); got != 2.9 {
		t.Errorf("limit after a start at 2×: %v, want 2.9", got)
	}
	// Slow: narrows once; c began before the narrowing of d, so it does
	// not narrow again.
	d, _ := l.acquire(ctx)
	time.Sleep(time.Millisecond)
	l.release(d, startFresh, time.Second, true)
	want := 2.9 * startNarrow
	if got := l.current(); got != want {
		t.Errorf("limit after a slow start: %v, want %v", got, want)
	}
	l.release(c, startFresh, time.Second, true)
	if got := l.current(); got != want {
		t.Errorf("limit after a slow start of the same round: %v, want %v", got, want)
	}
	// A prepared start is compared with prepared ones: its first sets
	// the quickest of its kind and widens.
	e, _ := l.acquire(ctx)
	l.release(e, startPrepared, 10*time.Millisecond, true)
	if got := l.current(); got <= want {
		t.Errorf("limit after a first prepared start: %v, want more than %v", got, want)
	}
	// A failed start says nothing.
	before := l.current()
	f, _ := l.acquire(ctx)
	l.release(f, startFresh, time.Hour, false)
	if got := l.current(); got != before {
		t.Errorf("limit after a failed start: %v, want %v", got, before)
	}
	// Bounds.
	for range 100 {
		g, _ := l.acquire(ctx)
		l.release(g, startPrepared, 10*time.Millisecond, true)
	}
	for range 1000 {
		g, _ := l.acquire(ctx)
		l.release(g, startPrepared, 10*time.Millisecond, true)
	}
	if got := l.current(); got != startLimitMax {
		t.Errorf("limit after many quick starts: %v, want %v", got, float64(startLimitMax))
	}
	// 32 × 0.75^12 < 1; the quickest start is forgotten slowly enough
	// that a minute still counts as slow after 15.
	for range 15 {
		g, _ := l.acquire(ctx)
		time.Sleep(time.Microsecond)
		l.release(g, startPrepared, time.Minute, true)
	}
	if got := l.current(); got != startLimitMin {
		t.Errorf("limit after many slow starts: %v, want %v", got, float64(startLimitMin))
	}
}

// TestStartLimit_Quiet: whenQuiet returns once no start runs or waits,
// and a waiting acquire ends with its context.
func TestStartLimit_Quiet(t *testing.T) {
	l := newStartLimit(1)
	if err := l.whenQuiet(context.Background()); err != nil {
		t.Fatal(err)
	}
	a, _ := l.acquire(context.Background())
	quiet := make(chan error, 1)
	go func() { quiet <- l.whenQuiet(context.Background()) }()
	ctx, cancel := context.WithCancel(context.Background())
	waited := make(chan error, 1)
	go func() {
		_, err := l.acquire(ctx)
		waited <- err
	}()
	select {
	case <-quiet:
		t.Fatal("quiet while a start runs")
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	if err := <-waited; err == nil {
		t.Error("acquire past the limit: no error after its context ended")
	}
	l.release(a, startFresh, time.Millisecond, true)
	if err := <-quiet; err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	b, _ := l.acquire(context.Background())
	cancel()
	if err := l.whenQuiet(ctx); err == nil {
		t.Error("whenQuiet while a start runs: no error after its context ended")
	}
	l.release(b, startFresh, time.Millisecond, true)
}
