package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/docker"
	"go.uber.org/zap"
)

// The watchdog fixture's images. fnbuild makes every function image alike
// (no USER, no WORKDIR), so these are built here with a Dockerfile of
// their own: one names a user and a working directory as OpenFaaS
// templates do ("USER app", "WORKDIR /home/app"; numeric here, as FROM
// scratch has no /etc/passwd), the other names neither.
const (
	watchdogImage       = "gust-test/watchdog:e2e"
	watchdogNoUserImage = "gust-test/watchdog-nouser:e2e"
	watchdogUser        = "1000:1000"
	watchdogDir         = "/home/app"
)

var (
	watchdogOnce sync.Once
	watchdogErr  error
)

// mustWatchdogImages builds the fixture testdata/functions/watchdog into
// watchdogImage and watchdogNoUserImage (once per test binary).
func mustWatchdogImages(tb testing.TB) {
	tb.Helper()
	MustImages(tb)
	watchdogOnce.Do(func() {
		tmp, err := os.MkdirTemp("", "gust-watchdog-")
		if err != nil {
			watchdogErr = err
			return
		}
		defer os.RemoveAll(tmp)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		bin := filepath.Join(tmp, "fn")
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
		cmd.Dir = "../../testdata/functions/watchdog"
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			watchdogErr = &buildError{err, out}
			return
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			watchdogErr = err
			return
		}
		rt, err := docker.New(docker.Config{}, zap.NewNop())
		if err != nil {
			watchdogErr = err
			return
		}
		defer rt.Close()
		base := "FROM scratch\nCOPY fn /fn\nENV PORT=8080\nEXPOSE 8080\nLABEL " + gust.LabelManaged + "=\"true\"\n"
		for tag, df := range map[string]string{
			watchdogImage:       base + "WORKDIR " + watchdogDir + "\nUSER " + watchdogUser + "\nENTRYPOINT [\"/fn\"]\n",
			watchdogNoUserImage: base + "ENTRYPOINT [\"/fn\"]\n",
		} {
			bc, err := tarFiles(map[string][]byte{"Dockerfile": []byte(df), "fn": data})
			if err != nil {
				watchdogErr = err
				return
			}
			if err := rt.BuildImage(ctx, bc, tag, io.Discard); err != nil {
				watchdogErr = err
				return
			}
		}
	})
	if watchdogErr != nil {
		tb.Fatalf("build the watchdog fixture images: %v", watchdogErr)
	}
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + string(e.out) }

// tarFiles is a build context holding files, all mode 0755.
func tarFiles(files map[string][]byte) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, data := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	return &buf, tw.Close()
}

// watchdogReport is what the fixture's "/fn report" fprocess prints.
type watchdogReport struct {
	UID, GID    int
	Dir         string
	Stdin       string
	Env         map[string]string
	TmpWritable bool
	TmpError    string
}

// noRedirect is a client that shows a redirect to its caller instead of
// following it.
var noRedirect = &http.Client{
	Timeout:       time.Minute,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// TestWatchdogFixture_Up: on `gust up` with real Docker, a function built
// like an OpenFaaS classic-watchdog image keeps working (issue 14 point
// 6, the Gust side that CI checks): fprocess comes from the deploy
// request's envProcess; the image's USER and WORKDIR are kept, and an
// image without USER runs as 65534; /tmp is writable (with
// readOnlyRootFilesystem true, as OpenFaaS templates deploy them); every
// verb reaches the function with Http_Method, Http_Path, Http_Query and
// Http_<Header> set; a 302 reaches the caller unfollowed with its
// Location.
func TestWatchdogFixture_Up(t *testing.T) {
	mustWatchdogImages(t)
	m := MustRunUp(t, "")
	for _, tc := range []struct {
		name, image, user, dir string
		uid, gid               int
	}{
		{"wdfix", watchdogImage, watchdogUser, watchdogDir, 1000, 1000},
		{"wdfix-nouser", watchdogNoUserImage, "", "/", 65534, 65534},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := map[string]any{
				"service": tc.name, "image": tc.image, "envProcess": "/fn report",
				"readOnlyRootFilesystem": true,
			}
			if st, body := deploy(t, m, http.MethodPost, spec); st != http.StatusAccepted {
				t.Fatalf("deploy: %d %s, want 202", st, body)
			}
			url := gw(m) + "/function/" + tc.name
			st, _, out := call(t, http.MethodPost, url+"/some/path?a=1&b=two", "hello stdin", "X-Test-Header", "yes")
			if st != http.StatusOK {
				t.Fatalf("POST: %d %s", st, out)
			}
			var rep watchdogReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("report %q: %v", out, err)
			}
			t.Logf("fprocess report: %+v", rep)
			if rep.Env["fprocess"] != "/fn report" {
				t.Errorf("fprocess %q, want the deploy's envProcess %q", rep.Env["fprocess"], "/fn report")
			}
			if rep.UID != tc.uid || rep.GID != tc.gid {
				t.Errorf("runs as %d:%d, want %d:%d (image USER %q)", rep.UID, rep.GID, tc.uid, tc.gid, tc.user)
			}
			if rep.Dir != tc.dir {
				t.Errorf("working directory %q, want the image's %q", rep.Dir, tc.dir)
			}
			if !rep.TmpWritable {
				t.Errorf("/tmp not writable with readOnlyRootFilesystem: %s", rep.TmpError)
			}
			if rep.Stdin != "hello stdin" {
				t.Errorf("stdin %q, want the request body", rep.Stdin)
			}
			for k, want := range map[string]string{
				"Http_Method": "POST", "Http_Path": "/some/path", "Http_Query": "a=1&b=two",
				"Http_X_Test_Header": "yes", "Http_Content_Length": "11",
			} {
				if got := rep.Env[k]; got != want {
					t.Errorf("%s=%q, want %q (all: %v)", k, got, want, rep.Env)
				}
			}

			for _, verb := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, http.MethodOptions} {
				body := ""
				if verb == http.MethodPost || verb == http.MethodPut || verb == http.MethodPatch {
					body = "x"
				}
				st, h, out := call(t, verb, url+"/verb", body)
				if st != http.StatusOK {
					t.Errorf("%s: %d %s, want 200", verb, st, out)
					continue
				}
				if verb == http.MethodHead {
					// No body to read: the fixture sets its JSON content
					// type only after fprocess ran.
					if !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
						t.Errorf("HEAD: Content-Type %q, want the fixture's application/json", h.Get("Content-Type"))
					}
					continue
				}
				var r watchdogReport
				if err := json.Unmarshal([]byte(out), &r); err != nil || r.Env["Http_Method"] != verb {
					t.Errorf("%s: Http_Method %q (%v, %q), want %s", verb, r.Env["Http_Method"], err, out, verb)
				}
			}

			resp, err := noRedirect.Get(url + "/redirect")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/elsewhere" {
				t.Errorf("redirect: %d Location %q, want 302 Location /elsewhere", resp.StatusCode, resp.Header.Get("Location"))
			}
		})
	}
}
