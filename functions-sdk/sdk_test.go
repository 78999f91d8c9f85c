package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// seen is what a test handler saw of its request context.
type seen struct {
	callID      string
	deadline    time.Time
	hasDeadline bool
	ctxDeadline time.Time
	hasCtx      bool
}

// recordHandler answers 200 "handled" and sends what it saw on ch.
func recordHandler(ch chan<- seen) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s seen
		s.callID = CallID(r.Context())
		s.deadline, s.hasDeadline = Deadline(r.Context())
		s.ctxDeadline, s.hasCtx = r.Context().Deadline()
		ch <- s
		io.WriteString(w, "handled")
	})
}

func TestServe(t *testing.T) {
	port := MustFreePort(t)
	t.Setenv(EnvPort, strconv.Itoa(port))
	t.Setenv(EnvShutdownTimeout, "2s")
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	ch := make(chan seen, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveEnv(ctx, recordHandler(ch)) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err
	})

	t.Run("Health", func(t *testing.T) {
		status, body := MustDo(t, http.MethodGet, base+HealthPath, nil)
		if got, want := status, http.StatusOK; got != want {
			t.Fatalf("status=%d, want %d", got, want)
		}
		if got, want := body, "ok"; got != want {
			t.Fatalf("body=%q, want %q", got, want)
		}
		select {
		case <-ch:
			t.Fatal("health check reached the handler")
		default:
		}
	})

	t.Run("CallMetadata", func(t *testing.T) {
		deadline := time.Now().Add(time.Hour).Add(123456789 * time.Nanosecond).UTC()
		status, body := MustDo(t, http.MethodPost, base+"/x", http.Header{
			HeaderCallID:   {"call-42"},
			HeaderDeadline: {deadline.Format(time.RFC3339Nano)},
		})
		if status != http.StatusOK || body != "handled" {
			t.Fatalf("got %d %q, want 200 \"handled\"", status, body)
		}
		s := <-ch
		if got, want := s.callID, "call-42"; got != want {
			t.Fatalf("CallID=%q, want %q", got, want)
		}
		if !s.hasDeadline || !s.deadline.Equal(deadline) {
			t.Fatalf("Deadline=%v,%v, want %v,true", s.deadline, s.hasDeadline, deadline)
		}
		if !s.hasCtx || !s.ctxDeadline.Equal(deadline) {
			t.Fatalf("ctx.Deadline=%v,%v, want %v,true", s.ctxDeadline, s.hasCtx, deadline)
		}
	})

	t.Run("NoMetadata", func(t *testing.T) {
		MustDo(t, http.MethodGet, base+"/", nil)
		s := <-ch
		if s.callID != "" || s.hasDeadline || s.hasCtx {
			t.Fatalf("got callID=%q deadline=%v ctx deadline=%v, want none", s.callID, s.hasDeadline, s.hasCtx)
		}
	})

	t.Run("Shutdown", func(t *testing.T) {
		cancel()
		select {
		case err := <-done:
			done <- err // for Cleanup
			if err != nil {
				t.Fatalf("serveEnv=%v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("serveEnv did not return after its context ended")
		}
	})
}

func TestServe_ListenError(t *testing.T) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv(EnvPort, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))

	done := make(chan error, 1)
	go func() { done <- Serve(http.NotFoundHandler()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "listen") {
			t.Fatalf("Serve=%v, want a listen error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return on a port in use")
	}
}

func TestServe_ErrShutdownTimeout(t *testing.T) {
	for _, v := range []string{"ten seconds", "-1s"} {
		t.Run(v, func(t *testing.T) {
			t.Setenv(EnvPort, strconv.Itoa(MustFreePort(t)))
			t.Setenv(EnvShutdownTimeout, v)
			err := serveEnv(context.Background(), http.NotFoundHandler())
			if err == nil || !strings.Contains(err.Error(), EnvShutdownTimeout) {
				t.Fatalf("serveEnv=%v, want an error naming %s", err, EnvShutdownTimeout)
			}
		})
	}
}

// TestServe_Graceful checks that once shutdown starts, new connections are
// refused while a call in flight still completes.
func TestServe_Graceful(t *testing.T) {
	ln := MustListen(t)
	addr := ln.Addr().String()
	started, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "slow done")
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, ln, h, 5*time.Second) }()

	type result struct {
		status int
		body   string
		err    error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		slow <- result{resp.StatusCode, string(b), err}
	}()
	<-started

	cancel()
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return errors.New("new connection still accepted")
		}
		return nil
	})
	select {
	case err := <-served:
		t.Fatalf("serve returned %v with a call in flight", err)
	default:
	}

	close(release)
	r := <-slow
	if r.err != nil {
		t.Fatalf("in-flight call: %v", r.err)
	}
	if r.status != http.StatusOK || r.body != "slow done" {
		t.Fatalf("in-flight call got %d %q, want 200 \"slow done\"", r.status, r.body)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve=%v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return after the in-flight call finished")
	}
}

// TestServe_GracefulTimeout checks that a call still running when the
// shutdown timeout ends is cancelled and serve reports it.
func TestServe_GracefulTimeout(t *testing.T) {
	ln := MustListen(t)
	started, stopped := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(stopped)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, ln, h, 100*time.Millisecond) }()
	go func() {
		if resp, err := http.Get("http://" + ln.Addr().String() + "/hang"); err == nil {
			resp.Body.Close()
		}
	}()
	<-started

	cancel()
	select {
	case err := <-served:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("serve=%v, want context.DeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return after the shutdown timeout")
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("handler context was not cancelled by the forced shutdown")
	}
}

func TestWrap(t *testing.T) {
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, hasDeadline := Deadline(r.Context())
		fmt.Fprintf(w, "handler id=%s deadline=%v ctxErr=%v", CallID(r.Context()), hasDeadline, r.Context().Err())
	}))
	past := time.Now().Add(-time.Second).Format(time.RFC3339Nano)
	for _, tt := range []struct {
		name   string
		method string
		path   string
		header http.Header
		want   string
	}{
		{"Health", http.MethodGet, HealthPath, nil, "ok"},
		{"HealthHead", http.MethodHead, HealthPath, nil, ""},
		{"HealthPostReachesHandler", http.MethodPost, HealthPath, nil, "handler id= deadline=false ctxErr=<nil>"},
		{"OtherPath", http.MethodGet, "/_/healthz", nil, "handler id= deadline=false ctxErr=<nil>"},
		{"BadDeadlineIgnored", http.MethodGet, "/", http.Header{HeaderCallID: {"c1"}, HeaderDeadline: {"tomorrow"}},
			"handler id=c1 deadline=false ctxErr=<nil>"},
		{"PastDeadline", http.MethodGet, "/", http.Header{HeaderCallID: {"c2"}, HeaderDeadline: {past}},
			"handler id=c2 deadline=true ctxErr=context deadline exceeded"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.path, nil)
			for k, v := range tt.header {
				r.Header[k] = v
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if got, want := w.Code, http.StatusOK; got != want {
				t.Fatalf("status=%d, want %d", got, want)
			}
			if got, want := w.Body.String(), tt.want; got != want {
				t.Fatalf("body=%q, want %q", got, want)
			}
		})
	}
}

func TestCallID_NoRequest(t *testing.T) {
	if got := CallID(context.Background()); got != "" {
		t.Fatalf("CallID=%q, want \"\"", got)
	}
	if _, ok := Deadline(context.Background()); ok {
		t.Fatal("Deadline ok=true, want false")
	}
}

// MustFreePort returns a TCP port that was free a moment ago.
func MustFreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// MustListen listens on a free loopback port and closes the listener at the
// end of the test.
func MustListen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// MustDo sends a request with a fresh connection and returns the status and
// body.
func MustDo(tb testing.TB, method, url string, hdr http.Header) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// checkFor calls f every interval until it returns nil, and fails the test
// with f's last error if that does not happen within total.
func checkFor(tb testing.TB, total, every time.Duration, f func() error) {
	tb.Helper()
	end := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			tb.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(every)
	}
}
