package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"
)

// MustRunServer starts an embedded NATS server with JetStream storing in
// dir, and shuts it down when the test ends.
func MustRunServer(tb testing.TB, dir string) *natsbus.Server {
	tb.Helper()
	srv, err := natsbus.RunServer(natsbus.ServerConfig{Listen: "127.0.0.1:0", StoreDir: dir, Name: "test"}, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatalf("run nats server: %v", err)
	}
	tb.Cleanup(srv.Shutdown)
	return srv
}

// MustConnect connects to srv and drains the connection when the test
// ends (before the server shuts down, since cleanups run last first).
func MustConnect(tb testing.TB, srv *natsbus.Server) *natsbus.Bus {
	tb.Helper()
	b, err := natsbus.Connect(srv.ClientURL(), "test", zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatalf("connect: %v", err)
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

// MustOpenTable opens a table of bucket on b.
func MustOpenTable[T any](tb testing.TB, b *natsbus.Bus, bucket string) *natsbus.Table[T] {
	tb.Helper()
	t, err := natsbus.OpenTable[T](context.Background(), b, natsbus.TableConfig{Bucket: bucket})
	if err != nil {
		tb.Fatalf("open table %s: %v", bucket, err)
	}
	return t
}

// MustPut writes v at key.
func MustPut[T any](tb testing.TB, t gust.Table[T], key string, v T) uint64 {
	tb.Helper()
	rev, err := t.Put(context.Background(), key, v)
	if err != nil {
		tb.Fatalf("put %s: %v", key, err)
	}
	return rev
}

// checkFor calls f every interval until it returns nil, and fails the test
// with f's last error if that does not happen within total.
func checkFor(tb testing.TB, total, every time.Duration, f func() error) {
	tb.Helper()
	end := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			tb.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(every)
	}
}

type item struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

func TestTable_GetPut(t *testing.T) {
	ctx := context.Background()
	tbl := MustOpenTable[item](t, MustOpenBus(t), "test_getput")

	t.Run("ErrNotFound", func(t *testing.T) {
		_, _, err := tbl.Get(ctx, "missing")
		if !errors.Is(err, gust.ErrNotFound) {
			t.Fatalf("Get(missing) = %v, want an error wrapping gust.ErrNotFound", err)
		}
	})
	t.Run("OK", func(t *testing.T) {
		rev1 := MustPut(t, tbl, "ns.a", item{Name: "a", N: 1})
		got, rev, err := tbl.Get(ctx, "ns.a")
		if err != nil {
			t.Fatal(err)
		}
		if want := (item{Name: "a", N: 1}); got != want {
			t.Errorf("Get() = %+v, want %+v", got, want)
		}
		if rev != rev1 {
			t.Errorf("Get() revision = %d, want %d (Put's)", rev, rev1)
		}
		rev2 := MustPut(t, tbl, "ns.a", item{Name: "a", N: 2})
		if rev2 <= rev1 {
			t.Errorf("second Put revision = %d, want > %d", rev2, rev1)
		}
		got, _, err = tbl.Get(ctx, "ns.a")
		if err != nil {
			t.Fatal(err)
		}
		if got.N != 2 {
			t.Errorf("Get() after second Put: N = %d, want 2", got.N)
		}
	})
	t.Run("ErrDecode", func(t *testing.T) {
		raw := MustOpenTable[string](t, MustOpenBusOf(t, tbl), "test_getput")
		_ = raw
	})
}

// MustOpenBusOf exists only to keep the table tests symmetric; the decode
// test below uses its own bucket.
func MustOpenBusOf[T any](tb testing.TB, _ *natsbus.Table[T]) *natsbus.Bus {
	tb.Helper()
	return MustOpenBus(tb)
}
