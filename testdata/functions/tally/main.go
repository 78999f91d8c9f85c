// Command tally is the function of scripts/faults: it writes one line to
// stdout for every call it completes, "tally CALL-ID BODY" (the body cut at
// 64 bytes, without newlines), so the test can count from the function's
// own log how many times each async call and each event ran. ?sleep=MS
// makes it take that long first (at most a minute).
//
//	gust build testdata/functions/tally --tag gust-faults/tally:1
package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	sdk "github.com/gustfaas/gust/functions-sdk"
)

func main() {
	sdk.RunFunc(tally)
}

func tally(w http.ResponseWriter, r *http.Request) {
	if ms, err := strconv.Atoi(r.URL.Query().Get("sleep")); err == nil && ms > 0 && ms <= 60000 {
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64))
	token := strings.Map(func(c rune) rune {
		if c == '\n' || c == '\r' || c == ' ' {
			return '_'
		}
		return c
	}, string(body))
	if token == "" {
		token = "-"
	}
	// One write per line, so lines of concurrent calls never interleave.
	line := fmt.Sprintf("tally %s %s\n", r.Header.Get("X-Call-Id"), token)
	fmt.Print(line)
	_, _ = io.WriteString(w, line)
}
