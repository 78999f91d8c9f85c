package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/scheduler"
	"github.com/gustfaas/gust/worker"
	"go.uber.org/zap"
)

// rolesApart runs Gust's roles as separate Mains in this process, each on
// its own NATS connection as its own user, as on separate hosts: `gust
// nats` first, then whatever schedulers, workers and gateways a test asks
// for, each stopped when the test ends (a worker leaves no container).
type rolesApart struct {
	t      testing.TB
	dir    string
	logger *zap.Logger
	// token is the worker token its gateways and workers share.
	token string
	NATS  *NATSMain
	// gateways counts the gateways started: each has its own data
	// directory (its spool, billing store and billing id are its own).
	gateways int
}

// mustRolesApart starts the NATS server of a cluster whose gateways and
// workers share token.
func mustRolesApart(t testing.TB, token string) *rolesApart {
	t.Helper()
	r := &rolesApart{t: t, dir: t.TempDir(), logger: testLogger(t), token: token}
	r.NATS = &NATSMain{Listen: "127.0.0.1:0", DataDir: r.dir, Roles: true, Logger: r.logger}
	if err := r.NATS.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.NATS.Close() })
	return r
}

// named is the logger of a part, named when name is set.
func (r *rolesApart) named(name string) *zap.Logger {
	if name == "" {
		return r.logger
	}
	return r.logger.Named(name)
}

// scheduler starts a scheduler with cfg.
func (r *rolesApart) scheduler(cfg scheduler.Config, name string) *SchedulerMain {
	r.t.Helper()
	s := &SchedulerMain{NATS: roleNATS(r.NATS, natsbus.UserScheduler), Config: cfg, Logger: r.named(name)}
	if err := s.Run(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { s.Close() })
	return s
}

// worker starts a worker with cfg, its data in a directory of its name;
// when the test ends it stops and must have removed its containers.
func (r *rolesApart) worker(cfg worker.Config, name string) *WorkerMain {
	r.t.Helper()
	wk := &WorkerMain{NATS: roleNATS(r.NATS, natsbus.UserWorker), Listener: worker.ListenerConfig{Token: r.token},
		Listen: "127.0.0.1:0", Network: testNetwork, DataDir: filepath.Join(r.dir, "worker-"+name), Config: cfg, Logger: r.named(name)}
	if err := wk.Run(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		wk.Close()
		MustNoContainers(r.t, map[string]string{gust.LabelWorker: wk.Config.ID})
	})
	return wk
}

// gateway starts a gateway with the tests' defaults on a free port and
// returns it and its base URL.
func (r *rolesApart) gateway() (*GatewayMain, string) {
	r.t.Helper()
	gc := defaultGatewayConfig()
	gc.Listen = "127.0.0.1:0"
	r.gateways++
	dir := filepath.Join(r.dir, fmt.Sprintf("gateway-%d", r.gateways))
	g := &GatewayMain{NATS: roleNATS(r.NATS, natsbus.UserGateway), WorkerToken: r.token, Config: gc, DataDir: dir, Logger: r.logger}
	if err := g.Run(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { g.Close() })
	return g, "http://" + g.Server.Addr()
}
