package tasks_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust/internal/tasks"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestGroup_CloseWaits checks that Close ends the group's context and
// returns only once every goroutine of the group has.
func TestGroup_CloseWaits(t *testing.T) {
	g := tasks.New(context.Background())
	var done atomic.Int32
	for range 8 {
		if !g.Go(func(ctx context.Context) {
			<-ctx.Done()
			time.Sleep(time.Millisecond) // still running after the cancel
			done.Add(1)
		}) {
			t.Fatal("Go refused before Close")
		}
	}
	g.Close()
	if n := done.Load(); n != 8 {
		t.Errorf("Close returned with %d of 8 goroutines done", n)
	}
	if g.Context().Err() == nil {
		t.Error("the group's context is live after Close")
	}
	g.Close() // a second Close does nothing
}

// TestGroup_GoAfterClose checks that nothing starts once Close has begun,
// even from a goroutine of the group that Close is waiting for.
func TestGroup_GoAfterClose(t *testing.T) {
	g := tasks.New(context.Background())
	var late atomic.Bool
	refused := make(chan bool, 1)
	g.Go(func(ctx context.Context) {
		<-ctx.Done()
		refused <- !g.Go(func(context.Context) { late.Store(true) })
	})
	g.Close()
	if !<-refused {
		t.Error("Go started a goroutine while Close waited")
	}
	if g.Go(func(context.Context) { late.Store(true) }) || late.Load() {
		t.Error("Go ran something after Close")
	}
}

// TestGroup_ParentCancelDoesNotEnd checks that the group outlives the
// context it was made from: only Close ends it.
func TestGroup_ParentCancelDoesNotEnd(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	g := tasks.New(parent)
	cancel()
	if g.Context().Err() != nil {
		t.Error("the group ended with its parent context")
	}
	g.Close()
}

// TestGroup_During checks that a start's context bounds only the start.
func TestGroup_During(t *testing.T) {
	t.Run("Started", func(t *testing.T) {
		g := tasks.New(context.Background())
		setup, cancel := context.WithCancel(context.Background())
		ctx, started := g.During(setup)
		if err := started(); err != nil {
			t.Fatalf("started = %v", err)
		}
		cancel()
		if ctx.Err() != nil {
			t.Error("work begun in a start ended with the start's context")
		}
		g.Close()
		if ctx.Err() == nil {
			t.Error("work begun in a start outlived Close")
		}
	})
	t.Run("SetupEndedFirst", func(t *testing.T) {
		g := tasks.New(context.Background())
		defer g.Close()
		setup, cancel := context.WithCancel(context.Background())
		ctx, started := g.During(setup)
		cancel()
		<-ctx.Done() // ends with the start that did not finish
		if err := started(); !errors.Is(err, context.Canceled) {
			t.Errorf("started = %v, want context.Canceled", err)
		}
	})
}
