package sqlite

import (
	"testing"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing/storetest"
)

// TestStore_Conformance runs the billing store conformance suite, which
// internal/postgres runs too, on a new SQLite file per subtest.
func TestStore_Conformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) gust.BillingStore {
		s, _ := MustOpen(t)
		return s
	})
}
