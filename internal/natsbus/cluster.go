package natsbus

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Attempts of ProvisionCluster: a JetStream request sent before the
// cluster has a meta leader may go unanswered, so each attempt has its own
// deadline rather than the whole wait.
const (
	metaLeaderAttempt = 2 * time.Second
	provisionAttempt  = 20 * time.Second
	provisionRetry    = time.Second
)

// ProvisionCluster is Provision on a server of a cluster: it waits, for
// at most wait, until the cluster has a JetStream meta leader (the
// servers of a cluster may start minutes apart, and nothing is created
// before they elect one) and enough servers for the streams' replicas,
// retrying what fails until then.
func ProvisionCluster(ctx context.Context, b *Bus, idempotencyWindow, meterRetention, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	try := func(d time.Duration, fn func(context.Context) error) error {
		actx, acancel := context.WithTimeout(ctx, d)
		defer acancel()
		return fn(actx)
	}
	var err error
	for {
		err = try(metaLeaderAttempt, func(ctx context.Context) error {
			_, err := b.JS.AccountInfo(ctx)
			return err
		})
		if err == nil {
			err = try(provisionAttempt, func(ctx context.Context) error {
				return Provision(ctx, b, idempotencyWindow, meterRetention)
			})
			if err == nil {
				return nil
			}
		}
		b.logger.Info("provisioning waits for the cluster", zap.Int("replicas", b.replicas), zap.Error(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("provision streams and buckets with %d replicas: the cluster did not take them within %s: %w", b.replicas, wait, err)
		case <-time.After(provisionRetry):
		}
	}
}
