package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/mock"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"github.com/gustfaas/gust/scheduler"
	"github.com/gustfaas/gust/worker"
	"go.uber.org/zap/zaptest"
)

// recordingMeter keeps copies of the call records it is given (the worker
// reuses its record after RecordCall returns).
type recordingMeter struct {
	mu    sync.Mutex
	calls []gust.CallRecord
}

func (m *recordingMeter) RecordCall(rec *gust.CallRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, *rec)
}

func (m *recordingMeter) RecordInstance(*gust.InstanceRecord) {}

// recordsOf returns the records made for Gust's call id id.
func (m *recordingMeter) recordsOf(id string) []gust.CallRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []gust.CallRecord
	for _, r := range m.calls {
		if r.CallID == id {
			out = append(out, r)
		}
	}
	return out
}

// dataPlane is one worker on the fake runtime, reached by two gateways:
// one that holds it in process (as `gust up` does) and one that calls it
// over HTTP (as a gateway on another host does).
type dataPlane struct {
	local, remote *gateway.Server
	meter         *recordingMeter
	workerSrv     *httptest.Server
	// open starts another gateway calling the worker over HTTP, trusting
	// workerTLS for a worker with TLS.
	open func(workerTLS *tls.Config) *gateway.Server
}

// contractFunction answers by path: /ok 200, /fail 500 (the function's
// own error), /slow past its timeout, /crash breaks the connection.
func contractFunction(gust.ContainerSpec) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			http.Error(w, "function says no", http.StatusInternalServerError)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		case "/crash":
			panic(http.ErrAbortHandler)
		case "/token":
			io.WriteString(w, r.Header.Get(gust.HeaderWorkerToken))
		default:
			io.WriteString(w, "ok")
		}
	})
}

// The worker token and body limit of the data plane's worker listener.
const (
	dataPlaneToken   = "data-plane-token"
	dataPlaneMaxBody = 1 << 10
)

func mustRunDataPlane(t *testing.T) *dataPlane {
	t.Helper()
	return mustRunDataPlaneTLS(t, false)
}

// mustRunDataPlaneTLS is mustRunDataPlane with, when withTLS, the worker's
// listener serving TLS (and the remote gateway trusting its certificate).
func mustRunDataPlaneTLS(t *testing.T, withTLS bool) *dataPlane {
	t.Helper()
	ctx := context.Background()
	logger := zaptest.NewLogger(t)
	state, bus := natsbustest.MustOpenState(t)
	rt := mock.NewRuntime(contractFunction)
	t.Cleanup(rt.Close)

	sched := scheduler.New(scheduler.DefaultConfig(), state, bus, logger)
	if err := sched.Start(ctx); err != nil {
		t.Fatalf("scheduler: %v", err)
	}
	t.Cleanup(func() { _ = sched.Close() })

	dp := &dataPlane{meter: &recordingMeter{}}
	mux := http.NewServeMux()
	dp.workerSrv = httptest.NewUnstartedServer(mux)
	var trust *tls.Config
	if withTLS {
		dp.workerSrv.StartTLS()
		pool := x509.NewCertPool()
		pool.AddCert(dp.workerSrv.Certificate())
		trust = &tls.Config{RootCAs: pool}
	} else {
		dp.workerSrv.Start()
	}
	t.Cleanup(dp.workerSrv.Close)
	wc := worker.DefaultConfig()
	wc.ID, wc.Addr = "w1", dp.workerSrv.URL
	w := worker.New(wc, rt, state, bus, logger).WithMetering(dp.meter, nil)
	if err := w.Start(ctx); err != nil {
		t.Fatalf("worker: %v", err)
	}
	t.Cleanup(func() { _ = w.Close() })
	mux.Handle("/", w.Handler(worker.ListenerConfig{Token: dataPlaneToken, MaxBodyBytes: dataPlaneMaxBody}))

	open := func(local gust.Invoker, localID string, workerTLS *tls.Config) *gateway.Server {
		cfg := gateway.DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		router := gateway.NewRouter(state, bus, local, localID, logger)
		router.WorkerToken = dataPlaneToken
		if workerTLS != nil {
			router.SetWorkerTLS(workerTLS)
		}
		s := gateway.New(cfg, state, bus, router, logger).WithMetering(dp.meter, nil)
		if err := s.Open(ctx); err != nil {
			t.Fatalf("gateway: %v", err)
		}
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = s.Close(cctx)
		})
		return s
	}
	dp.local = open(w, wc.ID, nil)
	dp.remote = open(nil, "", trust)
	dp.open = func(workerTLS *tls.Config) *gateway.Server { return open(nil, "", workerTLS) }
	return dp
}

type answer struct {
	status  int
	outcome string
	callID  string
	body    string
	err     gust.ErrorBody
}

func mustCall(t *testing.T, s *gateway.Server, path string) answer {
	t.Helper()
	resp, err := http.Get("http://" + s.Addr() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, outcome: resp.Header.Get(gust.HeaderOutcome), callID: resp.Header.Get(gust.HeaderCallID), body: string(b)}
	if a.outcome == "" {
		a.outcome = resp.Trailer.Get(gust.HeaderOutcome)
	}
	if resp.Header.Get("Content-Type") == "application/json" {
		_ = json.Unmarshal(b, &a.err)
	}
	return a
}

// TestDataPlaneContract checks that a call's failure reaches the caller the
// same way whether its worker shares the gateway's process or answers over
// HTTP: one status, one error body with its code, the worker's outcome, no
// internal address, and exactly one metering record for the call.
func TestDataPlaneContract(t *testing.T) {
	dp := mustRunDataPlane(t)
	deploy := `{"service":"contract","image":"img:1","labels":{"gust.timeout":"300ms","com.openfaas.scale.min":"1"}}`
	resp, err := http.Post("http://"+dp.local.Addr()+"/system/functions", "application/json", strings.NewReader(deploy))
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("deploy answered %d", resp.StatusCode)
	}
	for _, tt := range []struct {
		path        string
		wantStatus  int
		wantCode    string // "" for the function's own answer
		wantOutcome string
	}{
		{"/ok", 200, "", gust.OutcomeOK},
		{"/fail", 500, "", gust.OutcomeError},
		{"/slow", 504, gust.ETIMEOUT, gust.OutcomeTimeout},
		{"/crash", 502, gust.EFUNCTION, gust.OutcomeCrashed},
	} {
		t.Run(strings.TrimPrefix(tt.path, "/"), func(t *testing.T) {
			var got [2]answer
			for i, s := range []*gateway.Server{dp.local, dp.remote} {
				a := mustCall(t, s, "/function/contract"+tt.path)
				if a.status != tt.wantStatus || a.outcome != tt.wantOutcome || a.err.Code != tt.wantCode {
					t.Errorf("%s gateway: status %d, outcome %q, code %q (%s); want %d, %q, %q",
						[]string{"local", "remote"}[i], a.status, a.outcome, a.err.Code, a.body, tt.wantStatus, tt.wantOutcome, tt.wantCode)
				}
				if strings.Contains(a.body, "127.0.0.1") {
					t.Errorf("answer names an internal address: %s", a.body)
				}
				if a.callID == "" {
					t.Fatalf("no %s on the answer", gust.HeaderCallID)
				}
				got[i] = a
			}
			if got[0].err != got[1].err {
				t.Errorf("error bodies differ: local %+v, remote %+v", got[0].err, got[1].err)
			}
			// Records: one per call, made by the worker, with the outcome.
			for _, a := range got {
				var recs []gust.CallRecord
				deadline := time.Now().Add(5 * time.Second)
				for {
					recs = dp.meter.recordsOf(a.callID)
					if len(recs) > 0 || time.Now().After(deadline) {
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				if len(recs) != 1 || recs[0].Outcome != tt.wantOutcome || recs[0].Worker != "w1" {
					t.Errorf("records of call %s = %+v, want one of outcome %q made by worker w1", a.callID, recs, tt.wantOutcome)
				}
			}
		})
	}

	// A worker that does not answer: the remote gateway answers 503
	// without the worker's address and records the call itself, once.
	dp.workerSrv.CloseClientConnections()
	dp.workerSrv.Close()
	a := mustCall(t, dp.remote, "/function/contract/ok")
	if a.status != http.StatusServiceUnavailable || a.err.Code != gust.EUNAVAILABLE || strings.Contains(a.body, "127.0.0.1") {
		t.Errorf("worker gone: %d %s, want 503 %s naming no address", a.status, a.body, gust.EUNAVAILABLE)
	}
	if recs := dp.meter.recordsOf(a.callID); len(recs) != 1 || recs[0].Outcome != gust.OutcomeRejected || recs[0].Worker != "" {
		t.Errorf("records of a call no worker saw = %+v, want one rejected record made by the gateway", recs)
	}
}
