package check_test

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust/internal/check"
)

// recorder is a testing.TB that keeps what For reports instead of failing
// the test that runs it. Fatalf ends the calling goroutine, as testing's
// does, so For runs in a goroutine of its own.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.failed = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

// run calls check.For on a recorder and returns what it reported.
func run(total, every time.Duration, f func() error) string {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		check.For(r, total, every, f)
	}()
	<-done
	return r.failed
}

func TestFor(t *testing.T) {
	t.Run("HoldsAtOnce", func(t *testing.T) {
		calls := 0
		if got := run(time.Minute, time.Hour, func() error { calls++; return nil }); got != "" {
			t.Errorf("failed: %q", got)
		}
		if calls != 1 {
			t.Errorf("calls = %d, want 1", calls)
		}
	})
	t.Run("HoldsLater", func(t *testing.T) {
		calls := 0
		got := run(time.Minute, time.Millisecond, func() error {
			if calls++; calls < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		if got != "" {
			t.Errorf("failed: %q", got)
		}
		if calls != 3 {
			t.Errorf("calls = %d, want 3", calls)
		}
	})
	t.Run("NeverHolds", func(t *testing.T) {
		calls := 0
		got := run(0, time.Millisecond, func() error { calls++; return errors.New("still 2, want 3") })
		if want := "after 0s: still 2, want 3"; got != want {
			t.Errorf("failed: %q, want %q", got, want)
		}
		if calls < 1 {
			t.Errorf("calls = %d, want at least 1", calls)
		}
	})
}
