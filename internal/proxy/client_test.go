package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust/internal/proxy"
)

// countingServer is an upstream that counts the connections it accepted.
type countingServer struct {
	*httptest.Server
	conns  atomic.Int64 // accepted
	closed atomic.Int64
}

func newCountingServer(t *testing.T, h http.HandlerFunc, configure func(*http.Server)) *countingServer {
	t.Helper()
	s := &countingServer{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
		case http.StateClosed:
			s.closed.Add(1)
		}
	}
	if configure != nil {
		configure(s.Config)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// newClient returns a Client of s (falling back to fallback, or to a
// transport of its own) that closes its connections when the test ends.
func newClient(t *testing.T, s *httptest.Server, fallback http.RoundTripper) *proxy.Client {
	t.Helper()
	if fallback == nil {
		tr := proxy.NewTransport()
		t.Cleanup(tr.CloseIdleConnections)
		fallback = tr
	}
	c := proxy.NewClient(strings.TrimPrefix(s.URL, "http://"), fallback)
	t.Cleanup(c.CloseIdle)
	return c
}

// call sends method with body to c's upstream and returns the answer's
// status and body.
func call(t *testing.T, ctx context.Context, c *proxy.Client, method, url, body string) (int, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestClient_KeepsConnection: calls one after another, with and without
// bodies, answered whole, go over one connection; the upstream gets each
// request as sent.
func TestClient_KeepsConnection(t *testing.T) {
	s := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %d %q", r.Method, r.URL.RequestURI(), r.ContentLength, b)
	}, nil)
	c := newClient(t, s.Server, nil)
	for i := range 20 {
		body := ""
		method := http.MethodGet
		if i%2 == 1 {
			method, body = http.MethodPost, strings.Repeat("b", i*100)
		}
		status, got, err := call(t, context.Background(), c, method, s.URL+fmt.Sprintf("/p/%d?q=%d", i, i), body)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		want := fmt.Sprintf("%s /p/%d?q=%d %d %q", method, i, i, len(body), body)
		if status != 200 || got != want {
			t.Fatalf("call %d: %d %q, want 200 %q", i, status, got, want)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("20 calls one after another took %d connections, want 1", n)
	}
}

// TestClient_UpstreamClosedIdle: a connection the upstream closed while
// it was idle is not used again: a POST after it gets its answer on a
// new connection.
func TestClient_UpstreamClosedIdle(t *testing.T) {
	var runs atomic.Int64
	s := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		io.WriteString(w, "ok")
	}, func(hs *http.Server) { hs.IdleTimeout = 20 * time.Millisecond })
	c := newClient(t, s.Server, nil)
	// With a body and without: the request goes out in one write either
	// way, which succeeds on a connection the upstream closed.
	for i, body := range []string{"x", "", "y", ""} {
		if status, _, err := call(t, context.Background(), c, http.MethodPost, s.URL, body); err != nil || status != 200 {
			t.Fatalf("POST %d: %d %v", i, status, err)
		}
		time.Sleep(200 * time.Millisecond) // the upstream closes the connection meanwhile
	}
	if n := s.conns.Load(); n != 4 {
		t.Errorf("%d connections for 4 calls each after the last was closed idle, want 4", n)
	}
	if n := runs.Load(); n != 4 {
		t.Errorf("the function ran %d times for 4 calls", n)
	}
}

// TestClient_ConnectionClose: an answer with Connection: close ends its
// connection; the next call dials.
func TestClient_ConnectionClose(t *testing.T) {
	s := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	}, nil)
	c := newClient(t, s.Server, nil)
	for range 3 {
		if status, got, err := call(t, context.Background(), c, http.MethodGet, s.URL, ""); err != nil || status != 200 || got != "bye" {
			t.Fatalf("call: %d %q %v", status, got, err)
		}
	}
	if n := s.conns.Load(); n != 3 {
		t.Errorf("%d connections for 3 answers that closed theirs, want 3", n)
	}
}

// TestClient_ChunkedTrailersEarlyHints: an answer of unknown length with
// trailers, after a 103 Early Hints, arrives whole with its trailers, and
// its connection serves the next call.
func TestClient_ChunkedTrailersEarlyHints(t *testing.T) {
	s := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(http.StatusOK)
		for i := range 3 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Sum", "3")
	}, nil)
	c := newClient(t, s.Server, nil)
	for i := range 2 {
		req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(b) != "part0;part1;part2;" || resp.ContentLength != -1 {
			t.Fatalf("call %d: %d %q (length %d) %v", i, resp.StatusCode, b, resp.ContentLength, err)
		}
		if got := resp.Trailer.Get("X-Sum"); got != "3" {
			t.Errorf("call %d: trailer X-Sum %q, want 3", i, got)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections for 2 chunked answers, want 1", n)
	}
}

// TestClient_HeadAndNoContent: answers without a body free their
// connection too.
func TestClient_HeadAndNoContent(t *testing.T) {
	s := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "1234")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}, nil)
	c := newClient(t, s.Server, nil)
	for _, m := range []string{http.MethodHead, http.MethodDelete, http.MethodHead} {
		status, body, err := call(t, context.Background(), c, m, s.URL, "")
		if err != nil || body != "" || (m == http.MethodHead) != (status == 200) {
			t.Fatalf("%s: %d %q %v", m, status, body, err)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// TestClient_Cancel: a call whose context ends while the upstream has not
// answered returns the context's error at once, and its connection is
// not used again; one cut in the middle of its answer reads an error.
func TestClient_Cancel(t *testing.T) {
	release := make(chan struct{})
	s := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/half" {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "12345")
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, nil)
	defer close(release)
	c := newClient(t, s.Server, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, _, err := call(t, ctx, c, http.MethodPost, s.URL+"/wait", "x")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("call past its deadline: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("returned after %s", d)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx2, http.MethodGet, s.URL+"/half", nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "12345" {
		t.Fatalf("first half: %q %v", buf, err)
	}
	cancel2()
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
		t.Errorf("reading the rest after cancel: %v, want context.Canceled", err)
	}
	resp.Body.Close()
	if n := s.conns.Load(); n != 2 {
		t.Errorf("%d connections: the cancelled call's was used again", n)
	}
}

// TestClient_Fallback: a body of unknown length or over InlineBody, and a
// request that expects 100 Continue, go through the fallback transport,
// whole.
func TestClient_Fallback(t *testing.T) {
	s := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%d", len(b))
	}, nil)
	var through atomic.Int64
	tr := proxy.NewTransport()
	t.Cleanup(tr.CloseIdleConnections)
	fallback := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		through.Add(1)
		return tr.RoundTrip(r)
	})
	c := newClient(t, s.Server, fallback)
	big := strings.Repeat("z", proxy.InlineBody+1)
	for _, tc := range []struct {
		name string
		req  func() *http.Request
		want string
	}{
		{"over InlineBody", func() *http.Request { r, _ := http.NewRequest("POST", s.URL, strings.NewReader(big)); return r }, fmt.Sprint(len(big))},
		{"unknown length", func() *http.Request {
			r, _ := http.NewRequest("POST", s.URL, io.NopCloser(strings.NewReader("abc")))
			r.ContentLength = -1
			return r
		}, "3"},
		{"expect 100-continue", func() *http.Request {
			r, _ := http.NewRequest("POST", s.URL, strings.NewReader("abcd"))
			r.Header.Set("Expect", "100-continue")
			return r
		}, "4"},
	} {
		before := through.Load()
		resp, err := c.RoundTrip(tc.req())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tc.want || through.Load() != before+1 {
			t.Errorf("%s: %q, want %q through the fallback (%d)", tc.name, b, tc.want, through.Load()-before)
		}
	}
	if _, got, err := call(t, context.Background(), c, "POST", s.URL, strings.Repeat("y", proxy.InlineBody)); err != nil || got != fmt.Sprint(proxy.InlineBody) {
		t.Errorf("a body of InlineBody: %q %v", got, err)
	}
	if through.Load() != 3 {
		t.Errorf("%d requests through the fallback, want 3", through.Load())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestClient_Concurrent: calls from many goroutines at once each get
// their own answer, on no more connections than calls at once.
func TestClient_Concurrent(t *testing.T) {
	s := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}, nil)
	c := newClient(t, s.Server, nil)
	const goroutines, each = 16, 50
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				want := fmt.Sprintf("g%d-%d", g, i)
				if _, got, err := call(t, context.Background(), c, "POST", s.URL, want); err != nil || got != want {
					t.Errorf("%q: %q %v", want, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := s.conns.Load(); n > goroutines {
		t.Errorf("%d connections for %d goroutines", n, goroutines)
	}
}

// TestClient_CloseIdle: CloseIdle closes the kept connections, and those
// of calls in flight as they end; the client still serves calls after,
// on connections it does not keep.
func TestClient_CloseIdle(t *testing.T) {
	release := make(chan struct{})
	waiting := make(chan struct{}) // the call to /wait has reached the upstream
	s := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			close(waiting)
			<-release
		}
		io.WriteString(w, "ok")
	}, nil)
	c := newClient(t, s.Server, nil)
	if _, _, err := call(t, context.Background(), c, "GET", s.URL, ""); err != nil {
		t.Fatal(err)
	}
	// The kept connection is taken by this call; closing leaves it be.
	done := make(chan error, 1)
	go func() {
		_, _, err := call(t, context.Background(), c, "GET", s.URL+"/wait", "")
		done <- err
	}()
	// (Not a count of the server's active connections: the first
	// call's may still count after its answer has been read, and
	// CloseIdle would then close the connection the call to /wait
	// is about to take.)
	<-waiting
	c.CloseIdle()
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the call in flight during CloseIdle: %v", err)
	}
	for i := range 2 {
		if status, _, err := call(t, context.Background(), c, "GET", s.URL, ""); err != nil || status != 200 {
			t.Fatalf("call %d after CloseIdle: %d %v", i, status, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.closed.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n, closed := s.conns.Load(), s.closed.Load(); n != 3 || closed != 3 {
		t.Errorf("%d connections, %d closed by the client; want 3 and 3 (none kept after CloseIdle)", n, closed)
	}
}

// rawUpstream is an upstream speaking HTTP/1.1 by hand, for answers
// net/http's server does not give.
func rawUpstream(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + l.Addr().String()
}

// TestClient_NoAnswer: an upstream that closes the connection without an
// answer fails the call with an error, and a POST is not sent twice.
func TestClient_NoAnswer(t *testing.T) {
	var reqs atomic.Int64
	url := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if reqs.Add(1) == 1 {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			return // the second request: no answer
		}
	})
	tr := proxy.NewTransport()
	t.Cleanup(tr.CloseIdleConnections)
	c := proxy.NewClient(strings.TrimPrefix(url, "http://"), tr)
	t.Cleanup(c.CloseIdle)
	if _, got, err := call(t, context.Background(), c, "POST", url, "a"); err != nil || got != "ok" {
		t.Fatalf("first call: %q %v", got, err)
	}
	if _, _, err := call(t, context.Background(), c, "POST", url, "b"); err == nil {
		t.Fatal("a call the upstream did not answer succeeded")
	}
	if n := reqs.Load(); n != 2 {
		t.Errorf("the upstream got %d requests for 2 POSTs", n)
	}
}
