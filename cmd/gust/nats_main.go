package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
)

// NATSMain runs an embedded NATS server with JetStream.
type NATSMain struct {
	Listen  string // host:port
	DataDir string // JetStream files go in DataDir/nats
	Logger  *zap.Logger

	Server *natsbus.Server
}

// Run starts the server.
func (m *NATSMain) Run(ctx context.Context) error {
	if err := os.MkdirAll(m.DataDir, 0o755); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	s, err := natsbus.RunServer(natsbus.ServerConfig{
		Listen: m.Listen, StoreDir: filepath.Join(m.DataDir, "nats"), Name: "gust",
	}, m.Logger)
	if err != nil {
		return err
	}
	m.Server = s
	m.Logger.Info("nats listening", zap.String("url", s.ClientURL()))
	return nil
}

// Close stops the server.
func (m *NATSMain) Close() error {
	if m.Server != nil {
		m.Server.Shutdown()
	}
	return nil
}
