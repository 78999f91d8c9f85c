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
	steps, err := provisionSteps(b, idempotencyWindow, meterRetention)
	if err != nil {
		return err
	}
	for _, step := range steps {
		if err := step.run(ctx); err != nil {
			return err
		}
	}
	return nil
}

// provisionStep creates or updates one stream or bucket; each is
// idempotent, so a step that failed or timed out may simply run again.
type provisionStep struct {
	name string
	run  func(context.Context) error
}

// provisionSteps lists what Provision creates, in order. The state tables
// come last: a role waits until it can open them (cmd/gust connect), and
// then finds everything else there too.
func provisionSteps(b *Bus, idempotencyWindow, meterRetention time.Duration) ([]provisionStep, error) {
	if !b.provision {
		return nil, errors.New("provision: the connection was not opened to provision (ClientConfig.Provision)")
	}
	return []provisionStep{
		{"stream " + StreamAsync, func(ctx context.Context) error { _, err := OpenAsync(ctx, b, idempotencyWindow); return err }},
		{"stream " + StreamMeter, func(ctx context.Context) error { return EnsureMeterStream(ctx, b, meterRetention) }},
		{"stream " + StreamLogs, func(ctx context.Context) error { return EnsureLogStream(ctx, b, LogLimits{}) }},
		{"bucket " + namespacesTable.Bucket, func(ctx context.Context) error {
			_, err := OpenTable[gust.Namespace](ctx, b, namespacesTable)
			return err
		}},
		{"bucket " + keysTable.Bucket, func(ctx context.Context) error { _, err := OpenTable[gust.APIKey](ctx, b, keysTable); return err }},
		{"bucket " + BucketLeader, func(ctx context.Context) error { _, err := OpenLeases(ctx, b); return err }},
		{"bucket " + secretsBucket.Bucket, func(ctx context.Context) error { _, err := b.ensureKV(ctx, secretsBucket); return err }},
		{"state buckets", func(ctx context.Context) error { _, err := OpenState(ctx, b); return err }},
	}, nil
}

// lastProvisioned is the stream of the bucket provisionSteps creates last
// (OpenState opens the status bucket last): once it exists, so does
// everything else.
const lastProvisioned = "KV_" + BucketStatus

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
