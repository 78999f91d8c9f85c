package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
)

// TestInvoke_ActivationWaitBounded: while a function is being placed, at
// most MaxWaiting calls wait for it; the next is answered at once 429 with
// Retry-After, and the ones waiting run once it is placed.
func TestInvoke_ActivationWaitBounded(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{MaxWaiting: 2})
	MustDeploy(t, e, `{"service":"hello","image":"img:1"}`)
	key := gust.FunctionKey(gust.DefaultNamespace, "hello")
	release := make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	e.sched.setReply(func(req gust.PlaceRequest) gust.PlaceReply {
		<-release
		return placeOK(req)
	})
	if err := e.state.Placements.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	// Once the routing table lost the placement, a call activates the
	// function (here with a context that is over: it does not wait).
	over, cancel := context.WithCancel(context.Background())
	cancel()
	fn := e.router.Function(gust.DefaultNamespace, "hello")
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if _, err := e.router.Invoker(over, fn); err == nil {
			return errors.New("the placement is still routed")
		}
		return nil
	})

	done := make(chan int, 2)
	for range 2 {
		go func() {
			status, _, _ := MustDo(t, http.MethodGet, e.url("/function/hello"), "")
			done <- status
		}()
	}
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := gateway.ActivationWaiting(e.router, key); n != 2 {
			return fmt.Errorf("%d calls wait for the activation, want 2", n)
		}
		return nil
	})
	status, h, body := MustDo(t, http.MethodGet, e.url("/function/hello"), "")
	wantError(t, status, body, http.StatusTooManyRequests, gust.ETOOMANY, "")
	if h.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After")
	}
	close(release)
	released = true
	for range 2 {
		select {
		case status := <-done:
			if status != http.StatusOK {
				t.Errorf("a waiting call: status %d, want 200", status)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a waiting call did not end after its function was placed")
		}
	}
}
