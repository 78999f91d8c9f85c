package gateway_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: the
// server, the router and the dispatcher must have stopped and waited for
// every goroutine they started once they are closed (and the worker, the
// fake runtime and NATS, which the dispatcher's tests run, likewise).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
