package scheduler_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: the
// scheduler's loop and re-placements must have ended when Close returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
