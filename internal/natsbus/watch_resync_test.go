package natsbus_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"go.uber.org/zap/zaptest"
)

// TestTable_WatchAfterServerRestart: a server restart loses an in-memory
// bucket (the workers' heartbeats) and numbers its entries from 1 again.
// A watch that was running starts over once its link is back: it sees the
// values written after the restart, and keys that did not come back are
// delivered as deleted.
func TestTable_WatchAfterServerRestart(t *testing.T) {
	ctx := context.Background()
	dir, users := t.TempDir(), natsbustest.Users(t)
	run := func(listen string) *natsbus.Server {
		srv, err := natsbus.RunServer(natsbus.ServerConfig{Listen: listen, StoreDir: dir, Name: "test", Users: users}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatalf("run nats server: %v", err)
		}
		return srv
	}
	srv := run("127.0.0.1:0")
	var again *natsbus.Server
	t.Cleanup(func() {
		if again != nil {
			again.Shutdown()
		}
	})
	bus := natsbustest.MustConnect(t, srv)
	st, err := natsbus.OpenState(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"w1", "w2"} {
		if _, err := st.Workers.Put(ctx, id, gust.WorkerInfo{ID: id, Addr: "before"}); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	seen := map[string]string{} // key -> Addr, or "deleted"
	err = st.Workers.Watch(ctx, ">", func(c gust.Change[gust.WorkerInfo]) {
		mu.Lock()
		defer mu.Unlock()
		seen[c.Key] = c.Value.Addr
		if c.Deleted {
			seen[c.Key] = "deleted"
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := func(w string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			var got []string
			for _, k := range slices.Sorted(maps.Keys(seen)) {
				got = append(got, fmt.Sprintf("%s=%s", k, seen[k]))
			}
			if s := strings.Join(got, " "); s != w {
				return fmt.Errorf("watch sees %q, want %q", s, w)
			}
			return nil
		}
	}
	check.For(t, 5*time.Second, 10*time.Millisecond, want("w1=before w2=before"))

	addr := strings.TrimPrefix(srv.ClientURL(), "nats://")
	srv.Shutdown()
	again = run(addr)
	// What `gust nats` does on start; then only w1 beats again.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := natsbus.Provision(pctx, natsbustest.MustConnect(t, again), time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, err := st.Workers.Put(ctx, "w1", gust.WorkerInfo{ID: "w1", Addr: "back"})
		if err != nil {
			return err
		}
		return want("w1=back w2=deleted")()
	})
}
