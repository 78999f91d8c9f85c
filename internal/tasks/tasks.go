// Package tasks gives the background goroutines of a component an owner.
// A Group starts them with its own context, which ends when the component
// closes, not with the context of whichever call or Start began them (they
// outlive those by design); Close ends that context and waits for every
// goroutine. The gateway, the worker and the NATS bus each keep one.
//
// Why not a bare sync.WaitGroup: its Add must not run concurrently with a
// Wait that may see the counter at zero, and a component's goroutines are
// started from callbacks (a NATS message, a finished call) that can arrive
// while it closes. Go and Close share a mutex, and once Close has begun Go
// starts nothing, so no Add ever races a Wait.
package tasks

import (
	"context"
	"sync"
)

// Group owns a set of goroutines. The zero value is not usable: call New.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex // orders Go's wg.Add before Close's wg.Wait
	closed bool
	wg     sync.WaitGroup
}

// New returns a group whose context carries parent's values but not its
// cancellation: it ends in Close.
func New(parent context.Context) *Group {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	return &Group{ctx: ctx, cancel: cancel}
}

// Context is the group's context: it ends when Close begins.
func (g *Group) Context() context.Context { return g.ctx }

// Go runs f in a goroutine of the group, with the group's context. Once
// Close has begun it runs nothing and reports false; the caller then does
// without f or runs it itself.
func (g *Group) Go(f func(ctx context.Context)) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f(g.ctx)
	}()
	return true
}

// Close stops starting goroutines, ends the group's context and waits for
// every goroutine of the group. It may be called more than once.
func (g *Group) Close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
}

// During returns a child of the group's context for the long-lived work a
// Start(ctx) begins (watches, consumers): it lives until Close, but ends
// early if setup (Start's ctx) ends before started is called, so that
// setup bounds the start and Close the rest. started returns setup's error
// when setup ended first.
func (g *Group) During(setup context.Context) (ctx context.Context, started func() error) {
	ctx, cancel := context.WithCancel(g.ctx)
	stop := context.AfterFunc(setup, cancel)
	return ctx, func() error {
		if !stop() {
			return setup.Err()
		}
		return nil
	}
}
