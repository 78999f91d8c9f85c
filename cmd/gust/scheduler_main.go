package main

import (
	"context"
	"errors"

	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/scheduler"
	"go.uber.org/zap"
)

// SchedulerMain runs the scheduler role: on its own NATS connection, or
// in `gust up` on the shared one.
type SchedulerMain struct {
	NATS   natsbus.ClientConfig
	Config scheduler.Config
	Logger *zap.Logger
	// Shared, when set, replaces NATS: see Shared.
	Shared *Shared

	bus       *natsbus.Bus // owned: nil when shared
	Scheduler *scheduler.Scheduler
}

// Run connects to NATS (unless shared) and starts the scheduler.
func (m *SchedulerMain) Run(ctx context.Context) error {
	sh := m.Shared
	if sh == nil {
		bus, state, err := connect(ctx, m.NATS, "gust-scheduler", m.Logger)
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
