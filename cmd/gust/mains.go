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
	"github.com/gustfaas/gust/internal/billing"
	"github.com/gustfaas/gust/internal/docker"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/spool"
	"github.com/gustfaas/gust/internal/sqlite"
	"github.com/gustfaas/gust/scheduler"
	"github.com/gustfaas/gust/worker"
	"go.uber.org/zap"
)

// drainTimeout bounds how long a stopping role waits for calls in flight.
const drainTimeout = 60 * time.Second

// defaultSpoolMax bounds the local spool of metering records (about a
// million records); past it records are dropped, loudly.
const defaultSpoolMax = 512 << 20

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
	DataDir string // the billing store and the spool of rejected calls
	Pricing billing.Pricing
	Logger  *zap.Logger

	bus      *natsbus.Bus
	metering *Metering
	Server   *gateway.Server
}

// Run connects to NATS and starts serving.
func (m *GatewayMain) Run(ctx context.Context) error {
	bus, state, err := connect(ctx, m.NATSURL, "gust-gateway", m.Logger)
	if err != nil {
		return err
	}
	m.bus = bus
	mx := metrics.New()
	if m.metering, err = startMetering(ctx, bus, meterConfig{DataDir: m.DataDir, Store: true, SpoolMax: defaultSpoolMax}, mx, m.Logger); err != nil {
		bus.Close()
		return err
	}
	if m.Pricing.Granularity == 0 {
		m.Pricing = billing.DefaultPricing()
	}
	router := gateway.NewRouter(state, bus, nil, "", m.Logger)
	async, err := openAsync(ctx, bus)
	if err != nil {
		m.metering.Close()
		bus.Close()
		return err
	}
	m.Server = gateway.New(m.Config, state, bus, router, m.Logger).
		WithMetering(m.metering.Meter, mx).WithBilling(m.metering.Store, m.Pricing).
		WithAsync(async, gateway.NewDispatcher(async, state, router, m.metering.Meter, mx, m.Logger))
	if err := m.Server.Open(ctx); err != nil {
		m.metering.Close()
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
	errs = append(errs, m.metering.Close())
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

	bus      *natsbus.Bus
	rt       *docker.Runtime
	metering *Metering
	Worker   *worker.Worker
	srv      *http.Server
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
		m.Config.Addr = advertiseURL(ln.Addr().(*net.TCPAddr))
	}
	mx := metrics.New()
	if m.metering, err = startMetering(ctx, bus, meterConfig{DataDir: m.DataDir, SpoolMax: defaultSpoolMax}, mx, m.Logger); err != nil {
		return err
	}
	undo = append(undo, m.metering.Close)
	m.Worker = worker.New(m.Config, m.rt, state, bus, m.Logger).WithMetering(m.metering.Meter, mx)
	if err := m.Worker.Start(ctx); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", mx.Handler())
	mux.Handle("/", m.Worker.Handler())
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(m.Logger.Named("worker.http"))}
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
	errs = append(errs, m.metering.Close())
	if m.bus != nil {
		errs = append(errs, m.bus.Close())
	}
	if m.rt != nil {
		errs = append(errs, m.rt.Close())
	}
	return errors.Join(errs...)
}

// advertiseURL derives the URL other hosts reach a listener at.
func advertiseURL(addr *net.TCPAddr) string {
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
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
func workerID(dataDir string) (string, error) { return localID(dataDir, "worker-id") }

// localID reads an id kept in dataDir/file, making one on first use.
func localID(dataDir, file string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", fmt.Errorf("data directory: %w", err)
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
	if err := os.WriteFile(p, []byte(id+"\n"), 0o644); err != nil {
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

// Metering is the metering side of a process: the spool and publisher of
// the records its worker (or gateway) makes, and, where a billing store is
// kept, the store and the ingest that fills it from JetStream.
type Metering struct {
	Metrics *metrics.Metrics
	Meter   *natsbus.Meter
	Store   *sqlite.Store
	ingest  *natsbus.Ingest
	bus     *natsbus.Bus
	logger  *zap.Logger
}

// meterConfig says what a process meters and stores.
type meterConfig struct {
	DataDir   string
	Store     bool // keep a billing store fed from the stream
	SpoolMax  int64
	Retention time.Duration
}

// startMetering opens the spool (and the store) under the data directory
// and starts publishing (and ingesting).
func startMetering(ctx context.Context, bus *natsbus.Bus, cfg meterConfig, m *metrics.Metrics, logger *zap.Logger) (*Metering, error) {
	mt := &Metering{Metrics: m, bus: bus, logger: logger}
	if err := natsbus.EnsureMeterStream(ctx, bus, cfg.Retention); err != nil {
		return nil, err
	}
	sp, err := spool.Open(filepath.Join(cfg.DataDir, "spool"), cfg.SpoolMax)
	if err != nil {
		return nil, err
	}
	mt.Meter = natsbus.NewMeter(bus, sp, m, logger)
	mt.Meter.Start()
	if cfg.Store {
		if mt.Store, err = sqlite.Open(filepath.Join(cfg.DataDir, "billing.db"), logger.Named("billing")); err != nil {
			mt.Close()
			return nil, err
		}
		id, err := localID(cfg.DataDir, "billing-id")
		if err != nil {
			mt.Close()
			return nil, err
		}
		mt.ingest = natsbus.NewIngest(bus, mt.Store, "billing-"+id, m, logger)
		if err := mt.ingest.Start(ctx); err != nil {
			mt.Close()
			return nil, err
		}
	}
	return mt, nil
}

// Close publishes what is spooled (for a few seconds at most; the rest
// waits in the spool for the next run), lets the store take in what was
// published, and closes.
func (mt *Metering) Close() error {
	if mt == nil {
		return nil
	}
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if mt.Meter != nil {
		errs = append(errs, mt.Meter.Close(ctx))
	}
	if mt.ingest != nil {
		mt.ingest.Drain(ctx)
		mt.ingest.Close()
	}
	if mt.Store != nil {
		errs = append(errs, mt.Store.Close())
	}
	return errors.Join(errs...)
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
	Pricing    billing.Pricing
	// NoMetering switches metering off (for benchmarks against it).
	NoMetering bool
	Logger     *zap.Logger

	Metrics   *metrics.Metrics
	Metering  *Metering
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
	m.Metrics = metrics.New()
	if m.Pricing.Granularity == 0 {
		m.Pricing = billing.DefaultPricing()
	}
	m.Worker.BillingGranularity = m.Pricing.Granularity
	var meter gust.Meter
	if !m.NoMetering {
		m.Metering, err = startMetering(ctx, bus, meterConfig{DataDir: m.DataDir, Store: true, SpoolMax: defaultSpoolMax}, m.Metrics, m.Logger)
		if err != nil {
			return err
		}
		meter = m.Metering.Meter
	}
	m.scheduler = scheduler.New(m.Scheduler, state, bus, m.Logger)
	if err := m.scheduler.Start(ctx); err != nil {
		return err
	}
	m.worker = worker.New(m.Worker, m.rt, state, bus, m.Logger).WithMetering(meter, m.Metrics)
	if err := m.worker.Start(ctx); err != nil {
		return err
	}
	router := gateway.NewRouter(state, bus, m.worker, m.Worker.ID, m.Logger)
	m.Gateway.Listen = m.Listen
	async, err := openAsync(ctx, bus)
	if err != nil {
		return err
	}
	m.gw = gateway.New(m.Gateway, state, bus, router, m.Logger).WithMetering(meter, m.Metrics).
		WithAsync(async, gateway.NewDispatcher(async, state, router, meter, m.Metrics, m.Logger))
	if m.Metering != nil {
		m.gw.WithBilling(m.Metering.Store, m.Pricing)
	}
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
	errs = append(errs, m.Metering.Close())
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
	m.gw, m.worker, m.scheduler, m.bus, m.rt, m.Metering = nil, nil, nil, nil, nil, nil
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

// idempotencyWindow is how long an async idempotency key holds.
const idempotencyWindow = 24 * time.Hour

// openAsync opens the streams and tables of async calls and event
// triggers.
func openAsync(ctx context.Context, bus *natsbus.Bus) (*gateway.Async, error) {
	as, err := natsbus.OpenAsync(ctx, bus, idempotencyWindow)
	if err != nil {
		return nil, err
	}
	return &gateway.Async{
		Queue: bus, Events: bus, DeadLetters: natsbus.NewDeadLetters(bus),
		Calls: as.Calls, Idempotency: as.Idempotency, Stream: natsbus.StreamAsync,
	}, nil
}
