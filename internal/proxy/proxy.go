// Package proxy forwards one HTTP request to an upstream and streams the
// answer back. It is the data-plane hop of Gust (gateway → worker, worker →
// container), written for that hop rather than on httputil.ReverseProxy,
// which costs more per call than Gust's budget allows (DESIGN.md §10).
package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// NewTransport returns a transport tuned for many calls to few hosts: a
// large idle pool per host (Go's default of 2 costs ~40% throughput), no
// proxy from the environment, no compression negotiation.
func NewTransport() *http.Transport {
	return &http.Transport{
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // the caller's context bounds the call
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}

// hopHeaders are connection-level headers that must not be forwarded
// (RFC 9110 §7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// Outbound builds the request to send upstream: r's method, headers (less
// hop-by-hop ones) and body, to http://host + path (escaped as rawPath
// when that differs) + "?" + rawQuery, under ctx. It parses no URL.
func Outbound(ctx context.Context, r *http.Request, host, path, rawPath, rawQuery string) (*http.Request, error) {
	body := r.Body
	if r.ContentLength == 0 {
		body = nil
	}
	out, err := http.NewRequestWithContext(ctx, r.Method, "", body)
	if err != nil {
		return nil, err
	}
	// The request's own (empty) URL is filled in rather than replaced:
	// one allocation less per call.
	*out.URL = url.URL{Scheme: "http", Host: host, Path: path, RawQuery: rawQuery}
	if rawPath != path {
		out.URL.RawPath = rawPath
	}
	out.ContentLength = r.ContentLength
	out.Header = make(http.Header, len(r.Header)+2)
	for k, v := range r.Header {
		out.Header[k] = v
	}
	removeHop(out.Header)
	if r.Host != "" {
		out.Host = r.Host
	}
	return out, nil
}

func removeHop(h http.Header) {
	if c := h.Get("Connection"); c != "" {
		for _, f := range strings.Split(c, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		if _, ok := h[k]; ok {
			h.Del(k)
		}
	}
}

// CopyHeader copies resp's headers (less hop-by-hop ones) into dst, and
// announces the trailers resp declared so CopyTrailer can pass them on.
func CopyHeader(dst http.Header, resp *http.Response) {
	for k, v := range resp.Header {
		dst[k] = v
	}
	removeHop(dst)
	for k := range resp.Trailer {
		dst.Add("Trailer", k)
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// CopyBody streams resp's body to w and returns the bytes written. Answers
// of unknown length (chunked, server-sent events) are flushed after every
// read so a function that writes slowly reaches its caller as it writes.
func CopyBody(w http.ResponseWriter, resp *http.Response) (int64, error) {
	flush := resp.ContentLength == -1
	var flusher http.Flusher
	if flush {
		flusher, _ = w.(http.Flusher)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := resp.Body.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// IsBodyTooLarge reports whether err comes from a request body that went
// over an http.MaxBytesReader limit.
func IsBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// CopyTrailer copies resp's trailers (read once its body has ended) into
// dst; announced with a Trailer header before the answer began, they go
// out after the body.
func CopyTrailer(dst http.Header, resp *http.Response) {
	for k, v := range resp.Trailer {
		dst[k] = v
	}
}
