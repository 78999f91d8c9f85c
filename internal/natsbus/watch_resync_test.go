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
// values written after the restart. A key of a stored bucket that did not
// come back is delivered as deleted; one of an in-memory bucket is not
// (its writer puts it back within a heartbeat: taking it for deleted would
// drop a live worker from the routes until then).
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
	put := func(id, addr string) error {
		if _, err := st.Workers.Put(ctx, id, gust.WorkerInfo{ID: id, Addr: addr}); err != nil {
			return err
		}
		_, err := st.Functions.Put(ctx, "openfaas-fn."+id, gust.Function{Spec: gust.FunctionSpec{Image: addr}})
		return err
	}
	for _, id := range []string{"a", "b"} {
		if err := put(id, "before"); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	seen := map[string]string{} // table/key -> value, or "deleted"
	watch := func(table string, value func(c any) string) func(key string, deleted bool, v any) {
		return func(key string, deleted bool, v any) {
			mu.Lock()
			defer mu.Unlock()
			seen[table+"/"+key] = value(v)
			if deleted {
				seen[table+"/"+key] = "deleted"
			}
		}
	}
	onWorker := watch("w", func(v any) string { return v.(gust.WorkerInfo).Addr })
	onFunction := watch("f", func(v any) string { return v.(gust.Function).Spec.Image })
	if err := st.Workers.Watch(ctx, ">", func(c gust.Change[gust.WorkerInfo]) { onWorker(c.Key, c.Deleted, c.Value) }); err != nil {
		t.Fatal(err)
	}
	if err := st.Functions.Watch(ctx, ">", func(c gust.Change[gust.Function]) { onFunction(c.Key, c.Deleted, c.Value) }); err != nil {
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
				return fmt.Errorf("watches see %q, want %q", s, w)
			}
			return nil
		}
	}
	check.For(t, 5*time.Second, 10*time.Millisecond, want("f/openfaas-fn.a=before f/openfaas-fn.b=before w/a=before w/b=before"))

	addr := strings.TrimPrefix(srv.ClientURL(), "nats://")
	srv.Shutdown()
	again = run(addr)
	// What `gust nats` does on start. The stored functions survive the
	// restart; b's is deleted meanwhile, and only a beats again.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := natsbus.Provision(pctx, natsbustest.MustConnect(t, again), time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if err := st.Functions.Delete(ctx, "openfaas-fn.b"); err != nil {
			return err
		}
		return put("a", "back")
	})
	check.For(t, 10*time.Second, 20*time.Millisecond, want("f/openfaas-fn.a=back f/openfaas-fn.b=deleted w/a=back w/b=before"))
}
