package gateway_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
)

// TestOpenFaaSShapes: what OpenFaaS clients read unconditionally is always
// there: labels and annotations as objects (empty, never null or missing),
// the label faas_function, envProcess, namespace, replicas,
// availableReplicas, invocationCount and createdAt; /system/info names the
// provider and a version with a sha.
func TestOpenFaaSShapes(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	MustDeploy(t, e, `{"service":"plain","image":"img:plain","network":"func_functions","constraints":["node.platform.os == linux"]}`)

	for _, path := range []string{"/system/function/plain", "/system/functions"} {
		st, _, body := MustDo(t, http.MethodGet, e.url(path), "")
		if st != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, st, body)
		}
		var items []map[string]json.RawMessage
		if path == "/system/functions" {
			items = MustDecode[[]map[string]json.RawMessage](t, body)
		} else {
			items = []map[string]json.RawMessage{MustDecode[map[string]json.RawMessage](t, body)}
		}
		if len(items) != 1 {
			t.Fatalf("GET %s: %d items, want 1", path, len(items))
		}
		it := items[0]
		for _, k := range []string{"labels", "annotations", "envProcess", "namespace", "replicas", "availableReplicas", "invocationCount", "createdAt"} {
			if _, ok := it[k]; !ok {
				t.Errorf("GET %s: no %q in %s", path, k, body)
			}
		}
		var labels, annotations map[string]string
		if err := json.Unmarshal(it["labels"], &labels); err != nil || labels == nil {
			t.Errorf("GET %s: labels %s, want an object", path, it["labels"])
		}
		if err := json.Unmarshal(it["annotations"], &annotations); err != nil || annotations == nil {
			t.Errorf("GET %s: annotations %s, want an object", path, it["annotations"])
		}
		if labels["faas_function"] != "plain" {
			t.Errorf("GET %s: labels %v, want faas_function=plain", path, labels)
		}
	}

	st, _, body := MustDo(t, http.MethodGet, e.url("/system/info"), "")
	if st != http.StatusOK {
		t.Fatalf("GET /system/info: %d %s", st, body)
	}
	info := MustDecode[struct {
		Provider struct {
			Provider      string `json:"provider"`
			Orchestration string `json:"orchestration"`
			Version       struct {
				Release string `json:"release"`
				SHA     string `json:"sha"`
			} `json:"version"`
		} `json:"provider"`
	}](t, body)
	if p := info.Provider; p.Provider != "gust" || p.Orchestration != "docker" || p.Version.Release == "" || p.Version.SHA == "" {
		t.Errorf("GET /system/info: provider %+v, want gust, docker, a release and a sha", p)
	}
}

// TestInvoke_StartTime: every sync answer carries X-Start-Time, when the
// gateway received the call in Unix nanoseconds, as OpenFaaS's gateway
// sets it: a function's answer and the gateway's own (404).
func TestInvoke_StartTime(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	MustDeploy(t, e, `{"service":"hello","image":"img:hello"}`)
	for _, tt := range []struct {
		path string
		want int
	}{{"/function/hello", http.StatusOK}, {"/function/nope", http.StatusNotFound}} {
		before := time.Now()
		st, h, body := MustDo(t, http.MethodGet, e.url(tt.path), "")
		after := time.Now()
		if st != tt.want {
			t.Fatalf("GET %s: %d %s, want %d", tt.path, st, body, tt.want)
		}
		ns, err := strconv.ParseInt(h.Get(gust.HeaderStartTime), 10, 64)
		if err != nil {
			t.Fatalf("GET %s: X-Start-Time %q: %v", tt.path, h.Get(gust.HeaderStartTime), err)
		}
		if at := time.Unix(0, ns); at.Before(before) || at.After(after) {
			t.Errorf("GET %s: X-Start-Time %v, want between %v and %v", tt.path, at, before, after)
		}
	}
}

// TestDeploy_MemoryBelowDocker: a deploy with 5Mi, as OpenFaaS functions
// come, is accepted with 6Mi (Docker's minimum) and says so in
// X-Gust-Warning.
func TestDeploy_MemoryBelowDocker(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	st, h, body := MustDo(t, http.MethodPost, e.url("/system/functions"), `{"service":"tiny","image":"img:tiny","limits":{"memory":"5Mi"}}`)
	if st != http.StatusAccepted && st != http.StatusOK {
		t.Fatalf("deploy with 5Mi: %d %s, want it accepted", st, body)
	}
	if h.Get(gateway.HeaderWarning) == "" {
		t.Error("no X-Gust-Warning on a deploy whose memory was raised")
	}
	fn := MustGetFunction(t, e, gust.FunctionKey(gust.DefaultNamespace, "tiny"))
	if c := fn.Config(); c.MemoryBytes != gust.DockerMinMemory {
		t.Errorf("memory %d bytes, want %d", c.MemoryBytes, gust.DockerMinMemory)
	}
}
