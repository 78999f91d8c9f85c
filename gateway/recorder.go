package gateway

import (
	"bytes"
	"net/http"
)

// recorder is the http.ResponseWriter of calls the gateway makes itself
// (async and event calls): it keeps the answer, up to a bound.
type recorder struct {
	status int
	header http.Header
	body   bytes.Buffer
}

// maxRecordedBody bounds the answer kept for callbacks and NATS replies.
const maxRecordedBody = 8 << 20

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if room := maxRecordedBody - r.body.Len(); room < len(p) {
		r.body.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return r.body.Write(p)
}

// Flush is a no-op: the whole answer is kept.
func (r *recorder) Flush() {}
