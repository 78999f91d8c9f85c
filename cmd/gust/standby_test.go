package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/worker"
)

// TestSeparateSchedulers_Takeover runs two `gust scheduler` roles with
// the scheduler user's permissions: the first leads, and deploys place.
// The leader then dies without a word (its NATS connection drops; it
// gives no lease up), and a deploy made at once still places, once the
// standby took over, and its function answers.
func TestSeparateSchedulers_Takeover(t *testing.T) {
	MustImages(t)
	logger := testLogger(t)
	ctx := context.Background()
	dir := t.TempDir()
	n := &NATSMain{Listen: "127.0.0.1:0", DataDir: dir, Roles: true, Logger: logger}
	if err := n.Run(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	schedulers := make([]*SchedulerMain, 2)
	for i := range schedulers {
		cfg := defaultSchedulerConfig()
		cfg.ID = fmt.Sprintf("s%d", i+1)
		s := &SchedulerMain{NATS: roleNATS(n, natsbus.UserScheduler), Config: cfg, Logger: logger.Named(cfg.ID)}
		if err := s.Run(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		schedulers[i] = s
	}
	wk := &WorkerMain{NATS: roleNATS(n, natsbus.UserWorker), Listener: worker.ListenerConfig{Token: "standby"}, Listen: "127.0.0.1:0", Network: testNetwork, DataDir: filepath.Join(dir, "worker"), Config: defaultWorkerConfig(), Logger: logger}
	if err := wk.Run(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		wk.Close()
		MustNoContainers(t, map[string]string{gust.LabelWorker: wk.Config.ID})
	})
	gc := defaultGatewayConfig()
	gc.Listen = "127.0.0.1:0"
	g := &GatewayMain{NATS: roleNATS(n, natsbus.UserGateway), WorkerToken: "standby", Config: gc, DataDir: filepath.Join(dir, "gateway"), Logger: logger}
	if err := g.Run(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	base := "http://" + g.Server.Addr()
	c := gateway.NewClient(base)

	// The test looks at the lease and placements as a scheduler may.
	bus, err := natsbus.ConnectWith(roleNATS(n, natsbus.UserScheduler), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	leases, err := natsbus.OpenLeases(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	state, err := natsbus.OpenState(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	holder := func() string {
		l, _, err := leases.Get(ctx, gust.LeaderKey)
		if err != nil {
			return err.Error()
		}
		return l.Holder
	}
	if got := holder(); got != "s1" {
		t.Fatalf("lease held by %q, want s1 (started first)", got)
	}
	deployed := func(name string) {
		t.Helper()
		if err := c.Deploy(ctx, gust.FunctionSpec{Service: name, Image: imageTag("echo")}, false); err != nil {
			t.Fatal(err)
		}
		// The deploy waits for its placement: the function is placed and
		// answers at once.
		if _, _, err := state.Placements.Get(ctx, gust.FunctionKey(gust.DefaultNamespace, name)); err != nil {
			t.Errorf("placement of %s after its deploy: %v", name, err)
		}
		check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
			if st, _, out := call(t, "GET", base+"/function/"+name, ""); st != 200 {
				return fmt.Errorf("call %s: %d %s", name, st, out)
			}
			return nil
		})
	}
	deployed("before")

	// s1 dies: its connection drops with its subscriptions, its lease
	// stays until it runs out.
	died := time.Now()
	if err := schedulers[0].bus.Close(); err != nil {
		t.Fatal(err)
	}
	deployed("after")
	if got := holder(); got != "s2" {
		t.Errorf("lease held by %q after s1 died, want s2", got)
	}
	t.Logf("deploy placed %v after the leader died (lease TTL %v)", time.Since(died).Round(time.Millisecond), natsbus.LeaseTTL)
}
