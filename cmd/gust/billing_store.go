package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/postgres"
	"github.com/gustfaas/gust/internal/sqlite"
	"go.uber.org/zap"
)

// billingStore is a billing store a process opened and closes.
type billingStore interface {
	gust.BillingStore
	Close() error
}

// billingStoreFlag registers --billing-store on the roles that keep the
// billing store and returns where its value goes.
func billingStoreFlag(fs *flag.FlagSet) *string {
	return fs.String("billing-store", envOr("GUST_BILLING_STORE", ""),
		"billing store: empty for the embedded SQLite file in --data, or a PostgreSQL URL (postgres://user:password@host:5432/db) that several gateways may share ($GUST_BILLING_STORE)")
}

// openBillingStore opens the store url names: the SQLite file
// billing.db in dataDir when url is empty, a PostgreSQL database for a
// postgres:// or postgresql:// URL.
func openBillingStore(ctx context.Context, dataDir, url string, logger *zap.Logger) (billingStore, error) {
	switch {
	case url == "":
		db := filepath.Join(dataDir, "billing.db")
		if err := createPrivate(db); err != nil {
			return nil, err
		}
		return sqlite.Open(db, logger)
	case strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://"):
		return postgres.Open(ctx, url, logger)
	}
	// Not the URL itself: it may hold a password.
	return nil, fmt.Errorf("--billing-store: want empty (SQLite in the data directory) or a postgres:// URL")
}

// ingestConsumer names the JetStream consumer that fills store. A store
// of this process alone (SQLite) has a consumer of its own, named by an
// id kept in dataDir. Gateways sharing one PostgreSQL store share one
// consumer, named after the database: JetStream hands each record to one
// of them, so that a record is written once, not once per gateway (which
// would be correct, as the store is idempotent, and N times the work).
func ingestConsumer(store billingStore, dataDir string) (string, error) {
	if s, ok := store.(*postgres.Store); ok {
		return "billing-" + s.ConsumerID(), nil
	}
	id, err := localID(dataDir, "billing-id")
	if err != nil {
		return "", err
	}
	return "billing-" + id, nil
}
