package main

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
)

// GatewayMain runs the gateway role: on its own with its NATS connection,
// metering and billing store, or in `gust up` on what it is given in
// Shared, calling the worker of its process in process.
type GatewayMain struct {
	NATS    natsbus.ClientConfig
	Config  gateway.Config
	DataDir string // the billing store and the spool of rejected calls
	Pricing billing.Pricing
	// BillingRetention > 0 deletes raw call records older than this.
	BillingRetention time.Duration
	Logger           *zap.Logger

	// SecretsKeyFile holds the key secrets are encrypted under; empty, it
	// is kept in DataDir (see secretsKey).
	SecretsKeyFile string
	// BillingStore is --billing-store: empty for the SQLite file in
	// DataDir, or a PostgreSQL URL.
	BillingStore string
	// Shared, when set, replaces NATS and DataDir: see Shared.
	Shared *Shared
	// Local is the worker of this process, which the gateway calls in
	// process (one network hop less per call); LocalID is its id. Nil
	// when every worker is reached over HTTP.
	Local   gust.Invoker
	LocalID string
	// WorkerToken is sent to the workers reached over HTTP (see
	// worker_token.go).
	WorkerToken string
	// WorkerTLS is what calls to workers with TLS (advertised at https://
	// URLs) trust; nil: the system's CAs.
	WorkerTLS *tls.Config

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
		if m.bus, sh.State, err = connect(ctx, m.NATS, "gust-gateway", m.Logger); err != nil {
			return err
		}
		sh.Bus = m.bus
		if sh.Tenancy, err = openTenancy(ctx, m.bus, m.SecretsKeyFile, m.DataDir, m.Logger); err != nil {
			return err
		}
		mc := meterConfig{DataDir: m.DataDir, Store: true, SpoolMax: defaultSpoolMax, KeepRaw: m.BillingRetention}
		mc.StoreURL = m.BillingStore
		if m.metering, err = startMetering(ctx, m.bus, mc, sh.Metrics, m.Logger); err != nil {
			return err
		}
		sh.Metering = m.metering
	}
	if m.Pricing.Granularity == 0 {
		m.Pricing = billing.DefaultPricing()
	}
	router := gateway.NewRouter(sh.State, sh.Bus, m.Local, m.LocalID, m.Logger)
	router.WorkerToken = m.WorkerToken
	if m.WorkerTLS != nil {
		router.SetWorkerTLS(m.WorkerTLS)
	}
	async, err := openAsync(ctx, sh.Bus)
	if err != nil {
		return err
	}
	meter := sh.Metering.meter()
	if m.Shared == nil {
		// The admin's callbacks may go to loopback, never to NATS.
		m.Config.OwnPorts = append(m.Config.OwnPorts, urlPorts(m.NATS.URL)...)
	}
	m.Server = gateway.New(m.Config, sh.State, sh.Bus, router, m.Logger).
		WithMetering(meter, sh.Metrics).
		WithAsync(async, gateway.NewDispatcher(async, sh.State, router, meter, sh.Metrics, m.Logger))
	if sh.Metering != nil && sh.Metering.Store != nil {
		m.Server.WithBilling(sh.Metering.Store, m.Pricing)
	}
	if sh.Tenancy != nil {
		m.Server.WithTenancy(sh.Tenancy)
	}
	if logs := openLogs(ctx, sh.Bus, m.Logger); logs != nil {
		m.Server.WithLogs(logs)
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

// idempotencyWindow is how long an async idempotency key holds.
const idempotencyWindow = 24 * time.Hour

// openAsync opens the streams and tables of async calls and event
// triggers.
func openAsync(ctx context.Context, bus *natsbus.Bus) (*gateway.Async, error) {
	as, err := natsbus.OpenAsync(ctx, bus, idempotencyWindow)
	if err != nil {
		return nil, err
	}
	// An external NATS server may take smaller messages than Gust's own
	// (1 MiB is nats-server's default): async bodies are bounded by it.
	return &gateway.Async{
		Queue: bus, Events: bus, DeadLetters: natsbus.NewDeadLetters(bus),
		Calls: as.Calls, Idempotency: as.Idempotency, Stream: natsbus.StreamAsync,
		MaxMessage: int(min(bus.NC.MaxPayload(), 8<<20)),
	}, nil
}
