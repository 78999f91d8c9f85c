package natsbus

import (
	"context"
	"errors"
	"time"

	"github.com/gustfaas/gust"
)

// Provision creates every stream and bucket of Gust, or updates each to
// its current configuration, on a connection opened with
// ClientConfig.Provision. `gust nats` runs it on start, so that the roles,
// which may not create or change streams (see permissions), find them
// there; `gust up` provisions as it opens them, on its one connection.
// idempotencyWindow is the async idempotency keys' lifetime and
// meterRetention the metering stream's (0: for ever).
func Provision(ctx context.Context, b *Bus, idempotencyWindow, meterRetention time.Duration) error {
	if !b.provision {
		return errors.New("provision: the connection was not opened to provision (ClientConfig.Provision)")
	}
	// The state tables come last: a role waits until it can open them
	// (cmd/gust connect), and then finds everything else there too.
	if _, err := OpenAsync(ctx, b, idempotencyWindow); err != nil {
		return err
	}
	if err := EnsureMeterStream(ctx, b, meterRetention); err != nil {
		return err
	}
	if _, err := OpenTable[gust.Namespace](ctx, b, namespacesTable); err != nil {
		return err
	}
	if _, err := OpenTable[gust.APIKey](ctx, b, keysTable); err != nil {
		return err
	}
	if _, err := OpenLeases(ctx, b); err != nil {
		return err
	}
	if _, err := b.ensureKV(ctx, secretsBucket); err != nil {
		return err
	}
	_, err := OpenState(ctx, b)
	return err
}

// BucketLeader holds the scheduler leader's lease (gust.LeaderKey).
const BucketLeader = "gust_leader"

// LeaseTTL is how long the scheduler leader's lease lasts unless renewed:
// a standby takes over within about this long of the leader's death.
const LeaseTTL = 4 * time.Second

// OpenLeases opens the table of the scheduler leader's lease, whose keys
// expire LeaseTTL after their last write. It lives in memory: a lease
// means nothing once every server restarted.
func OpenLeases(ctx context.Context, b *Bus) (*Table[gust.Lease], error) {
	return OpenTable[gust.Lease](ctx, b, TableConfig{Bucket: BucketLeader, TTL: LeaseTTL, Memory: true})
}
