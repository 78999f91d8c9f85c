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

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/httplimits"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/scheduler"
	"go.uber.org/zap"
)

// SchedulerMain runs the scheduler role: on its own NATS connection, as
// one of several that elect their leader through the lease bucket, or in
// `gust up` on the shared one, alone.
type SchedulerMain struct {
	NATS   natsbus.ClientConfig
	Config scheduler.Config
	Logger *zap.Logger
	// Listen, when set, is the HTTP address serving /metrics and
	// /healthz of a scheduler on its own.
	Listen string
	// Shared, when set, replaces NATS: see Shared.
	Shared *Shared

	bus       *natsbus.Bus // owned: nil when shared
	srv       *http.Server
	served    chan struct{} // closed when srv stops serving
	Scheduler *scheduler.Scheduler
}

// Run connects to NATS (unless shared) and starts the scheduler.
func (m *SchedulerMain) Run(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			_ = m.Close()
		}
	}()
	sh := m.Shared
	var leases *natsbus.Table[gust.Lease]
	if sh == nil {
		bus, state, err := connect(ctx, m.NATS, "gust-scheduler", m.Logger)
		if err != nil {
			return err
		}
		m.bus = bus
		sh = &Shared{Bus: bus, State: state, Metrics: metrics.New()}
		// Several schedulers may run: the one that holds the lease leads.
		if leases, err = natsbus.OpenLeases(ctx, bus); err != nil {
			return fmt.Errorf("open the leader's lease: %w", err)
		}
		if m.Config.ID == "" {
			m.Config.ID = schedulerID()
		}
		m.Config.LeaseTTL = natsbus.LeaseTTL
	}
	m.Scheduler = scheduler.New(m.Config, sh.State, sh.Bus, m.Logger).WithMetrics(sh.Metrics)
	if leases != nil {
		m.Scheduler.WithLeases(leases)
	}
	if err := m.Scheduler.Start(ctx); err != nil {
		return err
	}
	if m.Listen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", m.Listen)
	if err != nil {
		return fmt.Errorf("scheduler listen on %s: %w", m.Listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", sh.Metrics.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	m.srv = &http.Server{Handler: mux, ErrorLog: zap.NewStdLog(m.Logger.Named("scheduler.http"))}
	httplimits.Default().Apply(m.srv)
	m.served = make(chan struct{})
	go func() {
		defer close(m.served)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("scheduler serve", zap.Error(err))
		}
	}()
	return nil
}

// schedulerID names a scheduler in the leader election: its host name
// (the container's, under Docker) and a random suffix, so that two on one
// host differ.
func schedulerID() string {
	host, _ := os.Hostname()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// Close stops the scheduler; a leader gives its lease up.
func (m *SchedulerMain) Close() error {
	var errs []error
	if m.srv != nil {
		errs = append(errs, m.srv.Close())
		<-m.served
		m.srv = nil
	}
	if m.Scheduler != nil {
		errs = append(errs, m.Scheduler.Close())
		m.Scheduler = nil
	}
	if m.bus != nil {
		errs = append(errs, m.bus.Close())
		m.bus = nil
	}
	return errors.Join(errs...)
}
