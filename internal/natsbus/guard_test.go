package natsbus_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestSubscribe_ReservedReply: an outside publisher (user events) that
// names one of JetStream's API subjects, a KV key or a subject of Gust's
// as the reply of a trigger message does not make the gateway publish
// there: the function runs, its answer goes nowhere, and GUST_ASYNC and
// the keys bucket are untouched. (nats-server lets a reply through
// whatever the answerer's permissions deny, so the check must be Gust's.)
func TestSubscribe_ReservedReply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := natsbustest.MustRunServer(t, t.TempDir())
	prov := natsbustest.MustConnect(t, srv)
	if err := natsbus.Provision(ctx, prov, time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	gw := natsbustest.MustConnectAs(t, srv, natsbus.UserGateway)
	var runs, answered atomic.Int32
	stop, err := gw.Subscribe("orders.new", "q", func(m *gust.Message) {
		runs.Add(1)
		if m.Respond != nil {
			answered.Add(1)
			// What an echo function would send back, headers included.
			_ = m.Respond([]byte(`{"id":"evil"}`), map[string][]string{"Nats-Rollup": {"all"}})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })

	ev := natsbustest.MustConnectAs(t, srv, natsbus.UserEvents)
	for _, reply := range []string{"$JS.API.STREAM.DELETE." + natsbus.StreamAsync, "$KV." + natsbus.BucketKeys + ".evil", "gust.scheduler.place"} {
		if err := ev.NC.PublishMsg(&nats.Msg{Subject: "orders.new", Reply: reply, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ev.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if runs.Load() != 3 {
			return errors.New("the trigger did not run three times")
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // let a reply, if one were sent, land
	if n := answered.Load(); n != 0 {
		t.Errorf("%d answers sent to reply subjects that are not inboxes", n)
	}
	if _, err := prov.JS.Stream(ctx, natsbus.StreamAsync); err != nil {
		t.Fatalf("GUST_ASYNC after the reply attack: %v", err)
	}
	kv, err := prov.JS.KeyValue(ctx, natsbus.BucketKeys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "evil"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("key evil after the reply attack: %v, want not found", err)
	}

	// A request with an inbox still gets its answer, without Nats-*
	// headers.
	msg, err := ev.NC.RequestMsg(&nats.Msg{Subject: "orders.new", Data: []byte("x")}, 5*time.Second)
	if err != nil {
		t.Fatalf("request from events: %v", err)
	}
	if string(msg.Data) != `{"id":"evil"}` || msg.Header.Get("Nats-Rollup") != "" {
		t.Errorf("answer %q with headers %v, want the body without Nats-Rollup", msg.Data, msg.Header)
	}
}

// TestHandle_RequestNotFromARole: a control-plane request answers only a
// role's inbox: one made with another reply subject gets no answer and
// does not reach the handler.
func TestHandle_RequestNotFromARole(t *testing.T) {
	ctx := context.Background()
	bus := natsbustest.MustOpenBus(t)
	var calls atomic.Int32
	stop, err := bus.Handle(ctx, "gust.test.req", "", func(context.Context, []byte) any {
		calls.Add(1)
		return gust.Reply{}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	if err := bus.NC.PublishMsg(&nats.Msg{Subject: "gust.test.req", Reply: "$JS.API.STREAM.DELETE.X", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	var rep gust.Reply
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := bus.Request(rctx, "gust.test.req", struct{}{}, &rep); err != nil {
		t.Fatalf("request from a role: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1 (the role's request only)", n)
	}
}
