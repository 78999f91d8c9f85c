package natsbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/nats-io/nats.go"
)

// mustProvisioned starts a server with every user and creates Gust's
// streams and buckets on it, as `gust nats` does on start.
func mustProvisioned(t *testing.T) *natsbus.Server {
	t.Helper()
	srv := natsbustest.MustRunServer(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := natsbus.Provision(ctx, natsbustest.MustConnect(t, srv), time.Hour, 0); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return srv
}

// rawAs connects to srv as user with a bare nats.go connection (and the
// role's inbox prefix), closed when the test ends.
func rawAs(t *testing.T, srv *natsbus.Server, user string) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}
	if user != natsbus.UserEvents {
		opts = append(opts, nats.CustomInboxPrefix(natsbus.InboxPrefix+"."+user))
	}
	nc, err := nats.Connect(srv.UserURL(user), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// mustRefuse checks that the server refuses user each publish on pub and
// each subscription to sub. The server answers a refused operation with a
// permissions error before the pong of the flush that follows it, so
// LastError holds it once Flush returns; a connection per operation keeps
// each error its own.
func mustRefuse(t *testing.T, srv *natsbus.Server, user string, pub, sub []string) {
	t.Helper()
	check := func(op, subject string, do func(nc *nats.Conn) error) {
		nc := rawAs(t, srv, user)
		if err := do(nc); err != nil {
			t.Fatalf("%s %s as %s: %v", op, subject, user, err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatalf("flush: %v", err)
		}
		if err := nc.LastError(); err == nil || !strings.Contains(err.Error(), "Permissions Violation") {
			t.Errorf("%s %s as %s was allowed (last error %v)", op, subject, user, err)
		}
	}
	for _, s := range pub {
		check("publish on", s, func(nc *nats.Conn) error { return nc.Publish(s, []byte("x")) })
	}
	for _, s := range sub {
		check("subscribe to", s, func(nc *nats.Conn) error { _, err := nc.SubscribeSync(s); return err })
	}
}

// mustAllow checks that user may publish on pub and subscribe to sub.
func mustAllow(t *testing.T, srv *natsbus.Server, user string, pub, sub []string) {
	t.Helper()
	nc := rawAs(t, srv, user)
	for _, s := range pub {
		if err := nc.Publish(s, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range sub {
		if _, err := nc.SubscribeSync(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.LastError(); err != nil {
		t.Errorf("as %s: %v", user, err)
	}
}

// secretsKey is the key the roles of the test open secrets under.
var secretsKey = []byte(strings.Repeat("k", natsbus.SecretsKeySize))

// TestPermissions_Roles runs each role's own code (tables, requests,
// streams, metering records) on a connection with that role's user, then
// checks that its credentials cannot publish or subscribe outside its
// permissions.
func TestPermissions_Roles(t *testing.T) {
	srv := mustProvisioned(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gw := natsbustest.MustConnectAs(t, srv, natsbus.UserGateway)
	sc := natsbustest.MustConnectAs(t, srv, natsbus.UserScheduler)
	wk := natsbustest.MustConnectAs(t, srv, natsbus.UserWorker)

	// Every role opens the state its code opens.
	gst, err := natsbus.OpenState(ctx, gw)
	if err != nil {
		t.Fatalf("gateway opens the state: %v", err)
	}
	sst, err := natsbus.OpenState(ctx, sc)
	if err != nil {
		t.Fatalf("scheduler opens the state: %v", err)
	}
	wst, err := natsbus.OpenState(ctx, wk)
	if err != nil {
		t.Fatalf("worker opens the state: %v", err)
	}
	ten, err := natsbus.OpenTenancy(ctx, gw, secretsKey)
	if err != nil {
		t.Fatalf("gateway opens access control: %v", err)
	}
	as, err := natsbus.OpenAsync(ctx, gw, time.Hour)
	if err != nil {
		t.Fatalf("gateway opens the async streams and tables: %v", err)
	}
	if err := natsbus.EnsureMeterStream(ctx, gw, 0); err != nil {
		t.Fatalf("gateway binds the metering stream: %v", err)
	}
	if err := natsbus.EnsureMeterStream(ctx, wk, 0); err != nil {
		t.Fatalf("worker binds the metering stream: %v", err)
	}

	t.Run("Gateway", func(t *testing.T) {
		fn := gust.Function{Spec: gust.FunctionSpec{Service: "f", Namespace: gust.DefaultNamespace, Image: "img:1"}}
		if _, err := gst.Functions.Create(ctx, fn.Key(), fn); err != nil {
			t.Errorf("deploy: %v", err)
		}
		changes := make(chan string, 1)
		if err := gst.Functions.Watch(ctx, ">", func(c gust.Change[gust.Function]) {
			select {
			case changes <- c.Key:
			default:
			}
		}); err != nil {
			t.Errorf("watch the registry: %v", err)
		}
		if k := <-changes; k != fn.Key() {
			t.Errorf("watch saw %s", k)
		}
		if err := gst.Placements.Delete(ctx, fn.Key()); err != nil && !errors.Is(err, gust.ErrNotFound) {
			t.Errorf("delete a placement: %v", err)
		}
		if _, err := gst.Status.List(ctx, ">"); err != nil {
			t.Errorf("list pool status: %v", err)
		}
		if _, err := ten.Namespaces.List(ctx, ">"); err != nil {
			t.Errorf("list namespaces: %v", err)
		}
		if err := ten.Secrets.Put(ctx, gust.DefaultNamespace, "s", []byte("v"), true); err != nil {
			t.Errorf("store a secret: %v", err)
		}
		if _, err := as.Calls.Put(ctx, "c1", gust.AsyncStatus{CallID: "c1"}); err != nil {
			t.Errorf("record an async call: %v", err)
		}
		if err := gw.Enqueue(ctx, gust.SubjectAsyncPrefix+fn.Key(), "c1", []byte("{}")); err != nil {
			t.Errorf("enqueue an async call: %v", err)
		}
		got := make(chan string, 1)
		stop, err := gw.Consume(ctx, gust.ConsumerSpec{Stream: natsbus.StreamAsync, Durable: "async_test", Filter: gust.SubjectAsyncPrefix + fn.Key(), Max: 1, AckWait: time.Minute}, func(d gust.Delivery) {
			_ = d.Ack()
			select {
			case got <- d.Subject():
			default:
			}
		})
		if err != nil {
			t.Fatalf("consume the async queue: %v", err)
		}
		defer stop()
		if s := <-got; s != gust.SubjectAsyncPrefix+fn.Key() {
			t.Errorf("consumed %s", s)
		}
		if _, err := gw.JS.Publish(ctx, natsbus.SubjectMeterCalls, []byte("{}")); err != nil {
			t.Errorf("meter a rejected call: %v", err)
		}
		if err := natsbus.NewDeadLetters(gw).Add(ctx, gust.DeadLetter{Request: gust.AsyncRequest{CallID: "d1", Namespace: gust.DefaultNamespace, Function: "f"}}); err != nil {
			t.Errorf("add a dead letter: %v", err)
		}
		if _, err := natsbus.NewDeadLetters(gw).List(ctx, "", "", 10); err != nil {
			t.Errorf("list dead letters: %v", err)
		}
		mustRefuse(t, srv, natsbus.UserGateway,
			[]string{"$KV.gust_workers.w1", "$KV.gust_status.x", "$JS.API.STREAM.CREATE.X", "$JS.API.STREAM.UPDATE.KV_gust_functions",
				"$JS.API.STREAM.DELETE.GUST_METER", "$JS.API.STREAM.PURGE.GUST_METER", "gust.worker.prepare.w1", "$SYS.REQ.SERVER.PING"},
			[]string{"gust.>", "gust.scheduler.place", "$KV.>", "_INBOX.>", "_GUST_INBOX.worker.>", "_GUST_INBOX.scheduler.x", "$SYS.>"})
	})

	t.Run("SchedulerAndWorker", func(t *testing.T) {
		// The place and prepare requests, as the gateway and the
		// scheduler make them, answered on the requester's own inbox.
		stopPlace, err := sc.Handle(ctx, gust.SubjectPlace, "gust-scheduler", func(ctx context.Context, data []byte) any {
			var rep gust.PlaceReply
			if err := sc.Request(ctx, gust.SubjectPreparePrefix+"w1", gust.PrepareRequest{}, &rep); err != nil {
				return gust.ReplyOf(err)
			}
			if _, err := sst.Placements.Put(ctx, "openfaas-fn.f", gust.Placement{Workers: []string{"w1"}}); err != nil {
				return gust.ReplyOf(err)
			}
			return rep
		})
		if err != nil {
			t.Fatalf("scheduler serves place: %v", err)
		}
		defer stopPlace()
		stopPrepare, err := wk.Handle(ctx, gust.SubjectPreparePrefix+"w1", "", func(context.Context, []byte) any { return gust.PlaceReply{} })
		if err != nil {
			t.Fatalf("worker serves prepare: %v", err)
		}
		defer stopPrepare()
		var rep gust.PlaceReply
		if err := gw.Request(ctx, gust.SubjectPlace, gust.PlaceRequest{Namespace: gust.DefaultNamespace, Name: "f"}, &rep); err != nil {
			t.Fatalf("gateway asks to place: %v", err)
		}
		if rep.ErrMsg != "" {
			t.Fatalf("place: %s", rep.ErrMsg)
		}
		if _, _, err := sst.Functions.Get(ctx, "openfaas-fn.f"); err != nil {
			t.Errorf("scheduler reads the registry: %v", err)
		}
		if err := sst.Workers.Delete(ctx, "gone"); err != nil && !errors.Is(err, gust.ErrNotFound) {
			t.Errorf("scheduler removes a silent worker: %v", err)
		}
		// Schedulers elect their leader by its lease, and a standby
		// passes a place request on to the leader.
		leases, err := natsbus.OpenLeases(ctx, sc)
		if err != nil {
			t.Fatalf("scheduler opens the leader's lease: %v", err)
		}
		rev, err := leases.Create(ctx, gust.LeaderKey, gust.Lease{Holder: "s1"})
		if err != nil {
			t.Fatalf("scheduler takes the lease: %v", err)
		}
		if _, err := leases.Update(ctx, gust.LeaderKey, gust.Lease{Holder: "s1"}, rev); err != nil {
			t.Errorf("scheduler renews the lease: %v", err)
		}
		if l, _, err := leases.Get(ctx, gust.LeaderKey); err != nil || l.Holder != "s1" {
			t.Errorf("scheduler reads the lease: %+v, %v", l, err)
		}
		stopLeader, err := sc.Handle(ctx, gust.SubjectPlaceLeader, "", func(context.Context, []byte) any { return gust.PlaceReply{} })
		if err != nil {
			t.Fatalf("scheduler serves %s: %v", gust.SubjectPlaceLeader, err)
		}
		if err := sc.Request(ctx, gust.SubjectPlaceLeader, gust.PlaceRequest{}, &rep); err != nil {
			t.Errorf("standby passes a place request on: %v", err)
		}
		_ = stopLeader()

		// The worker's heartbeat, status, registry, secrets and meter.
		if _, err := wst.Workers.Put(ctx, "w1", gust.WorkerInfo{ID: "w1"}); err != nil {
			t.Errorf("heartbeat: %v", err)
		}
		if _, err := wst.Status.Put(ctx, "w1.openfaas-fn.f", gust.PoolStatus{}); err != nil {
			t.Errorf("pool status: %v", err)
		}
		if _, _, err := wst.Functions.Get(ctx, "openfaas-fn.f"); err != nil {
			t.Errorf("worker reads the registry: %v", err)
		}
		if _, _, err := wst.Placements.Get(ctx, "openfaas-fn.f"); err != nil {
			t.Errorf("worker reads placements: %v", err)
		}
		sec, err := natsbus.OpenSecrets(ctx, wk, secretsKey)
		if err != nil {
			t.Fatalf("worker opens secrets: %v", err)
		}
		if v, err := sec.Get(ctx, gust.DefaultNamespace, "s"); err != nil || string(v) != "v" {
			t.Errorf("worker reads a secret: %q, %v", v, err)
		}
		rec, _ := json.Marshal(gust.CallRecord{CallID: "c1"})
		if _, err := wk.JS.Publish(ctx, natsbus.SubjectMeterCalls, rec); err != nil {
			t.Errorf("worker publishes a metering record: %v", err)
		}

		// The worker's plain heartbeat reaches the scheduler and the
		// gateway (gust.Beats).
		heard := make(chan string, 2)
		for _, b := range []*natsbus.Bus{gw, sc} {
			stop, err := b.OnBeat(func(id string) { heard <- id })
			if err != nil {
				t.Fatalf("hear beats: %v", err)
			}
			defer stop()
		}
		if err := wk.Beat("w1"); err != nil {
			t.Fatalf("worker beats: %v", err)
		}
		for range 2 {
			select {
			case id := <-heard:
				if id != "w1" {
					t.Errorf("heard a beat of %q, want w1", id)
				}
			case <-ctx.Done():
				t.Fatal("a beat was not heard")
			}
		}

		mustRefuse(t, srv, natsbus.UserScheduler,
			[]string{"$KV.gust_functions.openfaas-fn.f", "$KV.gust_keys.k", "gust.meter.call", natsbus.BeatPrefix + "w1", "gust.async.openfaas-fn.f", "$JS.API.STREAM.DELETE.KV_gust_placements"},
			[]string{"gust.worker.prepare.w1", "_GUST_INBOX.gateway.>", "orders.new"})
		mustRefuse(t, srv, natsbus.UserWorker,
			[]string{"$KV.gust_functions.openfaas-fn.f", "$KV.gust_placements.openfaas-fn.f", "$KV.gust_leader.scheduler", "gust.scheduler.leader.place", "$KV.gust_keys.k", "$KV.gust_secrets.openfaas-fn.s", "$KV.gust_secrets._keycheck",
				"$KV.gust_namespaces.x", "gust.async.openfaas-fn.f", "gust.dlq.openfaas-fn.f", "gust.scheduler.place",
				"$JS.API.STREAM.UPDATE.KV_gust_functions", "$JS.API.STREAM.PURGE.GUST_METER", "$JS.API.CONSUMER.CREATE.GUST_METER",
				"$JS.API.CONSUMER.CREATE.KV_gust_keys", "$JS.API.DIRECT.GET.KV_gust_keys"},
			[]string{"gust.scheduler.place", "gust.>", "orders.new", "_GUST_INBOX.gateway.>", "_INBOX.>"})
	})
}

// TestPermissions_Events: the events user publishes on a trigger subject
// (a function subscribed there, through the gateway's code, gets it) and
// receives the reply to its request; it cannot publish billing records,
// async calls, registry writes or JetStream API calls, nor read any of
// Gust's subjects or another's trigger messages.
func TestPermissions_Events(t *testing.T) {
	srv := mustProvisioned(t)
	gw := natsbustest.MustConnectAs(t, srv, natsbus.UserGateway)
	got := make(chan *gust.Message, 1)
	stop, err := gw.Subscribe("orders.>", "gust-trigger.openfaas-fn.f", func(m *gust.Message) {
		if m.Respond != nil {
			_ = m.Respond([]byte("done:"+string(m.Data)), nil)
		}
		select {
		case got <- m:
		default:
		}
	})
	if err != nil {
		t.Fatalf("gateway subscribes to a trigger: %v", err)
	}
	defer stop()

	ev := natsbustest.MustConnectAs(t, srv, natsbus.UserEvents)
	if err := ev.Publish("orders.new", []byte("o1"), nil); err != nil {
		t.Fatal(err)
	}
	if m := <-got; string(m.Data) != "o1" {
		t.Errorf("trigger got %q", m.Data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reply, err := ev.RequestRaw(ctx, "orders.new", []byte("o2"), nil)
	if err != nil || string(reply) != "done:o2" {
		t.Errorf("request as events: %q, %v; want done:o2", reply, err)
	}

	mustAllow(t, srv, natsbus.UserEvents, []string{"orders.new", "acc.orders", "team-x.orders"}, []string{"_INBOX.abc.*"})
	mustRefuse(t, srv, natsbus.UserEvents,
		[]string{"gust.meter.call", "gust.meter.instance", "gust.async.openfaas-fn.f", "gust.scheduler.place", "gust.worker.prepare.w1",
			"$KV.gust_functions.openfaas-fn.f", "$JS.API.STREAM.INFO.GUST_METER", "$JS.API.CONSUMER.CREATE.GUST_METER",
			"$SYS.REQ.SERVER.PING", "_INBOX.someone", "_GUST_INBOX.gateway.x", natsbus.BeatPrefix + "w1"},
		[]string{"gust.>", ">", "orders.new", "$KV.>", "$JS.>", "_GUST_INBOX.>", "_GUST_INBOX.gateway.x", "$SYS.>"})
}

// TestPermissions_NoAnonymous: no credentials, a wrong password and an
// unknown user are refused at connect.
func TestPermissions_NoAnonymous(t *testing.T) {
	srv := natsbustest.MustRunServer(t, t.TempDir())
	url := srv.ClientURL()
	wrong, _ := natsbus.URLWithUser(url, natsbus.UserEvents, "wrong")
	unknown, _ := natsbus.URLWithUser(url, "nobody", "x")
	for name, u := range map[string]string{"Anonymous": url, "WrongPassword": wrong, "UnknownUser": unknown} {
		t.Run(name, func(t *testing.T) {
			nc, err := nats.Connect(u, nats.NoReconnect())
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Errorf("refused with %v, want an authorization violation", err)
			}
		})
	}
}
