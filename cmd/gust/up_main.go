package main

import (
	"context"
	"errors"
	"time"

	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/gustfaas/gust/internal/docker"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/scheduler"
	"github.com/gustfaas/gust/worker"
	"go.uber.org/zap"
)

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
	Isolation  Isolation // around the worker's functions (firewall.go)
	Gateway    gateway.Config
	Scheduler  scheduler.Config
	Worker     worker.Config
	Pricing    billing.Pricing
	// BillingStore is --billing-store: empty for the SQLite file in
	// DataDir, or a PostgreSQL URL.
	BillingStore string
	// BillingRetention > 0 deletes raw call records older than this.
	BillingRetention time.Duration
	// NoMetering switches metering off (for benchmarks against it).
	NoMetering bool
	Logger     *zap.Logger

	// NATSFlags are the embedded server's events password and TLS.
	NATSFlags natsServerFlags

	// SecretsKeyFile holds the key secrets are encrypted under; empty, it
	// is kept in DataDir (see secretsKey).
	SecretsKeyFile string

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
	// The roles' users too, with passwords kept in the data directory:
	// a worker or gateway on another host may join this one.
	m.nats = NATSMain{Listen: m.NATSListen, DataDir: m.DataDir, Roles: true, Flags: m.NATSFlags, Logger: m.Logger}
	if err := m.nats.Run(ctx); err != nil {
		return err
	}
	sh := &Shared{}
	if m.bus, sh.State, err = connect(ctx, m.nats.Server.ProvisionConfig(""), "gust-up", m.Logger); err != nil {
		return err
	}
	sh.Bus = m.bus
	if sh.Tenancy, err = openTenancy(ctx, m.bus, m.SecretsKeyFile, m.DataDir, m.Logger); err != nil {
		return err
	}
	if m.rt, err = openRuntime(ctx, m.Network, m.Logger); err != nil {
		return err
	}
	sh.Runtime = m.rt
	if err = m.Isolation.open(ctx, m.rt, m.Listen, m.Logger); err != nil {
		return err
	}
	m.Metrics = metrics.New()
	sh.Metrics = m.Metrics
	if m.Pricing.Granularity == 0 {
		m.Pricing = billing.DefaultPricing()
	}
	m.Worker.BillingGranularity = m.Pricing.Granularity
	if !m.NoMetering {
		mc := meterConfig{DataDir: m.DataDir, Store: true, SpoolMax: defaultSpoolMax, Retention: m.NATSFlags.meterRetention,
			KeepRaw: m.BillingRetention}
		mc.StoreURL = m.BillingStore
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
	// The admin's callbacks may go to loopback, never to NATS.
	m.Gateway.OwnPorts = append(m.Gateway.OwnPorts, urlPorts(m.nats.Server.ClientURL())...)
	m.gateway = &GatewayMain{
		Config: m.Gateway, Pricing: m.Pricing, Logger: m.Logger, Shared: sh,
		Local: m.worker.Worker, LocalID: m.Worker.ID,
	}
	return m.gateway.Run(ctx)
}

// GatewayAddr is the address the gateway listens on.
func (m *UpMain) GatewayAddr() string { return m.gateway.Server.Addr() }

// NATSURL is the embedded server's client URL, with the credentials of
// the gust user: it holds a password, never log it.
func (m *UpMain) NATSURL() string { return m.nats.Server.UserURL(natsbus.UserGust) }

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
	errs = append(errs, m.Isolation.close())
	if m.rt != nil {
		errs = append(errs, m.rt.Close())
	}
	errs = append(errs, m.nats.Close())
	m.gateway, m.worker, m.scheduler, m.bus, m.rt, m.Metering = nil, nil, nil, nil, nil, nil
	return errors.Join(errs...)
}
