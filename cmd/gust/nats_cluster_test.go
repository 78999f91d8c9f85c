package main

import (
	"testing"

	"go.uber.org/zap"
)

// TestNATSClusterFlags: servers sharing an auth directory get the same
// route password (the first generates it, the next reads it); three
// replicas by default with two routes, one for a single server; --routes
// or --replicas without --cluster-listen are refused.
func TestNATSClusterFlags(t *testing.T) {
	t.Setenv("GUST_NATS_CLUSTER_PASSWORD", "")
	auth := t.TempDir()
	one := natsClusterFlags{listen: "127.0.0.1:6222", routes: "nats://nats2:6222, nats://nats3:6222", name: "gust", serverName: "nats1"}
	two := natsClusterFlags{listen: "127.0.0.1:6222", routes: "nats://nats1:6222,nats://nats3:6222", name: "gust", serverName: "nats2"}
	c1, err := one.config(auth, t.TempDir(), zap.NewNop())
	if err != nil {
		t.Fatalf("config of nats1: %v", err)
	}
	c2, err := two.config(auth, t.TempDir(), zap.NewNop())
	if err != nil {
		t.Fatalf("config of nats2: %v", err)
	}
	if c1.Password == "" || c1.Password != c2.Password || c1.User != routeUser {
		t.Errorf("route credentials differ or are empty: %q/%q and %q/%q", c1.User, c1.Password, c2.User, c2.Password)
	}
	if len(c1.Routes) != 2 || c1.Routes[1] != "nats://nats3:6222" {
		t.Errorf("routes of nats1 = %q", c1.Routes)
	}
	if r := one.replicasOrDefault(); r != 3 {
		t.Errorf("replicas with two routes = %d, want 3", r)
	}
	single := natsClusterFlags{}
	if c, err := single.config(auth, t.TempDir(), zap.NewNop()); c != nil || err != nil {
		t.Errorf("a single server's cluster config = %v, %v; want none", c, err)
	}
	if r := single.replicasOrDefault(); r != 1 {
		t.Errorf("replicas of a single server = %d, want 1", r)
	}
	if _, err := (&natsClusterFlags{routes: "nats://nats2:6222"}).config(auth, t.TempDir(), zap.NewNop()); err == nil {
		t.Errorf("--routes without --cluster-listen accepted")
	}
	if _, err := (&natsClusterFlags{replicas: 3}).config(auth, t.TempDir(), zap.NewNop()); err == nil {
		t.Errorf("--replicas 3 without a cluster accepted")
	}
}
