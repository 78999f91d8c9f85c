package httplimits

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// wrapped stands for a middleware's writer (the gateway's status writer).
type wrapped struct{ http.ResponseWriter }

func (w wrapped) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestExtend_PastWriteTimeout: a handler that extends its deadlines
// answers after the server's WriteTimeout has passed, through a wrapping
// writer; one that does not loses its connection.
func TestExtend_PastWriteTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	handler := func(extend bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w = wrapped{w}
			if extend {
				Extend(w, 10*time.Second)
			}
			time.Sleep(4 * timeout)
			_, _ = io.WriteString(w, "late")
		})
	}
	for _, extend := range []bool{true, false} {
		srv := httptest.NewUnstartedServer(handler(extend))
		srv.Config.WriteTimeout = timeout
		srv.Start()
		resp, err := srv.Client().Get(srv.URL)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		srv.Close()
		if extend && (err != nil || string(body) != "late") {
			t.Fatalf("extended: got %q, %v; want the answer", body, err)
		}
		if !extend && err == nil {
			t.Fatalf("not extended: got %q, want the connection cut by the write timeout", body)
		}
	}
}

// TestExtend_NoDeadlines: a writer without deadlines is left alone.
func TestExtend_NoDeadlines(t *testing.T) {
	rec := httptest.NewRecorder()
	Extend(wrapped{rec}, time.Second)
	Extend(rec, time.Second)
	if allocs := testing.AllocsPerRun(100, func() { Extend(rec, time.Second) }); allocs != 0 {
		t.Errorf("Extend on a recorder allocated %.0f times, want 0", allocs)
	}
}
