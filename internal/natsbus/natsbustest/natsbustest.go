// Package natsbustest starts the real NATS a unit test runs on: an
// embedded server with JetStream on 127.0.0.1 and a free port, storing in
// a temporary directory, with the users and permissions of production
// (no anonymous access), a natsbus.Bus connected to it and the cluster
// state opened on that bus, each stopped when the test ends. The tests of
// gateway, scheduler, worker, cmd/gust and natsbus itself share it so that
// they all run on the same server setup as production, not on a mock of
// *nats.Conn (STYLE.md §6).
//
// natsbus's own package-internal tests cannot import it (natsbustest
// imports natsbus); its external tests (package natsbus_test) can.
package natsbustest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap/zaptest"
)

// Users returns a password for every user of Gust's server (each role and
// events), random for each test.
func Users(tb testing.TB) map[string]string {
	tb.Helper()
	us := map[string]string{}
	for _, u := range append(append([]string(nil), natsbus.Roles...), natsbus.UserEvents) {
		var b [12]byte
		if _, err := rand.Read(b[:]); err != nil {
			tb.Fatalf("password: %v", err)
		}
		us[u] = hex.EncodeToString(b[:])
	}
	return us
}

// MustRunServer starts an embedded NATS server with JetStream storing in
// dir, with a user per role (Users), and shuts it down when the test
// ends. Most tests pass tb.TempDir(); a test of a restart passes the same
// dir to a second server.
func MustRunServer(tb testing.TB, dir string) *natsbus.Server {
	tb.Helper()
	srv, err := natsbus.RunServer(natsbus.ServerConfig{Listen: "127.0.0.1:0", StoreDir: dir, Name: "test", Users: Users(tb)}, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatalf("run nats server: %v", err)
	}
	tb.Cleanup(srv.Shutdown)
	return srv
}

// MustConnect connects to srv as natsbus.UserGust, the user of `gust up`
// that may do what every role does and provisions the streams and
// buckets, and closes (drains) the connection when the test ends, before
// srv shuts down, since cleanups run last first. A failed Close fails the
// test.
func MustConnect(tb testing.TB, srv *natsbus.Server) *natsbus.Bus {
	tb.Helper()
	return MustConnectAs(tb, srv, natsbus.UserGust)
}

// MustConnectAs connects to srv as user, with that user's permissions;
// the connection of natsbus.UserGust provisions.
func MustConnectAs(tb testing.TB, srv *natsbus.Server, user string) *natsbus.Bus {
	tb.Helper()
	b, err := natsbus.ConnectWith(natsbus.ClientConfig{URL: srv.UserURL(user), Name: "test-" + user, Provision: user == natsbus.UserGust}, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatalf("connect as %s: %v", user, err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("close bus: %v", err)
		}
	})
	return b
}

// MustOpenBus starts a server in a fresh directory and connects to it.
func MustOpenBus(tb testing.TB) *natsbus.Bus {
	tb.Helper()
	return MustConnect(tb, MustRunServer(tb, tb.TempDir()))
}

// MustOpenState starts a server in a fresh directory, connects to it and
// opens the cluster state on that connection.
func MustOpenState(tb testing.TB) (*gust.State, *natsbus.Bus) {
	tb.Helper()
	b := MustOpenBus(tb)
	// Opening creates the state's buckets on a fresh server: well under a
	// second, so the bound only keeps a broken server from hanging a test.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := natsbus.OpenState(ctx, b)
	if err != nil {
		tb.Fatalf("open state: %v", err)
	}
	return st, b
}
