package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdk "github.com/gustfaas/gust/functions-sdk"
)

func TestSleep(t *testing.T) {
	for _, tt := range []struct {
		name  string
		query string
		want  int64
	}{
		{"Default", "", 0},
		{"Sleep", "?ms=50", 50},
		{"CPU", "?ms=50&cpu=1", 50},
		{"CPUOff", "?ms=20&cpu=0", 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/"+tt.query, nil)
			r.Header.Set(sdk.HeaderCallID, "call-"+tt.name)
			w := httptest.NewRecorder()
			start := time.Now()
			sdk.Wrap(http.HandlerFunc(sleep)).ServeHTTP(w, r)
			took := time.Since(start)

			if got, want := w.Code, http.StatusOK; got != want {
				t.Fatalf("status=%d, want %d (body %q)", got, want, w.Body.String())
			}
			if got, want := w.Header().Get("Content-Type"), "application/json"; got != want {
				t.Fatalf("Content-Type=%q, want %q", got, want)
			}
			var got reply
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if want := (reply{SleptMS: tt.want, CallID: "call-" + tt.name, Instance: hostname, InFlight: 1}); got != want {
				t.Fatalf("got %+v, want %+v", got, want)
			}
			if took < time.Duration(tt.want)*time.Millisecond {
				t.Fatalf("took %v, want at least %dms", took, tt.want)
			}
		})
	}
}

func TestSleep_BadInput(t *testing.T) {
	for _, q := range []string{"ms=abc", "ms=-1", "ms=1.5", "ms=99999999999999999999", "ms=3600001", "ms=5&cpu=maybe"} {
		t.Run(q, func(t *testing.T) {
			w := httptest.NewRecorder()
			sleep(w, httptest.NewRequest(http.MethodGet, "/?"+q, nil))
			if got, want := w.Code, http.StatusBadRequest; got != want {
				t.Fatalf("status=%d, want %d", got, want)
			}
			if w.Body.Len() == 0 {
				t.Fatal("no message in the 400 answer")
			}
		})
	}
}

func TestSleep_StopsWhenContextEnds(t *testing.T) {
	for _, q := range []string{"ms=10000", "ms=10000&cpu=1"} {
		t.Run(q, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			w := httptest.NewRecorder()
			start := time.Now()
			sleep(w, httptest.NewRequest(http.MethodGet, "/?"+q, nil).WithContext(ctx))
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("took %v after the context ended", took)
			}
			if got, want := w.Code, http.StatusServiceUnavailable; got != want {
				t.Fatalf("status=%d, want %d", got, want)
			}
			var got reply
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.SleptMS >= 10000 || !strings.Contains(got.Error, "deadline") {
				t.Fatalf("got %+v, want slept_ms < 10000 and a deadline error", got)
			}
		})
	}
}

func TestSleep_StopsAtCallDeadline(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/?ms=10000", nil)
	r.Header.Set(sdk.HeaderDeadline, time.Now().Add(50*time.Millisecond).Format(time.RFC3339Nano))
	w := httptest.NewRecorder()
	start := time.Now()
	sdk.Wrap(http.HandlerFunc(sleep)).ServeHTTP(w, r)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %v, want it to stop at the call deadline", took)
	}
	if got, want := w.Code, http.StatusServiceUnavailable; got != want {
		t.Fatalf("status=%d, want %d", got, want)
	}
}
