package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHello(t *testing.T) {
	for _, tt := range []struct {
		name   string
		body   string
		status int
		want   string
	}{
		{"Name", "Ada", http.StatusOK, "Hello, Ada!\n"},
		{"Trimmed", "  \n Grace Hopper\t\n", http.StatusOK, "Hello, Grace Hopper!\n"},
		{"Empty", "", http.StatusOK, "Hello, world!\n"},
		{"Blank", " \r\n\t", http.StatusOK, "Hello, world!\n"},
		{"TooLarge", strings.Repeat("a", maxBody+1), http.StatusRequestEntityTooLarge, "request body too large\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			hello(w, httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body)))
			if got, want := w.Code, tt.status; got != want {
				t.Fatalf("status=%d, want %d", got, want)
			}
			if got, want := w.Body.String(), tt.want; got != want {
				t.Fatalf("body=%q, want %q", got, want)
			}
		})
	}
}
