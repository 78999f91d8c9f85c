// Package check holds the one polling helper of Gust's tests. A test that
// waits for something another goroutine, process or container does asks
// again until it holds or a bounded deadline passes, instead of sleeping a
// guessed time (nats-server's checkFor, STYLE.md §6): a fast machine does
// not wait longer than it must, and a slow one fails only when the
// deadline, set far above what the wait needs, has passed.
package check

import (
	"testing"
	"time"
)

// For calls f every interval until it returns nil, and fails tb with f's
// last error if that does not happen within total. f runs at least once,
// and once more after total has passed, so a wait that ends just as the
// deadline does still succeeds.
func For(tb testing.TB, total, every time.Duration, f func() error) {
	tb.Helper()
	end := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			tb.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(every)
	}
}
