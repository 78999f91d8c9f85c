// Package docker implements gust.Runtime on the Docker Engine API. It is the
// only package in Gust that imports the Docker client.
//
// Function containers are attached to a user-defined bridge network of
// their namespace (NetworkOf) and reached on their bridge IP: no port is
// ever published on the host. Docker drops traffic between bridges, so
// namespaces cannot reach each other; the bridges are named with one
// prefix (BridgePrefix) so that host rules (internal/firewall) can match
// them all. Every Engine call is bounded in time (Config.CallTimeout):
// a hung daemon fails calls instead of blocking them forever.
package docker

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/gustfaas/gust"
)

// Defaults for the zero fields of Config.
const (
	DefaultNetwork      = "gust"
	DefaultBridgePrefix = "gust-"
	DefaultPullTimeout  = 5 * time.Minute
	DefaultBuildTimeout = 30 * time.Minute
	DefaultCallTimeout  = 30 * time.Second
)

// Config of the Docker runtime.
type Config struct {
	// Network is the Docker bridge network of the functions of the
	// default namespace, and the prefix of the others' (NetworkOf);
	// default "gust".
	Network string
	// BridgePrefix starts the Linux interface name of every bridge this
	// runtime creates (at most 8 characters); default "gust-".
	BridgePrefix string
	PullTimeout  time.Duration // bound on one image pull; default 5m
	BuildTimeout time.Duration // bound on one image build; default 30m
	// CallTimeout bounds each other use of the Engine (a Start, a Stop
	// past its grace, a List...); default 30s.
	CallTimeout time.Duration
	// SecretsRoot is the directory on a tmpfs of the Docker Engine's host
	// where containers' secrets are written (secrets.go); default
	// DefaultSecretsRoot. A runtime in a container must see it at the
	// same path as the Engine.
	SecretsRoot string
	// Holders is how many idle network-namespace holders the runtime
	// keeps ready per namespace network and worker (holder.go), so that
	// a cold start skips the set-up of the container's network; default
	// DefaultHolders, negative for none (each start then attaches its
	// container to the network itself).
	Holders int
	// EnginePause pauses and unpauses containers through the Engine only,
	// never through their cgroup freezer directly (freezer.go).
	EnginePause bool
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

	netMu    sync.Mutex // held while a network is created or removed; before mu
	mu       sync.Mutex
	networks map[string]netInfo // networks known to exist, by name; guarded by mu
	self     string             // id of the worker's own container (Attach); guarded by mu
	frozen   map[string]freezer // containers frozen through their cgroup, by id (freezer.go); guarded by mu
	freezers map[string]freezer // freezers looked up by Paused, by id; guarded by mu

	holders holders // network-namespace holders (holder.go)
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
	if cfg.BridgePrefix == "" {
		cfg.BridgePrefix = DefaultBridgePrefix
	}
	if len(cfg.BridgePrefix) > 8 {
		return nil, fmt.Errorf("bridge prefix %q: longer than 8 characters", cfg.BridgePrefix)
	}
	if cfg.PullTimeout <= 0 {
		cfg.PullTimeout = DefaultPullTimeout
	}
	if cfg.BuildTimeout <= 0 {
		cfg.BuildTimeout = DefaultBuildTimeout
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Holders == 0 {
		cfg.Holders = DefaultHolders
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
	pulls := newPuller(c, cfg.PullTimeout, logger)
	pulls.inspectTimeout = cfg.CallTimeout
	return &Runtime{
		cfg:      cfg,
		client:   c,
		pulls:    pulls,
		logger:   logger,
		ctx:      ctx,
		cancel:   cancel,
		networks: make(map[string]netInfo),
		holders:  holders{pools: map[holderKey]*holderPool{}, prepared: map[string]*prepared{}, closing: make(chan struct{})},
	}, nil
}

// Network returns the name of the network the functions of the default
// namespace join.
func (r *Runtime) Network() string { return r.cfg.Network }

// Ping checks that a Docker Engine answers.
func (r *Runtime) Ping(ctx context.Context) (err error) {
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	if _, err := r.client.Ping(ctx); err != nil {
		return fmt.Errorf("no Docker Engine answers at %s: %w", r.client.DaemonHost(), err)
	}
	return nil
}

// Open checks that a Docker Engine answers, removes the secrets
// directories no container mounts any more, and makes sure the network of
// the default namespace exists (NetworkOf; the others are made on first
// use).
func (r *Runtime) Open(ctx context.Context) (err error) {
	if err := r.Ping(ctx); err != nil {
		return err
	}
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	if err := r.removeStraySecrets(ctx); err != nil {
		// Not fatal: what is left is in memory, under a 0700 directory.
		r.logger.Warn("remove stray secrets directories", zap.Error(err))
	}
	_, _, err = r.ensureNetwork(ctx, "")
	return err
}

// Close stops pulls in flight, removes the idle network holders (after
// those being made) and releases the client. Function containers keep
// running.
func (r *Runtime) Close() error {
	r.closeHolders()
	r.cancel()
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("close docker client: %w", err)
	}
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

// bound gives ctx a deadline d from now, for the Engine calls of one
// method; the function it returns (deferred with the method's error)
// cancels it and, when that deadline rather than the caller ended the
// calls, says so in *err.
func bound(ctx context.Context, d time.Duration) (context.Context, func(*error)) {
	cctx, cancel := context.WithTimeout(ctx, d)
	return cctx, func(err *error) {
		if *err != nil && cctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			*err = fmt.Errorf("the Docker Engine did not answer within %s: %w", d, *err)
		}
		cancel()
	}
}
