package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

// TestOpenFaaSShapes_Up: on `gust up` with real Docker, what OpenFaaS
// clients read without checking is there (issue 14 points 1-2): a
// function's status carries labels and annotations as objects (with
// faas_function), envProcess, replicas and availableReplicas; a deploy
// with OpenFaaS fields that mean nothing on Docker is accepted; every
// sync answer carries X-Start-Time; /system/info names a sha.
func TestOpenFaaSShapes_Up(t *testing.T) {
	MustImages(t)
	m := MustRunUp(t, "")
	body := `{"service":"ofshape","image":"` + imageTag("hello") + `","network":"func_functions","constraints":["node.platform.os == linux"]}`
	st, _, out := call(t, http.MethodPost, gw(m)+"/system/functions", body, "Content-Type", "application/json")
	if st != http.StatusAccepted {
		t.Fatalf("deploy with network and constraints: %d %s, want 202", st, out)
	}
	before := time.Now()
	st, h, out := call(t, http.MethodGet, gw(m)+"/function/ofshape", "")
	after := time.Now()
	if st != http.StatusOK {
		t.Fatalf("call: %d %s", st, out)
	}
	ns, err := strconv.ParseInt(h.Get(gust.HeaderStartTime), 10, 64)
	if at := time.Unix(0, ns); err != nil || at.Before(before) || at.After(after) {
		t.Errorf("X-Start-Time %q, want a time in Unix nanoseconds between the call's start and end", h.Get(gust.HeaderStartTime))
	}
	if h.Get(gust.HeaderCallID) == "" || h.Get(gust.HeaderDuration) == "" {
		t.Errorf("answer headers %v, want X-Call-Id and X-Duration-Seconds beside X-Start-Time", h)
	}

	st, _, out = call(t, http.MethodGet, gw(m)+"/system/function/ofshape", "")
	if st != http.StatusOK {
		t.Fatalf("status: %d %s", st, out)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"labels", "annotations", "envProcess", "namespace", "replicas", "availableReplicas", "invocationCount", "createdAt"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status has no %q: %s", k, out)
		}
	}
	var fs struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal([]byte(out), &fs); err != nil || fs.Annotations == nil || fs.Labels["faas_function"] != "ofshape" {
		t.Errorf("labels %v annotations %v (%v), want objects with faas_function=ofshape", fs.Labels, fs.Annotations, err)
	}

	st, _, out = call(t, http.MethodGet, gw(m)+"/system/info", "")
	var info struct {
		Provider struct {
			Provider, Orchestration string
			Version                 struct{ SHA string }
		}
	}
	if err := json.Unmarshal([]byte(out), &info); st != http.StatusOK || err != nil || info.Provider.Provider != "gust" || info.Provider.Orchestration != "docker" || info.Provider.Version.SHA == "" {
		t.Errorf("/system/info: %d %s, want provider gust, orchestration docker and a sha", st, out)
	}
}
