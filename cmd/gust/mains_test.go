package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/natsbus"
)

// TestRolesOnShared runs the scheduler and gateway Mains the way `gust up`
// does, on a Shared (no Docker needed): they serve on what they are given,
// open no store or spool of their own, and close none of it.
func TestRolesOnShared(t *testing.T) {
	for _, tc := range []struct {
		name    string
		metered bool
		// invocations is the status of GET /system/invocations: served
		// from the shared billing store, or 503 without one.
		invocations int
	}{
		{name: "Metered", metered: true, invocations: 200},
		{name: "NotMetered", metered: false, invocations: 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			logger := testLogger(t)
			dir := t.TempDir()
			n := &NATSMain{Listen: "127.0.0.1:0", DataDir: dir, Logger: logger}
			if err := n.Run(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { n.Close() })
			bus, state, err := connect(ctx, n.Server.ProvisionConfig(""), "gust-test", logger)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { bus.Close() })
			sh := &Shared{Bus: bus, State: state, Metrics: metrics.New()}
			if tc.metered {
				mc := meterConfig{DataDir: dir, Store: true, SpoolMax: 1 << 20}
				if sh.Metering, err = startMetering(ctx, bus, mc, sh.Metrics, logger); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { sh.Metering.Close() })
			}

			sc := &SchedulerMain{Config: defaultSchedulerConfig(), Logger: logger, Shared: sh}
			if err := sc.Run(ctx); err != nil {
				t.Fatal(err)
			}
			gc := defaultGatewayConfig()
			gc.Listen = "127.0.0.1:0"
			g := &GatewayMain{Config: gc, Logger: logger, Shared: sh}
			if err := g.Run(ctx); err != nil {
				sc.Close()
				t.Fatal(err)
			}
			base := "http://" + g.Server.Addr()
			if st, _, body := call(t, "GET", base+"/system/functions", ""); st != 200 {
				t.Errorf("GET /system/functions: %d %s", st, body)
			}
			if st, _, body := call(t, "GET", base+"/system/invocations", ""); st != tc.invocations {
				t.Errorf("GET /system/invocations: %d %s, want %d", st, body, tc.invocations)
			}
			if err := g.Close(); err != nil {
				t.Errorf("close gateway: %v", err)
			}
			if err := sc.Close(); err != nil {
				t.Errorf("close scheduler: %v", err)
			}

			// The gateway has no DataDir: with its own metering it would
			// have opened billing.db and a spool in the working directory.
			for _, name := range []string{"billing.db", "spool"} {
				if _, err := os.Stat(name); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s in the working directory (stat: %v)", name, err)
				}
			}
			// What the roles were given is still open.
			if _, err := natsbus.OpenState(ctx, bus); err != nil {
				t.Errorf("shared connection after the roles closed: %v", err)
			}
			if tc.metered {
				if _, _, err := sh.Metering.Store.Calls(ctx, gust.CallFilter{}); err != nil {
					t.Errorf("shared billing store after the roles closed: %v", err)
				}
				if _, err := os.Stat(filepath.Join(dir, "billing.db")); err != nil {
					t.Errorf("shared billing store: %v", err)
				}
			}
		})
	}
}
