package natsbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestConsume_Adopt: a consumer under an earlier name is consumed through
// when it reads the same filter (its position kept), and left alone when
// it reads another (it is another function's).
func TestConsume_Adopt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus := natsbustest.MustOpenBus(t)
	if _, err := bus.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>", "ns.>"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, filter string }{{"old-a", "orders.a"}, {"old-b", "orders.b"}} {
		if _, err := bus.JS.CreateOrUpdateConsumer(ctx, "ORDERS", jetstream.ConsumerConfig{Durable: c.name, FilterSubject: c.filter, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	consume := func(durable, adopt, filter string) {
		stop, err := bus.Consume(ctx, gust.ConsumerSpec{Stream: "ORDERS", Durable: durable, Adopt: adopt, Filter: filter, Max: 1, AckWait: time.Second}, func(d gust.Delivery) { _ = d.Ack() })
		if err != nil {
			t.Fatal(err)
		}
		stop()
	}
	consume("new_a", "old-a", "orders.a") // same filter: adopted
	consume("new_x", "old-b", "ns.x.b")   // another filter: not touched
	names := map[string]string{}
	st, err := bus.JS.Stream(ctx, "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	list := st.ListConsumers(ctx)
	for info := range list.Info() {
		names[info.Name] = info.Config.FilterSubject
	}
	if err := list.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"old-a": "orders.a", "old-b": "orders.b", "new_x": "ns.x.b"}
	if len(names) != len(want) {
		t.Fatalf("consumers %v, want %v", names, want)
	}
	for n, f := range want {
		if names[n] != f {
			t.Errorf("consumer %s reads %q, want %q (all: %v)", n, names[n], f, names)
		}
	}
}
