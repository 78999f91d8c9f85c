package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Client sends HTTP/1.1 requests to one upstream (a function's instance)
// over connections it keeps, writing each request and reading its answer
// on the calling goroutine. net/http's Transport hands every request to a
// writing and a reading goroutine of its connection and the answer back,
// which on two cores cost about a quarter of the CPU of a forwarding hop
// (docs/benchmarks.md, "Issue 11, third pass"); a worker's calls are
// mostly small requests answered one at a time per connection, which need
// none of it.
// What it does not send itself goes through its fallback transport, which
// streams: a body of unknown length or over InlineBody, and requests that
// expect a 100 Continue.
type Client struct {
	host     string
	fallback http.RoundTripper
	dial     func(ctx context.Context) (net.Conn, error) // nil: Dialer to host

	mu     sync.Mutex
	idle   []*clientConn // most recently used last
	closed bool
}

// InlineBody is the largest request body Client sends itself. It reads
// the body whole first and writes the request before it reads the answer,
// so a function that answers without reading its body must not block
// that write: this much fits in the two ends' socket buffers.
const InlineBody = 32 << 10

// clientIdleTimeout is how long an idle connection is kept (as
// NewTransport's).
const clientIdleTimeout = 90 * time.Second

// clientMaxIdle bounds the idle connections kept to one upstream.
const clientMaxIdle = 256

// NewClient returns a client of the upstream at host ("ip:port"), with
// fallback for what it does not send itself.
func NewClient(host string, fallback http.RoundTripper) *Client {
	return &Client{host: host, fallback: fallback}
}

// NewClientDial is NewClient with the connections of the requests it
// sends itself made by dial (the fallback transport dials host as ever).
func NewClientDial(host string, fallback http.RoundTripper, dial func(ctx context.Context) (net.Conn, error)) *Client {
	c := NewClient(host, fallback)
	c.dial = dial
	return c
}

// Dialer is how Client connects to an upstream.
var Dialer = net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}

type clientConn struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

// inline reports whether Client sends req itself.
func inline(req *http.Request) bool {
	if req.ContentLength < 0 || req.ContentLength > InlineBody ||
		req.ContentLength == 0 && req.Body != nil && req.Body != http.NoBody {
		return false // unknown length: streamed
	}
	_, expect := req.Header["Expect"]
	return !expect && req.URL.Scheme == "http"
}

// inlineBody is a request body read whole, to write (and write again on
// a retry) from memory. A bytes.Reader, which net/http knows to be in
// memory, goes out with the request's head in one write; a reader of
// another type would have the head flushed first, a system call more.
type inlineBody struct {
	b  []byte
	rd bytes.Reader
}

var inlineBodies = sync.Pool{New: func() any { return &inlineBody{b: make([]byte, 0, InlineBody)} }}

// errUpgrade: an upstream switched protocols, which no request of
// Client's asked for.
var errUpgrade = errors.New("upstream answered 101 Switching Protocols to a request that did not ask for it")

// RoundTrip implements http.RoundTripper. The answer's body must be read
// to its end or closed: only then does its connection serve another
// request.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	if !inline(req) {
		return c.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	w := *req // sent with the body from memory; req is not changed
	w.Body = nil
	var body *inlineBody
	if req.Body != nil && req.Body != http.NoBody {
		body = inlineBodies.Get().(*inlineBody)
		defer inlineBodies.Put(body)
		body.b = body.b[:req.ContentLength]
		_, err := io.ReadFull(req.Body, body.b)
		_ = req.Body.Close()
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				err = fmt.Errorf("http: request body shorter than its ContentLength %d: %w", req.ContentLength, err)
			}
			return nil, err
		}
		w.Body = io.NopCloser(&body.rd)
	}
	for {
		cc, reused, err := c.get(ctx)
		if err != nil {
			return nil, err
		}
		if body != nil {
			body.rd.Reset(body.b)
		}
		resp, got, err := c.exchange(ctx, cc, &w)
		if err == nil {
			resp.Request = req
			return resp, nil
		}
		_ = cc.conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// A connection kept idle may have been closed by the upstream
		// just as it was taken: a request it did not answer at all may go
		// again on a new one, as net/http's Transport does (one written
		// whole only if it is idempotent: the upstream may have run it).
		if !reused || got != notWritten && !(got == writtenWhole && idempotent(req)) {
			return nil, err
		}
	}
}

// How far a failed exchange got.
const (
	answered     = iota // some of an answer was read
	notWritten          // the request was not written whole
	writtenWhole        // the request was written, nothing was answered
)

// exchange writes req on cc and reads the answer's head; on an error it
// says how far it got.
func (c *Client) exchange(ctx context.Context, cc *clientConn, req *http.Request) (*http.Response, int, error) {
	// A cancelled call interrupts the connection's reads and writes; the
	// connection is then not used again.
	stop := context.AfterFunc(ctx, func() { _ = cc.conn.SetDeadline(time.Unix(1, 0)) })
	err := req.Write(cc.bw)
	if err == nil {
		err = cc.bw.Flush()
	}
	if err != nil {
		stop()
		return nil, notWritten, err
	}
	if _, err = cc.br.Peek(1); err != nil {
		stop()
		return nil, writtenWhole, err
	}
	for {
		resp, err := http.ReadResponse(cc.br, req)
		switch {
		case err != nil:
			stop()
			return nil, answered, err
		case resp.StatusCode == http.StatusSwitchingProtocols:
			stop()
			return nil, answered, errUpgrade
		case resp.StatusCode >= 100 && resp.StatusCode < 200:
			continue // informational (103 Early Hints): the final answer follows
		}
		resp.Body = &clientBody{c: c, cc: cc, body: resp.Body, ctx: ctx, stop: stop, reuse: !resp.Close && !req.Close}
		return resp, answered, nil
	}
}

// idempotent reports whether req may be sent again after the upstream
// may have run it (RFC 9110 §9.2.2), as net/http's Transport decides.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// get takes the connection used last that is still open, or dials one.
func (c *Client) get(ctx context.Context) (*clientConn, bool, error) {
	c.mu.Lock()
	for n := len(c.idle); n > 0; n = len(c.idle) {
		cc := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		if cc.open() {
			return cc, true, nil
		}
		_ = cc.conn.Close()
		c.mu.Lock()
	}
	c.mu.Unlock()
	var conn net.Conn
	var err error
	if c.dial != nil {
		conn, err = c.dial(ctx)
	} else {
		conn, err = Dialer.DialContext(ctx, "tcp", c.host)
	}
	if err != nil {
		return nil, false, err
	}
	return &clientConn{conn: conn, br: bufio.NewReaderSize(conn, 4<<10), bw: bufio.NewWriterSize(conn, 4<<10)}, false, nil
}

// open reports whether the upstream has not closed cc while it was idle:
// nothing to read on it, not even its end (bytes would be an answer to no
// request). net/http's Transport learns it from the read its goroutine
// keeps waiting in; a look at the socket costs one system call.
func (cc *clientConn) open() bool {
	if cc.br.Buffered() > 0 {
		return false
	}
	return socketIdle(cc.conn)
}

// put keeps cc for the next request, unless the client is closed or
// keeps enough; connections idle past clientIdleTimeout are closed.
func (c *Client) put(cc *clientConn) {
	now := time.Now()
	cc.idleSince = now
	c.mu.Lock()
	var old []*clientConn
	for len(c.idle) > 0 && now.Sub(c.idle[0].idleSince) > clientIdleTimeout {
		old = append(old, c.idle[0])
		c.idle = c.idle[1:]
	}
	keep := !c.closed && len(c.idle) < clientMaxIdle
	if keep {
		c.idle = append(c.idle, cc)
	}
	c.mu.Unlock()
	if !keep {
		old = append(old, cc)
	}
	for _, o := range old {
		_ = o.conn.Close()
	}
}

// CloseIdle closes the idle connections, and those of requests in flight
// as they end: the upstream is going away. A nil client has none.
func (c *Client) CloseIdle() {
	if c == nil {
		return
	}
	c.mu.Lock()
	idle := c.idle
	c.idle, c.closed = nil, true
	c.mu.Unlock()
	for _, cc := range idle {
		_ = cc.conn.Close()
	}
}

// clientBody is an answer's body: read to its end, its connection goes
// back to the client; closed before, the connection is closed.
type clientBody struct {
	c     *Client
	cc    *clientConn
	body  io.ReadCloser
	ctx   context.Context
	stop  func() bool
	reuse bool
	done  bool
	err   error
}

func (b *clientBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, b.err
	}
	n, err := b.body.Read(p)
	if err != nil {
		if err != io.EOF && b.ctx.Err() != nil {
			err = b.ctx.Err()
		}
		b.finish(err == io.EOF, err)
	}
	return n, err
}

func (b *clientBody) Close() error {
	if !b.done {
		b.finish(false, errors.New("http: read on closed response body"))
	}
	return nil
}

func (b *clientBody) finish(whole bool, err error) {
	b.done, b.err = true, err
	// stop is false once the cancellation has run: the connection's
	// deadline is then in the past.
	if b.stop() && whole && b.reuse {
		b.c.put(b.cc)
		return
	}
	_ = b.cc.conn.Close()
}
