package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/gustfaas/gust/internal/docker"
	"github.com/gustfaas/gust/internal/httplimits"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/worker"
	"go.uber.org/zap"
)

// WorkerMain runs the worker role: the pools on the Docker runtime and,
// on its own, an HTTP endpoint gateways invoke it at. In `gust up` it
// runs on what it is given in Shared and, InProcess, has no endpoint.
type WorkerMain struct {
	NATS   natsbus.ClientConfig
	Listen string // HTTP listen address for calls from gateways
	// Advertise is the base URL gateways reach this worker at; by default
	// derived from Listen (an unspecified host becomes this host's name).
	Advertise string
	Network   string // Docker network of the function containers
	// Isolation around its functions, when it owns its runtime (firewall.go).
	Isolation Isolation
	DataDir   string // keeps the worker id across restarts
	Config    worker.Config
	Logger    *zap.Logger

	// SecretsKeyFile holds the key secrets are encrypted under; empty, it
	// is kept in DataDir (see secretsKey).
	SecretsKeyFile string
	// Listener guards the HTTP listener: the token gateways must send
	// and the largest body taken (see worker.ListenerConfig).
	Listener worker.ListenerConfig
	// TLSCert and TLSKey, when given, serve the listener with TLS (PEM
	// files); the advertised URL is then https.
	TLSCert, TLSKey string
	// Shared, when set, replaces NATS and Network, and the worker's
	// own metering: see Shared.
	Shared *Shared
	// InProcess: only the gateway of this process calls the worker (in
	// process), so it opens no HTTP listener and advertises no address.
	InProcess bool
	// MeterSync: see meterConfig.SyncWait (its own metering only).
	MeterSync time.Duration

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
	defaultCapacity(&m.Config)
	sh := m.Shared
	if sh == nil {
		sh = &Shared{}
		if m.bus, sh.State, err = connect(ctx, m.NATS, "gust-worker-"+m.Config.ID, m.Logger); err != nil {
			return err
		}
		sh.Bus = m.bus
		undo = append(undo, m.bus.Close)
		if sh.Tenancy, err = openSecrets(ctx, m.bus, m.SecretsKeyFile, m.DataDir, m.Logger); err != nil {
			return err
		}
		if m.rt, err = openRuntime(ctx, m.Network, m.Logger); err != nil {
			return err
		}
		sh.Runtime = m.rt
		undo = append(undo, m.rt.Close)
		if err = m.Isolation.open(ctx, m.rt, "", m.Logger); err != nil {
			return err
		}
		undo = append(undo, m.Isolation.close)
	}
	if (m.TLSCert == "") != (m.TLSKey == "") {
		return fmt.Errorf("worker --tls-cert and --tls-key go together")
	}
	var ln net.Listener
	if !m.InProcess {
		if ln, err = net.Listen("tcp", m.Listen); err != nil {
			return fmt.Errorf("worker listen on %s: %w", m.Listen, err)
		}
		undo = append(undo, ln.Close)
		if m.Config.Addr = m.Advertise; m.Config.Addr == "" {
			m.Config.Addr = advertiseURL(ln.Addr().(*net.TCPAddr), m.TLSCert != "")
		}
	}
	if m.Shared == nil {
		sh.Metrics = metrics.New()
		mc := meterConfig{DataDir: m.DataDir, SpoolMax: defaultSpoolMax, SyncWait: m.MeterSync}
		if m.metering, err = startMetering(ctx, sh.Bus, mc, sh.Metrics, m.Logger); err != nil {
			return err
		}
		sh.Metering = m.metering
		undo = append(undo, m.metering.Close)
	}
	m.Worker = worker.New(m.Config, sh.Runtime, sh.State, sh.Bus, m.Logger).WithMetering(sh.Metering.meter(), sh.Metrics)
	if sh.Tenancy != nil {
		m.Worker.WithSecrets(sh.Tenancy.Secrets)
	}
	if logs := openLogs(ctx, sh.Bus, m.Logger); logs != nil {
		m.Worker.WithLogs(logs)
	}
	if err := m.Worker.Start(ctx); err != nil {
		return err
	}
	if ln == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", tokenGuard(m.Listener.Token, sh.Metrics.Handler()))
	mux.Handle("/", m.Worker.Handler(m.Listener))
	m.srv = &http.Server{Handler: mux, ErrorLog: zap.NewStdLog(m.Logger.Named("worker.http"))}
	httplimits.Default().Apply(m.srv) // calls extend their own deadlines (worker/invoke.go)
	m.served = make(chan struct{})
	go func() {
		defer close(m.served)
		serve := func() error { return m.srv.Serve(ln) }
		if m.TLSCert != "" {
			serve = func() error { return m.srv.ServeTLS(ln, m.TLSCert, m.TLSKey) }
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
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
	errs = append(errs, m.Isolation.close())
	if m.rt != nil {
		errs = append(errs, m.rt.Close())
	}
	return errors.Join(errs...)
}

// advertiseURL derives the URL other hosts reach a listener at.
func advertiseURL(addr *net.TCPAddr, tls bool) string {
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s", scheme, net.JoinHostPort(host, fmt.Sprint(addr.Port)))
}
