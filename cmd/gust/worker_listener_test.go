package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gustfaas/gust"
)

// TestWorkerListenerTakesGatewaysOnly attacks a worker's listener the way
// a function or a host on its network could: calls without the worker
// token, with a wrong one, and, with the token, with a forged call id,
// trigger or attempt and an oversized body. Each is refused before the
// function runs and leaves no metering record, while the real gateway's
// path (the same listener, with the token) works and the function never
// sees the token.
func TestWorkerListenerTakesGatewaysOnly(t *testing.T) {
	dp := mustRunDataPlane(t)
	deploy := `{"service":"contract","image":"img:1","labels":{"com.openfaas.scale.min":"1"}}`
	resp, err := http.Post("http://"+dp.local.Addr()+"/system/functions", "application/json", strings.NewReader(deploy))
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	resp.Body.Close()

	// The gateway's own path: through the listener, with its token.
	if a := mustCall(t, dp.remote, "/function/contract/ok"); a.status != 200 || a.body != "ok" {
		t.Fatalf("call through the remote gateway: %d %q, want 200 ok", a.status, a.body)
	}
	if a := mustCall(t, dp.remote, "/function/contract/token"); a.status != 200 || a.body != "" {
		t.Errorf("the function saw %s = %q, want it removed", gust.HeaderWorkerToken, a.body)
	}

	url := dp.workerSrv.URL + gust.InvokePrefix + gust.DefaultNamespace + "/contract/ok"
	for _, tt := range []struct {
		name   string
		header map[string]string
		body   string
		want   int
	}{
		{"NoToken", map[string]string{gust.HeaderGustCallID: "forged-1"}, "", http.StatusUnauthorized},
		{"WrongToken", map[string]string{gust.HeaderWorkerToken: "guess", gust.HeaderGustCallID: "forged-2"}, "", http.StatusUnauthorized},
		{"TokenPrefix", map[string]string{gust.HeaderWorkerToken: dataPlaneToken[:4], gust.HeaderGustCallID: "forged-3"}, "", http.StatusUnauthorized},
		{"NoCallID", map[string]string{gust.HeaderWorkerToken: dataPlaneToken}, "", http.StatusBadRequest},
		{"CallIDWithSpace", map[string]string{gust.HeaderWorkerToken: dataPlaneToken, gust.HeaderGustCallID: "forged 4"}, "", http.StatusBadRequest},
		{"CallIDTooLong", map[string]string{gust.HeaderWorkerToken: dataPlaneToken, gust.HeaderGustCallID: strings.Repeat("f", 513)}, "", http.StatusBadRequest},
		{"UnknownTrigger", map[string]string{gust.HeaderWorkerToken: dataPlaneToken, gust.HeaderGustCallID: "forged-5", gust.HeaderTrigger: "billing"}, "", http.StatusBadRequest},
		{"BadAttempt", map[string]string{gust.HeaderWorkerToken: dataPlaneToken, gust.HeaderGustCallID: "forged-6", gust.HeaderAttempt: "0"}, "", http.StatusBadRequest},
		{"BodyTooLarge", map[string]string{gust.HeaderWorkerToken: dataPlaneToken, gust.HeaderGustCallID: "forged-7"}, strings.Repeat("x", dataPlaneMaxBody+1), http.StatusRequestEntityTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || string(b) == "ok" {
				t.Errorf("answered %d %s, want %d", resp.StatusCode, b, tt.want)
			}
			if id := tt.header[gust.HeaderGustCallID]; id != "" {
				if recs := dp.meter.recordsOf(id); len(recs) != 0 {
					t.Errorf("a refused call left records %+v", recs)
				}
			}
		})
	}
	// With the token and a valid id, the listener runs the call: what the
	// refusals above lacked is all that kept them out.
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set(gust.HeaderWorkerToken, dataPlaneToken)
	req.Header.Set(gust.HeaderGustCallID, "direct-1")
	resp, err = http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("a call with the token answered %d %s, want 200 ok", resp.StatusCode, b)
	}
}

// TestWorkerListenerTLS: a worker whose listener serves TLS advertises an
// https:// URL; a gateway trusting its CA calls it (token and all), one
// trusting only the system's CAs is refused by the handshake, and the
// call answers 503 without the worker's address.
func TestWorkerListenerTLS(t *testing.T) {
	dp := mustRunDataPlaneTLS(t, true)
	if !strings.HasPrefix(dp.workerSrv.URL, "https://") {
		t.Fatalf("worker listener at %s, want https", dp.workerSrv.URL)
	}
	deploy := `{"service":"contract","image":"img:1","labels":{"com.openfaas.scale.min":"1"}}`
	resp, err := http.Post("http://"+dp.local.Addr()+"/system/functions", "application/json", strings.NewReader(deploy))
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	resp.Body.Close()
	if a := mustCall(t, dp.remote, "/function/contract/ok"); a.status != 200 || a.body != "ok" {
		t.Errorf("call over TLS: %d %q, want 200 ok", a.status, a.body)
	}
	untrusting := dp.open(nil)
	if a := mustCall(t, untrusting, "/function/contract/ok"); a.status != http.StatusServiceUnavailable || strings.Contains(a.body, "127.0.0.1") {
		t.Errorf("call from a gateway not trusting the worker's CA: %d %s, want 503 naming no address", a.status, a.body)
	}
}
