package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/docker"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// drainTimeout bounds how long a stopping role waits for calls in flight.
const drainTimeout = 60 * time.Second

// defaultSpoolMax bounds the local spool of metering records (about a
// million records); past it records are dropped, loudly.
const defaultSpoolMax = 512 << 20

// Shared is what the roles of one process (`gust up`) share instead of
// each opening its own: one NATS connection and its state tables, one
// metrics registry, one metering pipeline (one spool and one billing store
// in the data directory: two spools in one directory would clash) and the
// Docker runtime. A role Main given a Shared uses what it holds and never
// closes it: whoever opened it closes it, after the roles.
type Shared struct {
	Bus     *natsbus.Bus
	State   *gust.State
	Metrics *metrics.Metrics
	// Metering is nil when calls are not metered (UpMain.NoMetering).
	Metering *Metering
	// Runtime is the worker's container runtime.
	Runtime *docker.Runtime
	// Tenancy holds namespaces, keys and secrets (on Bus).
	Tenancy *gust.Tenancy
}

// connect dials NATS as cfg says, naming the connection name, and opens
// the shared state tables.
//
// A role may start before its NATS servers answer or have created Gust's
// streams and buckets (`gust nats` creates them on start, a cluster once
// it has elected its JetStream leader; the state tables last): it waits
// for them, up to connectWait, instead of exiting and leaving its start
// to a supervisor's restart backoff. Refused credentials end it at once.
func connect(ctx context.Context, cfg natsbus.ClientConfig, name string, logger *zap.Logger) (*natsbus.Bus, *gust.State, error) {
	cfg.Name = name
	deadline := time.Now().Add(connectWait)
	delay := 250 * time.Millisecond
	for {
		bus, err := natsbus.ConnectWith(cfg, logger)
		if err == nil {
			var state *gust.State
			if state, err = natsbus.OpenState(ctx, bus); err == nil {
				return bus, state, nil
			}
			bus.Close()
		}
		if errors.Is(err, nats.ErrAuthorization) || ctx.Err() != nil || time.Now().After(deadline) {
			return nil, nil, err
		}
		logger.Warn("NATS is not ready for this role yet; trying again", zap.Duration("in", delay), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// connectWait bounds how long a role waits for NATS at its start.
const connectWait = 3 * time.Minute

// openRuntime connects to the local Docker Engine.
func openRuntime(ctx context.Context, network string, logger *zap.Logger) (*docker.Runtime, error) {
	rt, err := docker.New(docker.Config{Network: network}, logger.Named("docker"))
	if err != nil {
		return nil, err
	}
	if err := rt.Open(ctx); err != nil {
		rt.Close()
		return nil, err
	}
	return rt, nil
}

// localID reads an id kept in dataDir/file, making one on first use.
func localID(dataDir, file string) (string, error) {
	if err := privateDir(dataDir); err != nil {
		return "", err
	}
	p := filepath.Join(dataDir, file)
	if b, err := os.ReadFile(p); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	}
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := sanitizeID(host) + "-" + hex.EncodeToString(b[:])
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	return id, nil
}

// sanitizeID keeps the characters allowed in a NATS subject token and a
// KV key.
func sanitizeID(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "worker"
	}
	return b.String()
}

// openRuntimeForBuild connects to Docker for `gust build`; it needs no
// network.
func openRuntimeForBuild(ctx context.Context) (*docker.Runtime, error) {
	rt, err := docker.New(docker.Config{}, zap.NewNop())
	if err != nil {
		return nil, err
	}
	if err := rt.Ping(ctx); err != nil {
		rt.Close()
		return nil, err
	}
	return rt, nil
}

// urlPorts returns the ports of a comma-separated list of NATS URLs
// (4222 where one names none).
func urlPorts(urls string) []uint16 {
	var out []uint16
	for _, s := range strings.Split(urls, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.Host == "" {
			continue
		}
		p := u.Port()
		if p == "" {
			p = "4222"
		}
		if n, err := strconv.ParseUint(p, 10, 16); err == nil {
			out = append(out, uint16(n))
		}
	}
	return out
}
