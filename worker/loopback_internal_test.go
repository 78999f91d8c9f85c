package worker

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// listenOn listens on addr (port 0: any) and accepts until the test ends.
func listenOn(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return ln
}

// TestInstanceDial: an instance's connections go to 127.0.0.1 at its port
// inside its network namespace; a function that does not listen there
// (bound to its bridge address only) is reached at its bridge address, now
// and for every later connection; no namespace, or BridgeCalls, is the
// client's own dial. The worker's own namespace stands in for the
// instance's, and 127.0.0.2 for its bridge address.
func TestInstanceDial(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("entering a network namespace takes root")
	}
	const self = "/proc/self/ns/net"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := &Worker{logger: zaptest.NewLogger(t)}
	peer := func(dial func(context.Context) (net.Conn, error)) string {
		t.Helper()
		c, err := dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		return host
	}

	loop := listenOn(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(loop.Addr().String())
	if got := peer(w.instanceDial(self, net.JoinHostPort("127.0.0.2", port), w.logger)); got != "127.0.0.1" {
		t.Errorf("listening on its loopback: dialed %s, want 127.0.0.1", got)
	}

	bridge := listenOn(t, "127.0.0.2:0")
	_, port, _ = net.SplitHostPort(bridge.Addr().String())
	dial := w.instanceDial(self, net.JoinHostPort("127.0.0.2", port), w.logger)
	if got := peer(dial); got != "127.0.0.2" {
		t.Errorf("not listening on its loopback: dialed %s, want its bridge address 127.0.0.2", got)
	}
	if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port)); err == nil {
		// Something answers on its loopback now: the instance keeps to
		// its bridge address.
		defer ln.Close()
		if got := peer(dial); got != "127.0.0.2" {
			t.Errorf("later connection: dialed %s, want its bridge address", got)
		}
	}

	if w.instanceDial("", "127.0.0.2:1", w.logger) != nil {
		t.Error("no namespace: want the client's own dial")
	}
	w.cfg.BridgeCalls = true
	if w.instanceDial(self, "127.0.0.2:1", w.logger) != nil {
		t.Error("BridgeCalls: want the client's own dial")
	}
}
