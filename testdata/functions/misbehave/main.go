// Command misbehave is a Gust test function that fails in the ways a user
// function can, so the platform's handling of each can be tested. It is built
// on the SDK like any function. The query picks the misbehaviour; the first
// one present in this order wins:
//
//	?crash=1    exit the process with status 3 at once, without answering
//	?garbage=1  hijack the connection, write "this is not HTTP\r\n\r\n", close it
//	?hang=1     block until the request context ends, then drop the connection
//	            without answering; it does nothing about the call deadline
//	            itself (the SDK ends the request context at that deadline)
//	?freeze=1   freeze the instance for good: this and every later call hang
//	            until their context ends, and GET /healthy answers 503 (deploy
//	            with the label gust.health=/healthy to use it as the readiness
//	            check): an instance that times out and does not recover
//	?stream=N   write N lines "line 1\n" ... "line N\n", one every 100ms,
//	            flushing after each (N from 0 to 10000)
//	?status=N   answer with status N (200 to 599) and its status text
//	?print=N    print N bytes to stdout as fast as it can, in lines of
//	            &line=L bytes (default 1024, from 64 to 16384, newline
//	            included; N from 0 to 1 GiB), then "print end <X-Call-Id>
//	            lines <n>" as the last line, and answer "printed <n>"
//	?peer=1     answer the address the call came from (its connection's
//	            remote address, "ip:port")
//
// Otherwise it answers 200 "ok". A bad N gets 400. Before any of these,
// ?fail-until=N answers 500 while the call's X-Gust-Attempt is below N (a
// function that fails N-1 times, then succeeds). Every call is logged to
// stdout as "call <X-Call-Id> attempt <X-Gust-Attempt>" when it starts and
// "done <X-Call-Id> attempt <n>" when its handler returns.
//
// With MISBEHAVE_UNHEALTHY=1 in its environment it exits with status 1 as soon
// as it starts, before it listens: a function that never becomes ready. (The
// SDK answers /_/health itself, so a running SDK function cannot fail its
// readiness check; not starting at all is the way to fail it.)
//
// Build and deploy it with:
//
//	gust build testdata/functions/misbehave --tag misbehave:latest
//	gust deploy --name misbehave --image misbehave:latest
package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	sdk "github.com/gustfaas/gust/functions-sdk"
)

// frozen is set by ?freeze=1 and never cleared.
var frozen atomic.Bool

// crashStatus is the exit status of ?crash=1.
const crashStatus = 3

// garbage is what ?garbage=1 writes instead of an HTTP response.
const garbage = "this is not HTTP\r\n\r\n"

// streamEvery is the pause between two lines of ?stream=N.
const streamEvery = 100 * time.Millisecond

// maxStream is the most lines ?stream=N writes.
const maxStream = 10000

// The bounds of ?print=N&line=L.
const (
	maxPrint         = 1 << 30
	defaultPrintLine = 1024
	minPrintLine     = 64
	maxPrintLine     = 16 << 10
)

func main() {
	if os.Getenv("MISBEHAVE_UNHEALTHY") == "1" {
		fmt.Fprintln(os.Stderr, "misbehave: MISBEHAVE_UNHEALTHY=1, exiting before becoming ready")
		os.Exit(1)
	}
	sdk.RunFunc(misbehave)
}

// misbehave does what the query asks for; see the package doc.
func misbehave(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.URL.Path != "/healthy" {
		// The function's own log of the calls it ran, for tests that
		// count runs: "call <X-Call-Id> attempt <X-Gust-Attempt>" when
		// one starts, "done <X-Call-Id> attempt <n>" when its handler
		// returned.
		id, attempt := r.Header.Get("X-Call-Id"), r.Header.Get("X-Gust-Attempt")
		fmt.Printf("call %s attempt %s\n", id, attempt)
		defer fmt.Printf("done %s attempt %s\n", id, attempt)
	}
	if n, err := strconv.Atoi(q.Get("fail-until")); err == nil {
		if a, _ := strconv.Atoi(r.Header.Get("X-Gust-Attempt")); a < n {
			http.Error(w, fmt.Sprintf("attempt %d fails until attempt %d", a, n), http.StatusInternalServerError)
			return
		}
	}
	switch {
	case q.Get("crash") == "1":
		os.Exit(crashStatus)
	case q.Get("garbage") == "1":
		writeGarbage(w)
	case r.URL.Path == "/healthy":
		if frozen.Load() {
			http.Error(w, "frozen", http.StatusServiceUnavailable)
		}
	case q.Get("freeze") == "1" || frozen.Load():
		frozen.Store(true)
		<-r.Context().Done()
		panic(http.ErrAbortHandler)
	case q.Get("hang") == "1":
		<-r.Context().Done()
		panic(http.ErrAbortHandler) // close the connection without an answer
	case q.Get("peer") == "1":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, r.RemoteAddr)
	case q.Has("stream"):
		n, err := strconv.Atoi(q.Get("stream"))
		if err != nil || n < 0 || n > maxStream {
			http.Error(w, fmt.Sprintf("stream must be a whole number from 0 to %d", maxStream), http.StatusBadRequest)
			return
		}
		stream(w, r, n)
	case q.Has("print"):
		n, err1 := strconv.Atoi(q.Get("print"))
		size, err2 := defaultPrintLine, error(nil)
		if q.Has("line") {
			size, err2 = strconv.Atoi(q.Get("line"))
		}
		if err1 != nil || err2 != nil || n < 0 || n > maxPrint || size < minPrintLine || size > maxPrintLine {
			http.Error(w, fmt.Sprintf("print must be a whole number from 0 to %d, line from %d to %d", maxPrint, minPrintLine, maxPrintLine), http.StatusBadRequest)
			return
		}
		lines := printLines(n, size, r.Header.Get("X-Call-Id"))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "printed %d", lines)
	case q.Has("status"):
		n, err := strconv.Atoi(q.Get("status"))
		if err != nil || n < 200 || n > 599 {
			http.Error(w, "status must be a whole number from 200 to 599", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(n)
		io.WriteString(w, http.StatusText(n)) // dropped for 204 and 304, which have no body
	default:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok")
	}
}

// writeGarbage takes over the connection and writes something that is not an
// HTTP response.
func writeGarbage(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "hijack: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	io.WriteString(conn, garbage)
}

// stream writes n lines, one every streamEvery, flushing each, and stops early
// if the request context ends.
func stream(w http.ResponseWriter, r *http.Request, n int) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	rc.Flush()
	t := time.NewTicker(streamEvery)
	defer t.Stop()
	for i := 1; i <= n; i++ {
		if i > 1 {
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "line %d\n", i)
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// printLines prints n bytes to stdout in lines of size bytes (a last,
// shorter one for the rest), numbered so a reader can tell which were
// kept, then the end line naming the call. Buffered: a write per line
// would measure the system call, not the platform's log path. It returns
// the lines printed, the end line included.
func printLines(n, size int, id string) int {
	bw := bufio.NewWriterSize(os.Stdout, 64<<10)
	fill := make([]byte, size)
	for i := range fill {
		fill[i] = 'x'
	}
	lines := 0
	for n > 0 {
		l := min(size, n)
		lines++
		head := fmt.Sprintf("print %d ", lines)
		if len(head)+1 > l {
			head = head[:l-1]
		}
		bw.WriteString(head)
		bw.Write(fill[:l-1-len(head)])
		bw.WriteByte('\n')
		n -= l
	}
	lines++
	fmt.Fprintf(bw, "print end %s lines %d\n", id, lines)
	bw.Flush()
	return lines
}
