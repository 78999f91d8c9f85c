package worker

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/mock"
)

// TestPool_MaxWaiting: past MaxWaiting calls waiting for a slot, a call is
// refused at once with ETOOMANY (429) instead of joining them; the calls
// that waited still run once slots free.
func TestPool_MaxWaiting(t *testing.T) {
	h := newHold(t)
	e := newEnv(t, h.handler, func(_ *mock.Runtime, c *Config) { c.MaxWaiting = 2 })
	t.Cleanup(h.releaseAll)
	fn := e.deploy("waits", map[string]string{gust.LabelConcurrency: "1", gust.LabelScaleMax: "1"})

	running := e.goCall(fn, "/hold")
	h.waitEntered(t, 1)
	waiting := []<-chan result{e.goCall(fn, "/hold"), e.goCall(fn, "/hold")}
	check.For(t, testWait, testPoll, func() error {
		if got := e.waiting(fn); got != 2 {
			return fmt.Errorf("waiting calls: got %d, want 2", got)
		}
		return nil
	})
	r := e.call(fn, "/hold")
	if r.code != http.StatusTooManyRequests || gust.ErrorCode(r.err) != gust.ETOOMANY {
		t.Errorf("call past the bound: got %d, %v, want 429 %s", r.code, r.err, gust.ETOOMANY)
	}
	if got := e.waiting(fn); got != 2 {
		t.Errorf("waiting calls after the refusal: got %d, want 2", got)
	}
	for range 3 {
		h.release(t)
	}
	for _, ch := range append(waiting, running) {
		wantOK(t, recv(t, ch))
	}
}
