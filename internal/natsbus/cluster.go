package natsbus

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Attempts of ProvisionCluster: a JetStream request sent before the
// cluster has a meta leader, or while it changes, may go unanswered, so
// each stream or bucket has its own short deadline and is tried again,
// rather than one request holding up the whole wait.
const (
	metaLeaderAttempt = time.Second
	provisionAttempt  = 5 * time.Second
	provisionRetry    = 500 * time.Millisecond

	leaderProvisionGrace = 20 * time.Second
)

// ProvisionCluster is Provision on a server of a cluster, connecting as
// cfg says (cfg.Provision set): it waits, for at most wait, until the
// cluster has a JetStream meta leader (the servers of a cluster may start
// minutes apart, and nothing is created before they elect one) and enough
// servers for the streams' replicas, retrying each stream or bucket that
// fails until then.
//
// Only the server that leads the cluster's JetStream meta group creates
// and updates: the others wait until the last bucket exists. Three
// servers creating the same stream at once (measured here with
// nats-server 2.15.2, three servers on loopback) got no answer to the
// create, on any of them, though the stream was made: every stream and
// bucket cost a request timeout, and provisioning took a minute instead
// of under four seconds with one server creating.
//
// A server that does not lead provisions itself after
// leaderProvisionGrace all the same: the leader may be a server that does
// not provision (a plain nats-server in the cluster).
//
// After a failed attempt it connects again. Seen here with three servers
// started at once: a connection made while the routes between them were
// still being set up (duplicate routes closed, pooled routes replaced)
// got no answer to any JetStream request answered by another server, for
// minutes, although the cluster had created what it asked for; the same
// request on a new connection was answered at once. A new connection
// subscribes to its replies anew, over the routes as they now are.
func ProvisionCluster(ctx context.Context, cfg ClientConfig, logger *zap.Logger, idempotencyWindow, meterRetention, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	try := func(d time.Duration, fn func(context.Context) error) error {
		actx, acancel := context.WithTimeout(ctx, d)
		defer acancel()
		return fn(actx)
	}
	start := time.Now()
	var bus *Bus
	defer func() {
		if bus != nil {
			bus.Close()
		}
	}()
	done := 0 // steps provisioned, kept across connections
	for {
		what, err := "a connection", error(nil)
		if bus == nil {
			bus, err = ConnectWith(cfg, logger)
		}
		if err == nil {
			what = "a JetStream meta leader"
			err = try(metaLeaderAttempt, func(ctx context.Context) error {
				_, err := bus.JS.AccountInfo(ctx)
				return err
			})
		}
		if err == nil && cfg.InProcess != nil && !cfg.InProcess.ns.JetStreamIsLeader() && time.Since(start) < leaderProvisionGrace {
			what = "the meta leader to provision"
			if err = try(provisionAttempt, func(ctx context.Context) error {
				_, err := bus.JS.Stream(ctx, lastProvisioned)
				return err
			}); err == nil {
				logger.Info("streams and buckets provisioned by the cluster's meta leader")
				return nil
			}
		} else if err == nil {
			var steps []provisionStep
			if steps, err = provisionSteps(bus, idempotencyWindow, meterRetention); err != nil {
				return err
			}
			for done < len(steps) {
				what = steps[done].name
				if err = try(provisionAttempt, steps[done].run); err != nil {
					break
				}
				done++
			}
			if done == len(steps) {
				return nil
			}
		}
		if bus != nil {
			bus.Close()
			bus = nil
		}
		logger.Info("provisioning waits for the cluster", zap.Int("replicas", cfg.Replicas), zap.String("for", what), zap.Error(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("provision streams and buckets with %d replicas: the cluster did not take %s within %s: %w", cfg.Replicas, what, wait, err)
		case <-time.After(provisionRetry):
		}
	}
}
