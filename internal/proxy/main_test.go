package proxy_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every
// test server and transport must be closed by its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
