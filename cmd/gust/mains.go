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

// GatewayMain runs the gateway role: on its own with its NATS connection,
// metering and billing store, or in `gust up` on what it is given in
// Shared, calling the worker of its process in process.
type GatewayMain struct {
	NATSURL string
	Config  gateway.Config
	DataDir string // the billing store and the spool of rejected calls
	Pricing billing.Pricing
	Logger  *zap.Logger
	// Shared, when set, replaces NATSURL and DataDir: see Shared.
	Shared *Shared
	// Local is the worker of this process, which the gateway calls in
	// process (one network hop less per call); LocalID is its id. Nil
	// when every worker is reached over HTTP.
	Local   gust.Invoker
	LocalID string

	bus      *natsbus.Bus // owned: nil when shared
	metering *Metering    // owned: nil when shared
	Server   *gateway.Server
}

// Run connects to NATS (unless shared) and starts serving. On failure it
// closes what it opened.
func (m *GatewayMain) Run(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			_ = m.metering.Close()
			if m.bus != nil {
				_ = m.bus.Close()
			}
			m.metering, m.bus = nil, nil
		}
	}()
	sh := m.Shared
	if sh == nil {
		sh = &Shared{Metrics: metrics.New()}
		if m.bus, sh.State, err = connect(ctx, m.NATSURL, "gust-gateway", m.Logger); err != nil {
			return err
		}
		sh.Bus = m.bus
		mc := meterConfig{DataDir: m.DataDir, Store: true, SpoolMax: defaultSpoolMax}
		if m.metering, err = startMetering(ctx, m.bus, mc, sh.Metrics, m.Logger); err != nil {
			return err
		}
		sh.Metering = m.metering
	}
	if m.Pricing.Granularity == 0 {
		m.Pricing = billing.DefaultPricing()
	}
	router := gateway.NewRouter(sh.State, sh.Bus, m.Local, m.LocalID, m.Logger)
	async, err := openAsync(ctx, sh.Bus)
	if err != nil {
		return err
	}
	meter := sh.Metering.meter()
	m.Server = gateway.New(m.Config, sh.State, sh.Bus, router, m.Logger).
		WithMetering(meter, sh.Metrics).
		WithAsync(async, gateway.NewDispatcher(async, sh.State, router, meter, sh.Metrics, m.Logger))
	if sh.Metering != nil && sh.Metering.Store != nil {
		m.Server.WithBilling(sh.Metering.Store, m.Pricing)
	}
	return m.Server.Open(ctx)
}

// Close stops taking calls and lets those in flight finish.
func (m *GatewayMain) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	return m.drain(ctx)
}

// drain is Close within ctx's deadline.
func (m *GatewayMain) drain(ctx context.Context) error {
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

// SchedulerMain runs the scheduler role: on its own NATS connection, or
// in `gust up` on the shared one.
type SchedulerMain struct {
	NATSURL string
	Config  scheduler.Config
	Logger  *zap.Logger
	// Shared, when set, replaces NATSURL: see Shared.
	Shared *Shared

	bus       *natsbus.Bus // owned: nil when shared
	Scheduler *scheduler.Scheduler
}

// Run connects to NATS (unless shared) and starts the scheduler.
func (m *SchedulerMain) Run(ctx context.Context) error {
	sh := m.Shared
	if sh == nil {
		bus, state, err := connect(ctx, m.NATSURL, "gust-scheduler", m.Logger)
		if err != nil {
			return err
		}
		m.bus = bus
		sh = &Shared{Bus: bus, State: state}
	}
	m.Scheduler = scheduler.New(m.Config, sh.State, sh.Bus, m.Logger)
	if err := m.Scheduler.Start(ctx); err != nil {
		if m.bus != nil {
			m.bus.Close()
			m.bus = nil
		}
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

// WorkerMain runs the worker role: the pools on the Docker runtime and,
// on its own, an HTTP endpoint gateways invoke it at. In `gust up` it
// runs on what it is given in Shared and, InProcess, has no endpoint.
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
	// Shared, when set, replaces NATSURL and Network, and the worker's
	// own metering: see Shared.
	Shared *Shared
	// InProcess: only the gateway of this process calls the worker (in
	// process), so it opens no HTTP listener and advertises no address.
	InProcess bool

	bus      *natsbus.Bus    // owned: nil when shared
	rt       *docker.Runtime // owned: nil when shared
	metering *Metering       // owned: nil when shared
	Worker   *worker.Worker
	srv      *http.Server
	served   chan struct{} // closed when srv stops serving
}

// workerIDFile keeps the worker id in the data directory, so a restarted
// worker finds the containers it left.
const workerIDFile = "worker-id"

// Run starts the worker. On failure it closes what it opened.
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
		if m.Config.ID, err = localID(m.DataDir, workerIDFile); err != nil {
			return err
		}
	}
	sh := m.Shared
	if sh == nil {
		sh = &Shared{}
		if m.bus, sh.State, err = connect(ctx, m.NATSURL, "gust-worker-"+m.Config.ID, m.Logger); err != nil {
			return err
		}
		sh.Bus = m.bus
		undo = append(undo, m.bus.Close)
		if m.rt, err = openRuntime(ctx, m.Network, m.Logger); err != nil {
			return err
		}
		sh.Runtime = m.rt
		undo = append(undo, m.rt.Close)
	}
	var ln net.Listener
	if !m.InProcess {
		if ln, err = net.Listen("tcp", m.Listen); err != nil {
			return fmt.Errorf("worker listen on %s: %w", m.Listen, err)
		}
		undo = append(undo, ln.Close)
		if m.Config.Addr = m.Advertise; m.Config.Addr == "" {
			m.Config.Addr = advertiseURL(ln.Addr().(*net.TCPAddr))
		}
	}
	if m.Shared == nil {
		sh.Metrics = metrics.New()
		mc := meterConfig{DataDir: m.DataDir, SpoolMax: defaultSpoolMax}
		if m.metering, err = startMetering(ctx, sh.Bus, mc, sh.Metrics, m.Logger); err != nil {
			return err
		}
		sh.Metering = m.metering
		undo = append(undo, m.metering.Close)
	}
	m.Worker = worker.New(m.Config, sh.Runtime, sh.State, sh.Bus, m.Logger).WithMetering(sh.Metering.meter(), sh.Metrics)
	if err := m.Worker.Start(ctx); err != nil {
		return err
	}
	if ln == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", sh.Metrics.Handler())
	mux.Handle("/", m.Worker.Handler())
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(m.Logger.Named("worker.http"))}
	m.served = make(chan struct{})
	go func() {
		defer close(m.served)
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
	return m.drain(ctx)
}

// drain is Close within ctx's deadline.
func (m *WorkerMain) drain(ctx context.Context) error {
	var errs []error
	if m.Worker != nil {
		errs = append(errs, m.Worker.Drain(ctx))
	}
	if m.srv != nil {
		errs = append(errs, m.srv.Shutdown(ctx))
		<-m.served
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

// meter is what to meter calls with: none (a nil interface, not a nil
// *natsbus.Meter in one) when mt is nil.
func (mt *Metering) meter() gust.Meter {
	if mt == nil {
		return nil
	}
	return mt.Meter
}

// UpMain runs every role in one process: embedded NATS, scheduler, one
// worker on the local Docker Engine, and the gateway, which calls that
// worker in process (one network hop per call: gateway → container). It
// composes the role Mains on one Shared: one NATS connection, one metrics
// registry, one metering pipeline and one Docker runtime, which UpMain
// opens and closes itself.
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
	scheduler *SchedulerMain
	worker    *WorkerMain
	gateway   *GatewayMain
}

// Run starts everything, in order (NATS, the connection, the runtime,
// metering, scheduler, worker, gateway), and unwinds what started if a
// part fails.
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
	sh := &Shared{}
	if m.bus, sh.State, err = connect(ctx, m.nats.Server.ClientURL(), "gust-up", m.Logger); err != nil {
		return err
	}
	sh.Bus = m.bus
	if m.rt, err = openRuntime(ctx, m.Network, m.Logger); err != nil {
		return err
	}
	sh.Runtime = m.rt
	m.Metrics = metrics.New()
	sh.Metrics = m.Metrics
	if m.Pricing.Granularity == 0 {
		m.Pricing = billing.DefaultPricing()
	}
	m.Worker.BillingGranularity = m.Pricing.Granularity
	if !m.NoMetering {
		mc := meterConfig{DataDir: m.DataDir, Store: true, SpoolMax: defaultSpoolMax}
		if m.Metering, err = startMetering(ctx, m.bus, mc, m.Metrics, m.Logger); err != nil {
			return err
		}
		sh.Metering = m.Metering
	}
	// A role that fails to start is closed with the others: on a Shared it
	// owns nothing, so Close stops only what it started.
	m.scheduler = &SchedulerMain{Config: m.Scheduler, Logger: m.Logger, Shared: sh}
	if err := m.scheduler.Run(ctx); err != nil {
		return err
	}
	m.worker = &WorkerMain{DataDir: m.DataDir, Config: m.Worker, Logger: m.Logger, Shared: sh, InProcess: true}
	err = m.worker.Run(ctx)
	m.Worker.ID = m.worker.Config.ID
	if err != nil {
		return err
	}
	m.Gateway.Listen = m.Listen
	m.gateway = &GatewayMain{
		Config: m.Gateway, Pricing: m.Pricing, Logger: m.Logger, Shared: sh,
		Local: m.worker.Worker, LocalID: m.Worker.ID,
	}
	return m.gateway.Run(ctx)
}

// GatewayAddr is the address the gateway listens on.
func (m *UpMain) GatewayAddr() string { return m.gateway.Server.Addr() }

// NATSURL is the embedded server's client URL.
func (m *UpMain) NATSURL() string { return m.nats.Server.ClientURL() }

// Close drains in reverse order: the gateway stops taking calls and waits
// for those in flight, the worker stops and removes its containers, then
// metering, the scheduler, the NATS connection, the runtime and the
// server stop. Closing twice closes once.
func (m *UpMain) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	var errs []error
	if m.gateway != nil {
		errs = append(errs, m.gateway.drain(ctx))
	}
	if m.worker != nil {
		errs = append(errs, m.worker.drain(ctx))
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
	m.gateway, m.worker, m.scheduler, m.bus, m.rt, m.Metering = nil, nil, nil, nil, nil, nil
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
