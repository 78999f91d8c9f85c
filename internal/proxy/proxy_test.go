package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/gustfaas/gust/internal/proxy"
)

// hopLimit is the request body limit of the hop that MustHop puts in front
// of an upstream.
const hopLimit = 1 << 10

// MustHop starts a server on 127.0.0.1 that forwards every request to
// upstream the way Gust's hops do (Outbound, Client.RoundTrip, CopyHeader,
// CopyBody, CopyTrailer), with request bodies limited to hopLimit bytes.
// It returns the hop's URL.
func MustHop(tb testing.TB, upstream *httptest.Server) string {
	tb.Helper()
	tr := proxy.NewTransport()
	tb.Cleanup(tr.CloseIdleConnections)
	host := strings.TrimPrefix(upstream.URL, "http://")
	client := proxy.NewClient(host, tr)
	tb.Cleanup(client.CloseIdle)
	hop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, hopLimit)
		out, err := proxy.Outbound(r.Context(), r, host, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := client.RoundTrip(out)
		if err != nil {
			if proxy.IsBodyTooLarge(err) {
				http.Error(w, "too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		proxy.CopyHeader(w.Header(), resp)
		w.WriteHeader(resp.StatusCode)
		_, _ = proxy.CopyBody(w, resp)
		proxy.CopyTrailer(w.Header(), resp)
	}))
	tb.Cleanup(hop.Close)
	return hop.URL
}

// MustClient returns a client whose idle connections close when the test
// ends.
func MustClient(tb testing.TB) *http.Client {
	tb.Helper()
	tr := &http.Transport{}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// received is what an upstream saw of one request.
type received struct {
	Method, RequestURI, Host string
	Header                   http.Header
	ContentLength            int64
	TransferEncoding         []string
	Body                     string
}

// MustRecordingUpstream starts an upstream that answers 200 and sends what
// it received on the returned channel.
func MustRecordingUpstream(tb testing.TB) (*httptest.Server, <-chan received) {
	tb.Helper()
	got := make(chan received, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- received{r.Method, r.RequestURI, r.Host, r.Header.Clone(), r.ContentLength, r.TransferEncoding, string(b)}
	}))
	tb.Cleanup(up.Close)
	return up, got
}

// hopByHop are request headers that Outbound must drop; X-Named-Hop is
// named in Connection.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "X-Named-Hop", "X-Other-Hop",
}

func TestOutbound(t *testing.T) {
	type ctxKey struct{}
	ctx := context.WithValue(context.Background(), ctxKey{}, "call")

	t.Run("URL", func(t *testing.T) {
		for _, tt := range []struct {
			name, path, rawPath, rawQuery string
			wantURI, wantRawPath          string
		}{
			{name: "Plain", path: "/fn/a", rawPath: "/fn/a", rawQuery: "x=1&y=%20&x=2", wantURI: "/fn/a?x=1&y=%20&x=2"},
			{name: "NoQuery", path: "/", rawPath: "/", wantURI: "/"},
			{name: "EncodedSlash", path: "/fn/a/b", rawPath: "/fn/a%2Fb", wantURI: "/fn/a%2Fb", wantRawPath: "/fn/a%2Fb"},
			{name: "Space", path: "/fn/a b", rawPath: "/fn/a%20b", wantURI: "/fn/a%20b", wantRawPath: "/fn/a%20b"},
			{name: "QueryKeptRaw", path: "/q", rawPath: "/q", rawQuery: "a=%2F&b&=c;d", wantURI: "/q?a=%2F&b&=c;d"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				r := httptest.NewRequest(http.MethodGet, "http://gateway/in", nil)
				out, err := proxy.Outbound(ctx, r, "10.0.0.1:8080", tt.path, tt.rawPath, tt.rawQuery)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := out.URL.Scheme+"://"+out.URL.Host, "http://10.0.0.1:8080"; got != want {
					t.Errorf("scheme and host = %q, want %q", got, want)
				}
				if got := out.URL.RequestURI(); got != tt.wantURI {
					t.Errorf("RequestURI = %q, want %q", got, tt.wantURI)
				}
				if out.URL.Path != tt.path || out.URL.RawPath != tt.wantRawPath {
					t.Errorf("Path, RawPath = %q, %q; want %q, %q", out.URL.Path, out.URL.RawPath, tt.path, tt.wantRawPath)
				}
			})
		}
	})

	t.Run("MethodHeadersHost", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPatch, "http://gateway/in", strings.NewReader("hello"))
		r.Host = "api.example"
		r.Header.Set("Connection", "X-Named-Hop, keep-alive,, X-Other-Hop")
		for _, h := range hopByHop[1:] {
			r.Header.Set(h, "hop")
		}
		r.Header["X-Multi"] = []string{"a", "b"}
		r.Header.Set("Authorization", "Bearer k")
		r.Header.Set("Content-Type", "text/plain")
		before := r.Header.Clone()

		out, err := proxy.Outbound(ctx, r, "10.0.0.1:8080", "/p", "/p", "")
		if err != nil {
			t.Fatal(err)
		}
		if out.Method != http.MethodPatch {
			t.Errorf("Method = %q, want PATCH", out.Method)
		}
		if out.Host != "api.example" {
			t.Errorf("Host = %q, want the caller's %q", out.Host, "api.example")
		}
		if out.Context().Value(ctxKey{}) != "call" {
			t.Errorf("request does not carry the ctx given to Outbound")
		}
		for _, h := range hopByHop {
			if v, ok := out.Header[h]; ok {
				t.Errorf("hop-by-hop header %s forwarded: %q", h, v)
			}
		}
		for k, want := range map[string][]string{
			"X-Multi": {"a", "b"}, "Authorization": {"Bearer k"}, "Content-Type": {"text/plain"},
		} {
			if got := out.Header[k]; !slices.Equal(got, want) {
				t.Errorf("header %s = %q, want %q", k, got, want)
			}
		}
		if fmt.Sprint(r.Header) != fmt.Sprint(before) {
			t.Errorf("Outbound changed the caller's headers: %v, was %v", r.Header, before)
		}
	})

	t.Run("NoHost", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "http://gateway/in", nil)
		r.Host = ""
		out, err := proxy.Outbound(ctx, r, "10.0.0.1:8080", "/", "/", "")
		if err != nil {
			t.Fatal(err)
		}
		if out.Host != "" {
			t.Errorf("Host = %q, want empty (the URL's host is used)", out.Host)
		}
	})

	t.Run("Body", func(t *testing.T) {
		for _, tt := range []struct {
			name     string
			length   int64
			wantBody bool
		}{
			{name: "ContentLength0", length: 0, wantBody: false},
			{name: "Known", length: 5, wantBody: true},
			{name: "Unknown", length: -1, wantBody: true},
		} {
			t.Run(tt.name, func(t *testing.T) {
				r := httptest.NewRequest(http.MethodPost, "http://gateway/in", strings.NewReader("hello"))
				r.ContentLength = tt.length
				out, err := proxy.Outbound(ctx, r, "10.0.0.1:8080", "/", "/", "")
				if err != nil {
					t.Fatal(err)
				}
				if out.ContentLength != tt.length {
					t.Errorf("ContentLength = %d, want %d", out.ContentLength, tt.length)
				}
				if got := out.Body != nil; got != tt.wantBody {
					t.Errorf("has a body = %v, want %v", got, tt.wantBody)
				}
			})
		}
	})

	t.Run("ErrMethod", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "http://gateway/in", nil)
		r.Method = "BAD METHOD"
		if _, err := proxy.Outbound(ctx, r, "10.0.0.1:8080", "/", "/", ""); err == nil {
			t.Errorf("Outbound with an invalid method = nil error, want one")
		}
	})
}

// TestOutbound_Upstream checks what an upstream receives through a hop.
func TestOutbound_Upstream(t *testing.T) {
	up, got := MustRecordingUpstream(t)
	hop := MustHop(t, up)
	client := MustClient(t)

	t.Run("OK", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPut, hop+"/fn/a%2Fb/c?x=1&x=2&y=%2F", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "api.example"
		req.Header.Set("Connection", "X-Named-Hop")
		req.Header.Set("X-Named-Hop", "1")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("X-Keep", "2")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status = %d, want 200", resp.StatusCode)
		}
		r := <-got
		if r.Method != http.MethodPut || r.RequestURI != "/fn/a%2Fb/c?x=1&x=2&y=%2F" || r.Host != "api.example" {
			t.Errorf("upstream got %s %s Host %s, want PUT /fn/a%%2Fb/c?x=1&x=2&y=%%2F Host api.example", r.Method, r.RequestURI, r.Host)
		}
		if r.Body != "hello" || r.ContentLength != 5 {
			t.Errorf("upstream body = %q (length %d), want %q (5)", r.Body, r.ContentLength, "hello")
		}
		for _, h := range []string{"X-Named-Hop", "Upgrade"} {
			if v, ok := r.Header[h]; ok {
				t.Errorf("upstream got hop-by-hop header %s: %q", h, v)
			}
		}
		if r.Header.Get("X-Keep") != "2" {
			t.Errorf("upstream X-Keep = %q, want 2", r.Header.Get("X-Keep"))
		}
	})

	// A request without a body reaches the upstream as one: no chunked
	// encoding of an empty body.
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run("Empty"+method, func(t *testing.T) {
			req, err := http.NewRequest(method, hop+"/empty", http.NoBody)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			r := <-got
			if r.ContentLength != 0 || len(r.TransferEncoding) != 0 || r.Body != "" {
				t.Errorf("upstream got length %d, transfer encoding %q, body %q; want 0, none, empty", r.ContentLength, r.TransferEncoding, r.Body)
			}
		})
	}
}

func TestCopyHeader(t *testing.T) {
	resp := &http.Response{
		Header: http.Header{
			"Content-Type": {"text/plain"},
			"Connection":   {"X-Named-Hop, keep-alive"},
			"X-Named-Hop":  {"1"},
			"Keep-Alive":   {"timeout=5"},
			"Upgrade":      {"h2c"},
			"X-End":        {"a", "b"},
		},
		Trailer: http.Header{"X-Sum": nil, "X-Outcome": nil},
	}
	dst := http.Header{"X-Call-Id": {"c1"}}
	proxy.CopyHeader(dst, resp)

	for k, want := range map[string][]string{
		"Content-Type": {"text/plain"}, "X-End": {"a", "b"}, "X-Call-Id": {"c1"},
	} {
		if got := dst[k]; !slices.Equal(got, want) {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	for _, h := range []string{"Connection", "X-Named-Hop", "Keep-Alive", "Upgrade"} {
		if v, ok := dst[h]; ok {
			t.Errorf("hop-by-hop header %s copied: %q", h, v)
		}
	}
	announced := slices.Sorted(slices.Values(dst["Trailer"]))
	if want := []string{"X-Outcome", "X-Sum"}; !slices.Equal(announced, want) {
		t.Errorf("announced trailers = %q, want %q", announced, want)
	}
}

func TestCopyTrailer(t *testing.T) {
	resp := &http.Response{Trailer: http.Header{"X-Sum": {"42"}, "X-Outcome": {"ok"}}}
	dst := http.Header{"Content-Type": {"text/plain"}}
	proxy.CopyTrailer(dst, resp)
	for k, want := range map[string]string{"X-Sum": "42", "X-Outcome": "ok", "Content-Type": "text/plain"} {
		if got := dst.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

// TestHop_Trailers checks that trailers of the upstream reach the caller
// through a hop, after the body.
func TestHop_Trailers(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
	}))
	t.Cleanup(up.Close)
	resp, err := MustClient(t).Get(MustHop(t, up) + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, ok := resp.Trailer["X-Sum"]; !ok {
		t.Errorf("answer announces trailers %v, want X-Sum", resp.Trailer)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "body" {
		t.Errorf("body = %q, want %q", b, "body")
	}
	if got := resp.Trailer.Get("X-Sum"); got != "42" {
		t.Errorf("trailer X-Sum = %q, want 42", got)
	}
}

// TestCopyBody_StreamsUnknownLength checks that an answer of unknown length
// reaches the caller as the upstream writes it, not when it ends.
func TestCopyBody_StreamsUnknownLength(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
	}))
	t.Cleanup(up.Close)
	hop := MustHop(t, up)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release) // let the upstream end before the servers close
		}
	})

	// Both the answer's head and its first line must arrive while the
	// upstream still holds the rest.
	type head struct {
		resp *http.Response
		br   *bufio.Reader
		line string
		err  error
	}
	heads := make(chan head, 1)
	client := MustClient(t)
	go func() {
		resp, err := client.Get(hop + "/")
		if err != nil {
			heads <- head{err: err}
			return
		}
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		heads <- head{resp, br, line, err}
	}()
	var h head
	select {
	case h = <-heads:
	case <-time.After(10 * time.Second):
		t.Fatal("the first line did not reach the caller within 10s while the upstream was still writing")
	}
	if h.resp != nil {
		defer h.resp.Body.Close()
	}
	if h.err != nil {
		t.Fatal(h.err)
	}
	if h.resp.ContentLength != -1 {
		t.Errorf("ContentLength = %d, want -1 (chunked)", h.resp.ContentLength)
	}
	if h.line != "first\n" {
		t.Fatalf("first line = %q, want %q", h.line, "first\n")
	}
	close(release)
	rest, err := io.ReadAll(h.br)
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != "second\n" {
		t.Errorf("rest = %q, want %q", rest, "second\n")
	}
}

// nonFlusher is a ResponseWriter that cannot flush.
type nonFlusher struct{ http.ResponseWriter }

// failingWriter fails every write.
type failingWriter struct{ http.ResponseWriter }

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("caller went away") }

func TestCopyBody(t *testing.T) {
	body := strings.Repeat("x", 100<<10) // several reads of the copy buffer
	for _, tt := range []struct {
		name        string
		length      int64
		wantFlushed bool
	}{
		{name: "KnownLength", length: int64(len(body)), wantFlushed: false},
		{name: "UnknownLength", length: -1, wantFlushed: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			resp := &http.Response{ContentLength: tt.length, Body: io.NopCloser(strings.NewReader(body))}
			n, err := proxy.CopyBody(w, resp)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(body)) || w.Body.String() != body {
				t.Errorf("copied %d bytes (%d in the writer), want %d", n, w.Body.Len(), len(body))
			}
			if w.Flushed != tt.wantFlushed {
				t.Errorf("flushed = %v, want %v", w.Flushed, tt.wantFlushed)
			}
		})
	}
	t.Run("UnknownLengthNoFlusher", func(t *testing.T) {
		w := httptest.NewRecorder()
		resp := &http.Response{ContentLength: -1, Body: io.NopCloser(strings.NewReader("abc"))}
		if n, err := proxy.CopyBody(nonFlusher{w}, resp); err != nil || n != 3 {
			t.Errorf("CopyBody = %d, %v; want 3, nil", n, err)
		}
	})
	t.Run("ErrRead", func(t *testing.T) {
		boom := errors.New("upstream broke")
		w := httptest.NewRecorder()
		resp := &http.Response{ContentLength: -1, Body: io.NopCloser(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom)))}
		n, err := proxy.CopyBody(w, resp)
		if !errors.Is(err, boom) {
			t.Errorf("error = %v, want %v", err, boom)
		}
		if n != 3 || w.Body.String() != "abc" {
			t.Errorf("copied %d bytes %q before the error, want 3 %q", n, w.Body.String(), "abc")
		}
	})
	t.Run("ErrWrite", func(t *testing.T) {
		resp := &http.Response{ContentLength: 3, Body: io.NopCloser(strings.NewReader("abc"))}
		n, err := proxy.CopyBody(failingWriter{httptest.NewRecorder()}, resp)
		if err == nil || n != 0 {
			t.Errorf("CopyBody to a failing writer = %d, %v; want 0 and an error", n, err)
		}
	})
}

func TestIsBodyTooLarge(t *testing.T) {
	_, tooLarge := io.ReadAll(http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader("12345")), 2))
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{name: "MaxBytesError", err: tooLarge, want: true},
		{name: "Wrapped", err: fmt.Errorf("round trip: %w", tooLarge), want: true},
		{name: "Nil", err: nil, want: false},
		{name: "Other", err: errors.New("connection refused"), want: false},
		{name: "EOF", err: io.ErrUnexpectedEOF, want: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := proxy.IsBodyTooLarge(tt.err); got != tt.want {
				t.Errorf("IsBodyTooLarge(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}

	// Through a hop: the transport's error for a body over the limit is
	// recognised, so the caller gets 413 rather than 502.
	t.Run("RoundTrip", func(t *testing.T) {
		up, _ := MustRecordingUpstream(t)
		resp, err := MustClient(t).Post(MustHop(t, up)+"/", "application/octet-stream", strings.NewReader(strings.Repeat("x", 64*hopLimit)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status = %d, want 413", resp.StatusCode)
		}
	})
}
