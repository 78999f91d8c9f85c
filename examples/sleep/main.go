// Command sleep is a Gust function that takes as long as it is told to, for
// testing concurrency limits and timeouts.
//
//	?ms=N   how long to take, in milliseconds (0 by default, at most one hour);
//	        a value that is not a whole number in that range gets 400
//	?cpu=1  burn CPU for that long instead of sleeping
//
// It answers 200 with the JSON object {"slept_ms": N, "callId": ...,
// "instance": hostname, "inflight": calls running in this instance when this
// one started (itself included)}, so tests can see concurrency per instance. It stops
// early when the request context ends (the caller went away or the call's
// deadline passed); it then answers 503 with the milliseconds it actually took
// and an "error" field.
//
// Build and deploy it with:
//
//	gust build examples/sleep --tag sleep:latest
//	gust deploy --name sleep --image sleep:latest
package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	sdk "github.com/gustfaas/gust/functions-sdk"
)

// maxMS is the longest a call may ask for.
const maxMS = int64(time.Hour / time.Millisecond)

func main() {
	sdk.RunFunc(sleep)
}

// reply is what sleep answers.
type reply struct {
	SleptMS  int64  `json:"slept_ms"`
	CallID   string `json:"callId"`
	Instance string `json:"instance"`
	InFlight int64  `json:"inflight"`
	Error    string `json:"error,omitempty"`
}

// inflight counts the calls this instance is running.
var inflight atomic.Int64

var hostname, _ = os.Hostname()

// sleep waits or burns CPU for ?ms=N milliseconds.
func sleep(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var ms int64
	if v := q.Get("ms"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > maxMS {
			http.Error(w, "ms must be a whole number of milliseconds from 0 to "+strconv.FormatInt(maxMS, 10), http.StatusBadRequest)
			return
		}
		ms = n
	}
	cpu := false
	if v := q.Get("cpu"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			http.Error(w, "cpu must be 1 or 0", http.StatusBadRequest)
			return
		}
		cpu = b
	}

	n := inflight.Add(1)
	defer inflight.Add(-1)
	ctx := r.Context()
	d := time.Duration(ms) * time.Millisecond
	start := time.Now()
	var err error
	if cpu {
		err = burn(ctx, d)
	} else {
		err = wait(ctx, d)
	}
	out := reply{SleptMS: ms, CallID: sdk.CallID(ctx), Instance: hostname, InFlight: n}
	status := http.StatusOK
	if err != nil {
		out.SleptMS = time.Since(start).Milliseconds()
		out.Error = err.Error()
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(out)
}

// wait sleeps for d or until ctx ends, and then returns ctx's error.
func wait(ctx context.Context, d time.Duration) error {
	if d == 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sink keeps the compiler from removing burn's work.
var sink uint64

// burn keeps one CPU busy for d or until ctx ends, and then returns ctx's
// error.
func burn(ctx context.Context, d time.Duration) error {
	end := time.Now().Add(d)
	x := uint64(88172645463325252)
	for time.Now().Before(end) {
		if err := ctx.Err(); err != nil {
			return err
		}
		for range 10000 { // xorshift: cheap work with no allocations
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
		}
	}
	sink += x
	return nil
}
