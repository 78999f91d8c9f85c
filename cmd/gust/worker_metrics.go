package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/gustfaas/gust"
)

// tokenGuard serves h only to callers that present token, as the header
// gateways send (gust.HeaderWorkerToken) or as a bearer token (what
// Prometheus sends with bearer_token_file): a worker's /metrics names
// functions, namespaces and call counts, which others on its network
// need not read.
func tokenGuard(token string, h http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get(gust.HeaderWorkerToken)
		if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && got == "" {
			got = b
		}
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gust-worker"`)
			http.Error(w, "this worker's metrics need its token (Authorization: Bearer, or "+gust.HeaderWorkerToken+")", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
