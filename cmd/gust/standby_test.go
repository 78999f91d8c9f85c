package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
)

// TestSeparateSchedulers_Takeover runs two `gust scheduler` roles with
// the scheduler user's permissions: the first leads, and deploys place.
// The leader then dies without a word (its NATS connection drops; it
// gives no lease up), and a deploy made at once still places, once the
// standby took over, and its function answers.
func TestSeparateSchedulers_Takeover(t *testing.T) {
	MustImages(t)
	ctx := context.Background()
	r := mustRolesApart(t, "standby")
	n, logger := r.NATS, r.logger
	schedulers := make([]*SchedulerMain, 2)
	for i := range schedulers {
		cfg := defaultSchedulerConfig()
		cfg.ID = fmt.Sprintf("s%d", i+1)
		schedulers[i] = r.scheduler(cfg, cfg.ID)
	}
	r.worker(defaultWorkerConfig(), "")
	_, base := r.gateway()
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
