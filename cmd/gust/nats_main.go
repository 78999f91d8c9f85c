package main

import (
	"context"
	"path/filepath"

	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
)

// NATSMain runs an embedded NATS server with JetStream, with its users
// (see nats_auth.go): no anonymous clients.
type NATSMain struct {
	Listen  string // host:port
	DataDir string // JetStream files go in DataDir/nats
	// Roles: the server has a user per role, whose passwords are kept in
	// AuthDir (default DataDir/nats-auth), and creates Gust's streams and
	// buckets on start, which the roles may not. Without it, only the
	// gust and events users exist.
	Roles   bool
	AuthDir string
	// Flags are the events password and TLS flags.
	Flags  natsServerFlags
	Logger *zap.Logger

	Server *natsbus.Server
}

// Run starts the server.
func (m *NATSMain) Run(ctx context.Context) error {
	if err := privateDataDir(m.DataDir); err != nil {
		return err
	}
	var roles map[string]string
	if m.Roles {
		if m.AuthDir == "" {
			m.AuthDir = filepath.Join(m.DataDir, natsAuthDir)
		}
		var err error
		if roles, err = rolePasswords(m.AuthDir, m.Logger); err != nil {
			return err
		}
	}
	cfg, err := m.Flags.config(m.Listen, m.DataDir, roles, m.Logger)
	if err != nil {
		return err
	}
	s, err := natsbus.RunServer(cfg, m.Logger)
	if err != nil {
		return err
	}
	m.Server = s
	if m.Roles {
		if err := m.provision(ctx); err != nil {
			s.Shutdown()
			m.Server = nil
			return err
		}
	}
	m.Logger.Info("nats listening", zap.String("url", s.ClientURL()))
	return nil
}

// provision creates Gust's streams and buckets, or updates them to this
// release's configuration.
func (m *NATSMain) provision(ctx context.Context) error {
	bus, err := natsbus.ConnectWith(m.Server.ProvisionConfig("gust-nats-provision"), m.Logger)
	if err != nil {
		return err
	}
	defer bus.Close()
	return natsbus.Provision(ctx, bus, idempotencyWindow, m.Flags.meterRetention)
}

// Close stops the server.
func (m *NATSMain) Close() error {
	if m.Server != nil {
		m.Server.Shutdown()
	}
	return nil
}
