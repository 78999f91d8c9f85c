// Package docker implements gust.Runtime on the Docker Engine API. It is the
// only package in Gust that imports the Docker client.
//
// Function containers are attached to one user-defined bridge network and
// reached on their bridge IP: no port is ever published on the host.
package docker

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/gustfaas/gust"
)

// Defaults for the zero fields of Config.
const (
	DefaultNetwork     = "gust"
	DefaultPullTimeout = 5 * time.Minute
)

// Config of the Docker runtime.
type Config struct {
	Network     string        // Docker bridge network for function containers; default "gust"
	PullTimeout time.Duration // bound on one image pull; default 5m
	// SecretsRoot is the directory on a tmpfs of the Docker Engine's host
	// where containers' secrets are written (secrets.go); default
	// DefaultSecretsRoot. A runtime in a container must see it at the
	// same path as the Engine.
	SecretsRoot string
}

// Runtime runs function containers on the Docker Engine that the
// environment (DOCKER_HOST and friends) points at. Build it with New, then
// call Open before anything else and Close when done.
type Runtime struct {
	cfg    Config
	client *client.Client
	pulls  *puller
	logger *zap.Logger

	// ctx is cancelled by Close; it bounds the pulls, which outlive the
	// calls that started them.
	ctx    context.Context
	cancel context.CancelFunc
}

var (
	_ gust.Runtime   = (*Runtime)(nil)
	_ gust.LogTailer = (*Runtime)(nil)
)

// New returns a Runtime for cfg. It builds the client from the environment
// with API version negotiation and does no I/O.
func New(cfg Config, logger *zap.Logger) (*Runtime, error) {
	if cfg.Network == "" {
		cfg.Network = DefaultNetwork
	}
	if cfg.PullTimeout <= 0 {
		cfg.PullTimeout = DefaultPullTimeout
	}
	if cfg.SecretsRoot == "" {
		cfg.SecretsRoot = DefaultSecretsRoot
	}
	cfg.SecretsRoot = filepath.Clean(cfg.SecretsRoot)
	if logger == nil {
		logger = zap.NewNop()
	}
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runtime{
		cfg:    cfg,
		client: c,
		pulls:  newPuller(c, cfg.PullTimeout, logger),
		logger: logger,
		ctx:    ctx,
		cancel: cancel,
	}, nil
}

// Network returns the name of the network function containers join.
func (r *Runtime) Network() string { return r.cfg.Network }

// Ping checks that a Docker Engine answers.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.client.Ping(ctx); err != nil {
		return fmt.Errorf("no Docker Engine answers at %s: %w", r.client.DaemonHost(), err)
	}
	return nil
}

// Open checks that a Docker Engine answers, removes the secrets
// directories no container mounts any more, and makes sure the network
// exists, creating it (labelled gust.managed=true) if it is missing.
func (r *Runtime) Open(ctx context.Context) error {
	if err := r.Ping(ctx); err != nil {
		return err
	}
	if err := r.removeStraySecrets(ctx); err != nil {
		// Not fatal: what is left is in memory, under a 0700 directory.
		r.logger.Warn("remove stray secrets directories", zap.Error(err))
	}
	_, err := r.client.NetworkInspect(ctx, r.cfg.Network, network.InspectOptions{})
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect network %s: %w", r.cfg.Network, err)
	}
	resp, err := r.client.NetworkCreate(ctx, r.cfg.Network, network.CreateOptions{
		Driver: "bridge",
		Labels: map[string]string{gust.LabelManaged: "true"},
	})
	if err != nil {
		// Another process may have created it between inspect and create.
		if cerrdefs.IsConflict(err) {
			return nil
		}
		return fmt.Errorf("create network %s: %w", r.cfg.Network, err)
	}
	r.logger.Info("created network", zap.String("network", r.cfg.Network), zap.String("network_id", resp.ID))
	return nil
}

// Close stops pulls in flight and releases the client. Containers keep
// running.
func (r *Runtime) Close() error {
	r.cancel()
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("close docker client: %w", err)
	}
	return nil
}

// RemoveNetwork removes the network if it carries gust.managed=true and no
// container is attached to it. A missing or foreign network is left alone
// and gives nil; a network that still has containers gives an error.
func (r *Runtime) RemoveNetwork(ctx context.Context) error {
	n, err := r.client.NetworkInspect(ctx, r.cfg.Network, network.InspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", r.cfg.Network, err)
	}
	if n.Labels[gust.LabelManaged] != "true" {
		return nil
	}
	if len(n.Containers) > 0 {
		return fmt.Errorf("remove network %s: %d containers still attached", r.cfg.Network, len(n.Containers))
	}
	if err := r.client.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove network %s: %w", r.cfg.Network, err)
	}
	r.logger.Info("removed network", zap.String("network", r.cfg.Network))
	return nil
}

// instanceErr wraps a Docker error from an operation on container id,
// adding gust.ErrInstanceNotFound when Docker does not know the id.
func instanceErr(op string, err error) error {
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("%s: %w: %w", op, gust.ErrInstanceNotFound, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
