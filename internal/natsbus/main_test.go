package natsbus_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// goroutine the bus, its tables and its consumers start must have ended
// once the bus is closed and the server shut down.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
