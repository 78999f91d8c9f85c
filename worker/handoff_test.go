package worker

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
)

// TestWorker_RefusesForHandoff: a draining worker turns a call away
// unmetered (gust.HandoffRefused, no outcome) when the gateway offered to
// send it elsewhere, and meters its rejection (outcome rejected) when the
// gateway did not; the offer never reaches the function.
func TestWorker_RefusesForHandoff(t *testing.T) {
	h := newHold(t)
	e := newEnv(t, h.handler)
	t.Cleanup(h.releaseAll)
	fn := e.deploy("handoff", nil)
	e.place(fn)
	// A call in flight keeps the worker draining while the test calls.
	inflight := e.goCall(fn, "/hold")
	h.waitEntered(t, 1)
	drained := make(chan error, 1)
	go func() { drained <- e.w.Drain(context.Background()) }()
	check.For(t, testWait, testPoll, func() error {
		e.w.mu.Lock()
		defer e.w.mu.Unlock()
		if !e.w.draining {
			return errors.New("worker not draining yet")
		}
		return nil
	})

	call := func(offer bool) (http.Header, error) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		r.Header.Set(gust.HeaderGustCallID, "call-"+randomID())
		if offer {
			r.Header.Set(gust.HeaderHandoff, gust.HandoffRetry)
		}
		err := e.w.Invoke(rec, r, fn)
		return rec.Header(), err
	}
	hdr, err := call(true)
	if !errors.Is(err, gust.ErrDraining) || hdr.Get(gust.HeaderHandoff) != gust.HandoffRefused || hdr.Get(gust.HeaderOutcome) != "" {
		t.Errorf("offered call while draining: %v, handoff %q, outcome %q; want ErrDraining, %q, no outcome (unmetered)", err, hdr.Get(gust.HeaderHandoff), hdr.Get(gust.HeaderOutcome), gust.HandoffRefused)
	}
	hdr, err = call(false)
	if !errors.Is(err, gust.ErrDraining) || hdr.Get(gust.HeaderHandoff) != "" || hdr.Get(gust.HeaderOutcome) != gust.OutcomeRejected {
		t.Errorf("call while draining: %v, handoff %q, outcome %q; want ErrDraining, none, %q (metered)", err, hdr.Get(gust.HeaderHandoff), hdr.Get(gust.HeaderOutcome), gust.OutcomeRejected)
	}
	h.release(t)
	wantOK(t, recv(t, inflight))
	select {
	case err := <-drained:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testWait):
		t.Fatal("Drain did not return")
	}
}

// TestListener_RefusesUnknownForHandoff: a call of a function this worker
// cannot find is turned away (404) with gust.HandoffRefused when the
// gateway offered to send it elsewhere, and without it otherwise.
func TestListener_RefusesUnknownForHandoff(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.w.Handler(ListenerConfig{Token: "token"}))
	t.Cleanup(srv.Close)
	for _, offer := range []bool{true, false} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+gust.InvokePrefix+gust.DefaultNamespace+"/nosuchfn/", nil)
		req.Header.Set(gust.HeaderWorkerToken, "token")
		req.Header.Set(gust.HeaderGustCallID, "call-"+randomID())
		if offer {
			req.Header.Set(gust.HeaderHandoff, gust.HandoffRetry)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := ""
		if offer {
			want = gust.HandoffRefused
		}
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get(gust.HeaderHandoff) != want {
			t.Errorf("offer %v: %d, handoff %q; want 404, %q", offer, resp.StatusCode, resp.Header.Get(gust.HeaderHandoff), want)
		}
	}
}
