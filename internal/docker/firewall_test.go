package docker

import (
	"net"
	"net/url"
	"os"
	"strconv"
	"testing"

	"github.com/gustfaas/gust/internal/firewall"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"go.uber.org/zap"
)

// listen opens a TCP listener on every interface of the host, as NATS or
// a worker's listener might, that accepts and closes connections.
func listen(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestFirewall: with Gust's host rules installed for this runtime's
// bridges, a function cannot open a connection to a listener on every
// interface of its host (reached at its bridge's gateway address), while
// the allowed port (the gateway's) stays reachable and the worker still
// reaches the function; removing the rules opens the host again.
func TestFirewall(t *testing.T) {
	r := MustRuntime(t)
	inst := startIn(t, r, "fw")
	gw := gatewayOf(mustInspectNetwork(t, r, r.NetworkOf("fw")))
	if gw == "" {
		t.Fatal("the function network has no IPv4 gateway")
	}
	denied := net.JoinHostPort(gw, strconv.Itoa(listen(t)))
	// A real NATS server of Gust's, listening on every interface as
	// `gust up --nats-listen 0.0.0.0:...` does.
	ns, err := natsbus.RunServer(natsbus.ServerConfig{Listen: "0.0.0.0:0", StoreDir: t.TempDir(), Name: "fw", Users: natsbustest.Users(t)}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	natsURL, err := url.Parse(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	deniedNATS := net.JoinHostPort(gw, natsURL.Port())
	allowedPort := listen(t)
	allowed := net.JoinHostPort(gw, strconv.Itoa(allowedPort))

	// Without the rules the host is open: what follows is the rules' doing.
	if err := dial(t, inst, denied); err != nil {
		t.Fatalf("before the firewall, the function could not reach the host at %s: %v", denied, err)
	}
	if err := dial(t, inst, deniedNATS); err != nil {
		t.Fatalf("before the firewall, the function could not reach NATS at %s: %v", deniedNATS, err)
	}

	fw, err := firewall.Install(firewall.Config{
		Table:        "gust_test_" + runID,
		BridgePrefix: r.BridgePrefix(),
		AllowPorts:   []int{allowedPort},
	})
	if err != nil {
		if os.Getenv("GUST_REQUIRE_FIREWALL") != "" {
			t.Fatalf("install firewall: %v", err)
		}
		t.Skipf("nftables not usable here: %v", err)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			if err := fw.Remove(); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})

	if err := dial(t, inst, denied); err == nil {
		t.Errorf("with the firewall, the function reached a listener of its host at %s", denied)
	} else {
		t.Logf("function → host %s: %v", denied, err)
	}
	if err := dial(t, inst, deniedNATS); err == nil {
		t.Errorf("with the firewall, the function reached NATS at %s", deniedNATS)
	}
	if err := dial(t, inst, allowed); err != nil {
		t.Errorf("with the firewall, the function could not reach the allowed port at %s: %v", allowed, err)
	}
	// By the name OpenFaaS functions call the gateway at.
	if err := dial(t, inst, net.JoinHostPort("gateway.openfaas", strconv.Itoa(allowedPort))); err != nil {
		t.Errorf("with the firewall, the function could not reach gateway.openfaas on the allowed port: %v", err)
	}
	MustHealthy(t, inst) // the worker (this test, on the host) still reaches it
	later := startIn(t, r, "fw")
	if err := dial(t, later, allowed); err != nil {
		t.Errorf("a function started under the firewall could not reach the allowed port: %v", err)
	}

	if err := fw.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	removed = true
	if err := dial(t, inst, denied); err != nil {
		t.Errorf("after Remove, the function still could not reach %s: %v", denied, err)
	}
}
