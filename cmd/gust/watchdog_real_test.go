package main

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/gustfaas/gust"
)

// The images scripts/watchdog-images builds from checkouts of the real
// OpenFaaS watchdogs (issue 14 point 6). CI cannot fetch them, so the
// tests below skip there; TestWatchdogFixture_Up covers the Gust side.
const (
	classicWatchdogImage = "gust-test/classic-watchdog:local"
	ofWatchdogImage      = "gust-test/of-watchdog:local"
)

// mustLocalImage skips the test, loudly, unless image is in the local
// Docker Engine.
func mustLocalImage(t *testing.T, image string) {
	t.Helper()
	MustDocker(t)
	if err := exec.Command("docker", "image", "inspect", image).Run(); err != nil {
		t.Skipf("SKIPPED, NOT TESTED (issue 14 point 6): image %s is absent (%v). "+
			"Build the real OpenFaaS watchdog images with scripts/watchdog-images "+
			"(CLASSIC_WATCHDOG_SRC and OF_WATCHDOG_SRC name checkouts of github.com/openfaas/classic-watchdog "+
			"and github.com/openfaas/of-watchdog); CI has no network to fetch them", image, err)
	}
}

// shProbe is an fprocess for busybox sh (fprocess is split on spaces, so
// ${IFS} stands for a space): it echoes stdin, then prints the working
// directory, the environment, the process's Uid/Gid lines and TMPOK when
// /tmp is writable.
const shProbe = "sh -c cat;echo;echo${IFS}PWD=$(pwd);env;cat${IFS}/proc/self/status;echo${IFS}x>/tmp/probe&&echo${IFS}TMPOK"

// deployWatchdog deploys image as name with envProcess and env on m, the
// root read-only as OpenFaaS templates deploy.
func deployWatchdog(t *testing.T, m *UpMain, name, image, envProcess string, env map[string]string) string {
	t.Helper()
	spec := map[string]any{"service": name, "image": image, "envProcess": envProcess, "envVars": env, "readOnlyRootFilesystem": true}
	if st, body := deploy(t, m, http.MethodPost, spec); st != http.StatusAccepted {
		t.Fatalf("deploy %s: %d %s, want 202", name, st, body)
	}
	return gw(m) + "/function/" + name
}

// checkShProbe checks shProbe's output for a call with body "hello stdin",
// method, path /some/path, query a=1 and X-Test-Header: yes.
func checkShProbe(t *testing.T, out, method string) {
	t.Helper()
	for _, want := range []string{
		"hello stdin", "PWD=/home/app", "fprocess=" + shProbe, "Http_Method=" + method,
		"Http_Path=/some/path", "Http_Query=a=1", "Http_X_Test_Header=yes", "TMPOK",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output has no %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if (strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Gid:")) && strings.Fields(l)[1] != "1000" {
			t.Errorf("runs as %q, want the image's USER 1000:1000", l)
		}
	}
}

// TestRealClassicWatchdog_Up: the OpenFaaS classic watchdog, built from
// its source by scripts/watchdog-images, on `gust up` with real Docker:
// fprocess from envProcess runs per call with the Http_* environment, in
// the image's user and working directory, with a writable /tmp and a
// read-only root; each verb it serves reaches it (it answers HEAD and
// OPTIONS with its own 405).
func TestRealClassicWatchdog_Up(t *testing.T) {
	mustLocalImage(t, classicWatchdogImage)
	m := MustRunUp(t, "")
	url := deployWatchdog(t, m, "classic", classicWatchdogImage, shProbe, nil)
	st, _, out := call(t, http.MethodPost, url+"/some/path?a=1", "hello stdin", "X-Test-Header", "yes")
	if st != http.StatusOK {
		t.Fatalf("POST: %d %s", st, out)
	}
	t.Logf("classic watchdog, fprocess output:\n%s", probeSummary(out))
	checkShProbe(t, out, http.MethodPost)
	for _, verb := range []string{http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, http.MethodOptions} {
		st, _, out := call(t, verb, url+"/some/path?a=1", "hello stdin", "X-Test-Header", "yes")
		want := http.StatusOK
		if verb == http.MethodHead || verb == http.MethodOptions {
			want = http.StatusMethodNotAllowed // classic-watchdog handler.go makeRequestHandler
		}
		if st != want {
			t.Errorf("%s: %d %s, want %d", verb, st, out, want)
			continue
		}
		t.Logf("%s: %d", verb, st)
		if want == http.StatusOK {
			checkShProbe(t, out, verb)
		}
	}
}

// TestRealOfWatchdog_Up: of-watchdog, built from its source by
// scripts/watchdog-images, on `gust up` with real Docker, in modes http
// (a Go upstream server), streaming, serializing and static: fprocess from
// envProcess, the image's user and working directory, a writable /tmp,
// every verb, and in http mode a 302 from the upstream reaching the
// caller unfollowed.
func TestRealOfWatchdog_Up(t *testing.T) {
	mustLocalImage(t, ofWatchdogImage)
	m := MustRunUp(t, "")
	verbs := []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, http.MethodOptions}

	t.Run("http", func(t *testing.T) {
		// of-watchdog answers /_/health as soon as it wrote its lock
		// file, before the upstream it forked listens: a call at once
		// then gets its 500 (seen here: every call of a run failed).
		// Its /_/ready with ready_path asks the upstream too, so the
		// readiness check is pointed there (label gust.health).
		spec := map[string]any{
			"service": "ofhttp", "image": ofWatchdogImage, "envProcess": "/upstream", "readOnlyRootFilesystem": true,
			"envVars": map[string]string{"mode": "http", "upstream_url": "http://127.0.0.1:8082", "ready_path": "/ready"},
			"labels":  map[string]string{gust.LabelHealth: "/_/ready"},
		}
		if st, body := deploy(t, m, http.MethodPost, spec); st != http.StatusAccepted {
			t.Fatalf("deploy ofhttp: %d %s, want 202", st, body)
		}
		url := gw(m) + "/function/ofhttp"
		for _, verb := range verbs {
			st, h, out := call(t, verb, url+"/some/path?a=1", "hello stdin", "X-Test-Header", "yes")
			if st != http.StatusOK {
				t.Errorf("%s: %d %s, want 200", verb, st, out)
				continue
			}
			if verb == http.MethodHead {
				t.Logf("HEAD: %d Content-Type %q", st, h.Get("Content-Type"))
				continue
			}
			var r struct {
				Method, Path, Query, Body, Dir, TmpError string
				UID, GID                                 int
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Errorf("%s: %q: %v", verb, out, err)
				continue
			}
			t.Logf("%s: %+v", verb, r)
			if r.Method != verb || r.Path != "/some/path" || r.Query != "a=1" || r.Dir != "/home/app" || r.UID != 1000 || r.GID != 1000 || r.TmpError != "" {
				t.Errorf("%s: upstream saw %+v, want method %s, path /some/path, query a=1, dir /home/app, uid/gid 1000, /tmp writable", verb, r, verb)
			}
		}
		resp, err := noRedirect.Get(url + "/redirect")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t.Logf("redirect: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/elsewhere" {
			t.Errorf("redirect: %d Location %q, want 302 Location /elsewhere", resp.StatusCode, resp.Header.Get("Location"))
		}
	})

	t.Run("static", func(t *testing.T) {
		url := deployWatchdog(t, m, "ofstatic", ofWatchdogImage, "", map[string]string{"mode": "static"})
		st, _, out := call(t, http.MethodGet, url+"/index.html", "")
		t.Logf("GET /index.html: %d %q", st, out)
		if st != http.StatusOK || out != "static from of-watchdog\n" {
			t.Errorf("GET /index.html: %d %q, want 200 and the file the image holds", st, out)
		}
	})

	for _, mode := range []string{"streaming", "serializing"} {
		t.Run(mode, func(t *testing.T) {
			url := deployWatchdog(t, m, "of"+mode, ofWatchdogImage, shProbe, map[string]string{"mode": mode})
			for _, verb := range verbs {
				st, _, out := call(t, verb, url+"/some/path?a=1", "hello stdin", "X-Test-Header", "yes")
				if st != http.StatusOK {
					t.Errorf("%s: %d %s, want 200", verb, st, out)
					continue
				}
				if verb == http.MethodHead {
					continue
				}
				if verb == http.MethodPost {
					t.Logf("%s %s, fprocess output:\n%s", mode, verb, probeSummary(out))
				}
				checkShProbe(t, out, verb)
			}
		})
	}
}

// probeSummary is shProbe's output without the /proc/self/status lines
// other than Uid and Gid, for the test log.
func probeSummary(out string) string {
	var b strings.Builder
	status := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Name:") {
			status = true
		}
		if !status || l == "TMPOK" || strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Gid:") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
