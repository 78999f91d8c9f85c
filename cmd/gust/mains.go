package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/docker"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/scheduler"
	"github.com/gustfaas/gust/worker"
	"go.uber.org/zap"
)

// drainTimeout bounds how long a stopping role waits for calls in flight.
const drainTimeout = 60 * time.Second

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

// connect dials NATS and opens the shared state tables.
func connect(ctx context.Context, url, name string, logger *zap.Logger) (*natsbus.Bus, *gust.State, error) {
	bus, err := natsbus.Connect(url, name, logger)
	if err != nil {
		return nil, nil, err
	}
	state, err := natsbus.OpenState(ctx, bus)
	if err != nil {
		bus.Close()
		return nil, nil, err
	}
	return bus, state, nil
}

// GatewayMain runs the gateway role on its own.
type GatewayMain struct {
	NATSURL string
	Config  gateway.Config
	Logger  *zap.Logger

	bus    *natsbus.Bus
	Server *gateway.Server
}

// Run connects to NATS and starts serving.
func (m *GatewayMain) Run(ctx context.Context) error {
	bus, state, err := connect(ctx, m.NATSURL, "gust-gateway", m.Logger)
	if err != nil {
		return err
	}
	m.bus = bus
	router := gateway.NewRouter(state, bus, nil, "", m.Logger)
	m.Server = gateway.New(m.Config, state, bus, router, m.Logger)
	if err := m.Server.Open(ctx); err != nil {
		bus.Close()
		return err
	}
	return nil
}

// Close stops taking calls and lets those in flight finish.
func (m *GatewayMain) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	var errs []error
	if m.Server != nil {
		errs = append(errs, m.Server.Close(ctx))
	}
	if m.bus != nil {
		errs = append(errs, m.bus.Close())
	}
	return errors.Join(errs...)
}

// SchedulerMain runs the scheduler role on its own.
type SchedulerMain struct {
	NATSURL string
	Config  scheduler.Config
	Logger  *zap.Logger

	bus       *natsbus.Bus
	Scheduler *scheduler.Scheduler
}

// Run connects to NATS and starts the scheduler.
func (m *SchedulerMain) Run(ctx context.Context) error {
	bus, state, err := connect(ctx, m.NATSURL, "gust-scheduler", m.Logger)
	if err != nil {
		return err
	}
	m.bus = bus
	m.Scheduler = scheduler.New(m.Config, state, bus, m.Logger)
	if err := m.Scheduler.Start(ctx); err != nil {
		bus.Close()
		return err
	}
	return nil
}

// Close stops the scheduler.
func (m *SchedulerMain) Close() error {
	var errs []error
	if m.Scheduler != nil {
		errs = append(errs, m.Scheduler.Close())
	}
	if m.bus != nil {
		errs = append(errs, m.bus.Close())
	}
	return errors.Join(errs...)
}

// WorkerMain runs the worker role on its own: the Docker runtime, the
// pools, and an HTTP endpoint gateways invoke it at.
type WorkerMain struct {
	NATSURL string
	Listen  string // HTTP listen address for calls from gateways
	// Advertise is the base URL gateways reach this worker at; by default
	// derived from Listen (an unspecified host becomes this host's name).
	Advertise string
	Network   string // Docker network of the function containers
	DataDir   string // keeps the worker id across restarts
	Config    worker.Config
	Logger    *zap.Logger

	bus    *natsbus.Bus
	rt     *docker.Runtime
	Worker *worker.Worker
	srv    *http.Server
}

// Run starts the worker.
func (m *WorkerMain) Run(ctx context.Context) (err error) {
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				_ = undo[i]()
			}
		}
	}()
	if m.Config.ID == "" {
		if m.Config.ID, err = workerID(m.DataDir); err != nil {
			return err
		}
	}
	bus, state, err := connect(ctx, m.NATSURL, "gust-worker-"+m.Config.ID, m.Logger)
	if err != nil {
		return err
	}
	m.bus = bus
	undo = append(undo, bus.Close)
	if m.rt, err = openRuntime(ctx, m.Network, m.Logger); err != nil {
		return err
	}
	undo = append(undo, m.rt.Close)
	ln, err := net.Listen("tcp", m.Listen)
	if err != nil {
		return fmt.Errorf("worker listen on %s: %w", m.Listen, err)
	}
	undo = append(undo, ln.Close)
	if m.Config.Addr = m.Advertise; m.Config.Addr == "" {
		m.Config.Addr = advertiseURL(ln.Addr().(*net.TCPAddr), m.Listen)
	}
	m.Worker = worker.New(m.Config, m.rt, state, bus, m.Logger)
	if err := m.Worker.Start(ctx); err != nil {
		return err
	}
	m.srv = &http.Server{Handler: m.Worker.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(m.Logger.Named("worker.http"))}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("worker serve", zap.Error(err))
		}
	}()
	return nil
}

// Close drains the worker: no new calls, calls in flight finish, then its
// containers are stopped and removed.
func (m *WorkerMain) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	var errs []error
	if m.Worker != nil {
		errs = append(errs, m.Worker.Drain(ctx))
	}
	if m.srv != nil {
		errs = append(errs, m.srv.Shutdown(ctx))
	}
	if m.bus != nil {
		errs = append(errs, m.bus.Close())
	}
	if m.rt != nil {
		errs = append(errs, m.rt.Close())
	}
	return errors.Join(errs...)
}

// advertiseURL derives the URL other hosts reach a listener at.
func advertiseURL(addr *net.TCPAddr, listen string) string {
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	_ = listen
	return fmt.Sprintf("http://%s", net.JoinHostPort(host, fmt.Sprint(addr.Port)))
}

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

// workerID reads the worker id kept in dataDir, making one on first use,
// so a restarted worker finds the containers it left.
func workerID(dataDir string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", fmt.Errorf("data directory: %w", err)
	}
	p := filepath.Join(dataDir, "worker-id")
	if b, err := os.ReadFile(p); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	}
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := sanitizeID(host) + "-" + hex.EncodeToString(b[:])
	if err := os.WriteFile(p, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write worker id: %w", err)
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

// UpMain runs every role in one process: embedded NATS, scheduler, one
// worker on the local Docker Engine, and the gateway, which calls that
// worker in process (one network hop per call: gateway → container).
type UpMain struct {
	Listen     string // gateway
	NATSListen string // embedded NATS
	DataDir    string
	Network    string
	Gateway    gateway.Config
	Scheduler  scheduler.Config
	Worker     worker.Config
	Logger     *zap.Logger

	nats      NATSMain
	bus       *natsbus.Bus
	rt        *docker.Runtime
	scheduler *scheduler.Scheduler
	worker    *worker.Worker
	gw        *gateway.Server
}

// Run starts everything, in order, and unwinds what started if a part
// fails.
func (m *UpMain) Run(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	m.nats = NATSMain{Listen: m.NATSListen, DataDir: m.DataDir, Logger: m.Logger}
	if err := m.nats.Run(ctx); err != nil {
		return err
	}
	bus, state, err := connect(ctx, m.nats.Server.ClientURL(), "gust-up", m.Logger)
	if err != nil {
		return err
	}
	m.bus = bus
	if m.rt, err = openRuntime(ctx, m.Network, m.Logger); err != nil {
		return err
	}
	if m.Worker.ID == "" {
		if m.Worker.ID, err = workerID(m.DataDir); err != nil {
			return err
		}
	}
	m.scheduler = scheduler.New(m.Scheduler, state, bus, m.Logger)
	if err := m.scheduler.Start(ctx); err != nil {
		return err
	}
	m.worker = worker.New(m.Worker, m.rt, state, bus, m.Logger)
	if err := m.worker.Start(ctx); err != nil {
		return err
	}
	router := gateway.NewRouter(state, bus, m.worker, m.Worker.ID, m.Logger)
	m.Gateway.Listen = m.Listen
	m.gw = gateway.New(m.Gateway, state, bus, router, m.Logger)
	return m.gw.Open(ctx)
}

// GatewayAddr is the address the gateway listens on.
func (m *UpMain) GatewayAddr() string { return m.gw.Addr() }

// NATSURL is the embedded server's client URL.
func (m *UpMain) NATSURL() string { return m.nats.Server.ClientURL() }

// Close drains in reverse order: the gateway stops taking calls and waits
// for those in flight, the worker stops and removes its containers, then
// the scheduler, the NATS connection and the server stop.
func (m *UpMain) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	var errs []error
	if m.gw != nil {
		errs = append(errs, m.gw.Close(ctx))
	}
	if m.worker != nil {
		errs = append(errs, m.worker.Drain(ctx))
	}
	if m.scheduler != nil {
		errs = append(errs, m.scheduler.Close())
	}
	if m.bus != nil {
		errs = append(errs, m.bus.Close())
	}
	if m.rt != nil {
		errs = append(errs, m.rt.Close())
	}
	errs = append(errs, m.nats.Close())
	m.gw, m.worker, m.scheduler, m.bus, m.rt = nil, nil, nil, nil, nil
	return errors.Join(errs...)
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
