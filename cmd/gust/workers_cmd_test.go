package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
)

// TestWorkersCLI: `gust worker drain ID` and `gust worker list` (and
// `gust workers`) reach the gateway's admin routes and print what they
// answer; `gust worker` with flags stays the worker role.
func TestWorkersCLI(t *testing.T) {
	var mu sync.Mutex
	var got []string
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.Method + " " + r.URL.Path {
		case "POST /system/workers/w1/drain":
			w.WriteHeader(http.StatusAccepted)
			_ = json.NewEncoder(w).Encode(gateway.DrainAnswer{ID: "w1", State: gateway.WorkerDraining, Instances: 3})
		case "GET /system/workers":
			_ = json.NewEncoder(w).Encode([]gateway.WorkerStatus{
				{WorkerInfo: gust.WorkerInfo{ID: "w1", Addr: "http://10.0.0.1:8081", MemoryBytes: 2 << 30, Pools: []gust.HeldPool{{Function: "default.f", Instances: 2}}}, State: gateway.WorkerDraining},
			})
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(gw.Close)
	env := []string{"GUST_GATEWAY=" + gw.URL, "GUST_PASSWORD=pw", "HOME=" + t.TempDir()}

	code, out, stderr := gustCLIEnv(t, env, "", "worker", "drain", "w1")
	if code != 0 || !strings.Contains(out, "worker w1 is draining (3 instances)") {
		t.Errorf("gust worker drain w1: %d %q %q", code, out, stderr)
	}
	for _, args := range [][]string{{"worker", "list"}, {"workers"}} {
		code, out, stderr = gustCLIEnv(t, env, "", args...)
		if code != 0 || !strings.Contains(out, "w1") || !strings.Contains(out, "draining") || !strings.Contains(out, "2048Mi") {
			t.Errorf("gust %v: %d %q %q", args, code, out, stderr)
		}
	}
	code, _, stderr = gustCLIEnv(t, env, "", "workers", "drain")
	if code != 2 {
		t.Errorf("gust workers drain without an id: exit %d, want 2 (usage): %s", code, stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	want := "POST /system/workers/w1/drain,GET /system/workers,GET /system/workers"
	if strings.Join(got, ",") != want {
		t.Errorf("gateway got %v, want %s", got, want)
	}
}
