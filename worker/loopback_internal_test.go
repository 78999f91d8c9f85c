package worker

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

	// Namespace files out of this worker's reach (a worker in a
	// container): the bridge address, and the bridge for every later
	// instance.
	missing := filepath.Join(t.TempDir(), "no-such-namespace")
	if got := peer(w.instanceDial(missing, bridge.Addr().String(), w.logger)); got != "127.0.0.2" || !w.noLoopback.Load() {
		t.Errorf("namespace out of reach: dialed %s with noLoopback %v, want the bridge address and no more tries", got, w.noLoopback.Load())
	}
	if w.instanceDial(self, "127.0.0.2:1", w.logger) != nil {
		t.Error("after a namespace out of reach: want the client's own dial")
	}
	w.noLoopback.Store(false)

	if w.instanceDial("", "127.0.0.2:1", w.logger) != nil {
		t.Error("no namespace: want the client's own dial")
	}
	w.cfg.BridgeCalls = true
	if w.instanceDial(self, "127.0.0.2:1", w.logger) != nil {
		t.Error("BridgeCalls: want the client's own dial")
	}
}

// TestInstanceDial_Unprivileged: a worker that may not enter network
// namespaces (this test binary again, as an unprivileged user) reaches the
// instance at its bridge address, and stops trying its loopback.
func TestInstanceDial_Unprivileged(t *testing.T) {
	if bridge := os.Getenv("GUST_TEST_UNPRIVILEGED_BRIDGE"); bridge != "" {
		// The unprivileged side: the worker's own namespace stands in
		// for the instance's, which it may not enter either.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w := &Worker{logger: zaptest.NewLogger(t)}
		c, err := w.instanceDial("/proc/self/ns/net", bridge, w.logger)(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := c.RemoteAddr().String(); got != bridge || !w.noLoopback.Load() {
			t.Errorf("dialed %s with noLoopback %v; want the bridge address %s, and no more tries", got, w.noLoopback.Load(), bridge)
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("running the test as another user takes root")
	}
	bridge := listenOn(t, "127.0.0.2:0")
	// A copy of this test binary that the other user may run: the build
	// directory is root's alone.
	dir, err := os.MkdirTemp("", "gust-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin := filepath.Join(dir, "worker.test")
	self, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(bin, self, 0o755)
	}
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run", "^TestInstanceDial_Unprivileged$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GUST_TEST_UNPRIVILEGED_BRIDGE="+bridge.Addr().String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("as an unprivileged user: %v\n%s", err, out)
	}
}
