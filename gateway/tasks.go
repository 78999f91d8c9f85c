package gateway

import (
	"context"
	"sync"
)

// tasks runs the background goroutines of one component (the server, the
// router, the dispatcher), so that each has an owner that ends it: Go
// starts one unless Close has begun, Close cancels the tasks' context and
// waits for every one. Go and Close share a mutex, so no goroutine is
// added to the WaitGroup once Close waits on it.
type tasks struct {
	// ctx is the component's lifetime: it ends in Close, not with the
	// context of any caller (a call or a Start), which the goroutines
	// outlive by design.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func newTasks() *tasks {
	ctx, cancel := context.WithCancel(context.Background())
	return &tasks{ctx: ctx, cancel: cancel}
}

// Go runs f in a goroutine with the tasks' context; it reports false (and
// runs nothing) once Close has begun.
func (t *tasks) Go(f func(ctx context.Context)) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f(t.ctx)
	}()
	return true
}

// Close ends the tasks' context and waits for the goroutines. It may be
// called more than once.
func (t *tasks) Close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
}

// during returns a child of the tasks' context for the long-lived work a
// Start(ctx) begins (watches, consumers): it lives until Close, but ends
// early if setup (Start's ctx) ends before started is called, so that ctx
// bounds the start and Close the rest. started returns setup's error when
// setup ended first.
func (t *tasks) during(setup context.Context) (ctx context.Context, started func() error) {
	ctx, cancel := context.WithCancel(t.ctx)
	stop := context.AfterFunc(setup, cancel)
	return ctx, func() error {
		if !stop() {
			return setup.Err()
		}
		return nil
	}
}
