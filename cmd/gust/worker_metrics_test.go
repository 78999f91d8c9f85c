package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gustfaas/gust"
)

// TestTokenGuard: a worker's /metrics answers only with its token, as the
// gateways' header or a bearer token.
func TestTokenGuard(t *testing.T) {
	h := tokenGuard("s3cret", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("metrics")) }))
	for _, tt := range []struct {
		name, header, value string
		want                int
	}{
		{"None", "", "", http.StatusUnauthorized},
		{"Wrong", "Authorization", "Bearer nope", http.StatusUnauthorized},
		{"Basic", "Authorization", "Basic czNjcmV0", http.StatusUnauthorized},
		{"Bearer", "Authorization", "Bearer s3cret", http.StatusOK},
		{"WorkerToken", gust.HeaderWorkerToken, "s3cret", http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			if tt.header != "" {
				r.Header.Set(tt.header, tt.value)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("status %d, want %d", w.Code, tt.want)
			}
		})
	}
}
