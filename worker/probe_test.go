package worker

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/mock"
)

// TestProbe_FollowsNoRedirect: a function that answers its readiness check
// with a redirect is not ready, and the worker never calls where the
// redirect points (what only the worker's host can reach).
func TestProbe_FollowsNoRedirect(t *testing.T) {
	var hits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(target.Close)
	handler := func(gust.ContainerSpec) http.Handler {
		mux := http.NewServeMux()
		mux.Handle("/", mock.DefaultHandler())
		mux.HandleFunc(gust.DefaultHealthPath, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/internal", http.StatusFound)
		})
		return mux
	}
	e := newEnv(t, handler, func(_ *mock.Runtime, c *Config) { c.ReadyTimeout = 300 * time.Millisecond })
	fn := e.deploy("redirects", nil)
	r := e.call(fn, "/")
	if r.code == http.StatusOK || gust.ErrorCode(r.err) != gust.EUNAVAILABLE {
		t.Errorf("call of a function whose readiness redirects: got %d %v, want 503 (never ready)", r.code, r.err)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the redirect's target got %d requests, want 0", n)
	}
}
