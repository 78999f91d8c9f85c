package ui_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/gustfaas/gust/gateway/ui"
)

func get(t *testing.T, h http.Handler, path string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

// TestStatic checks every embedded file's type, the index at the prefix,
// the 404 of a name that is no file, revalidation, and the security
// headers on all of them.
func TestStatic(t *testing.T) {
	h := ui.Static()
	cases := []struct{ path, ctype, contains string }{
		{"/ui/", "text/html; charset=utf-8", "<html"},
		{"/ui/index.html", "text/html; charset=utf-8", "<html"},
		{"/ui/app.js", "text/javascript; charset=utf-8", "import"},
		{"/ui/chart.js", "text/javascript; charset=utf-8", "export function lineChart"},
		{"/ui/style.css", "text/css; charset=utf-8", ":root"},
	}
	for _, c := range cases {
		resp := get(t, h, c.path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != c.ctype || !strings.Contains(string(body), c.contains) {
			t.Errorf("GET %s: %d %q, want 200 %q with %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), c.ctype, c.contains)
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != ui.CSP {
			t.Errorf("GET %s: CSP %q", c.path, got)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", c.path)
		}
		etag := resp.Header.Get("ETag")
		if r2 := get(t, h, c.path, "If-None-Match", etag); etag == "" || r2.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match %q: %d, want 304", c.path, etag, r2.StatusCode)
		}
	}
	for _, p := range []string{"/ui/nope.js", "/ui/static/app.js", "/ui/../ui.go", "/ui/api/", "/ui/app.js/x"} {
		resp := get(t, h, p)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
		if resp.Header.Get("Content-Security-Policy") != ui.CSP {
			t.Errorf("GET %s: 404 without the CSP", p)
		}
	}
}

// TestOffline checks that the page names nothing outside its gateway (no
// CDN, no web font) and no inline script or style, which the CSP would
// refuse: every URL in the files is relative or an API path.
func TestOffline(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?https?:|<style|\sstyle=|<script>`)
	err := fs.WalkDir(os.DirFS("static"), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile("static/" + p)
		if err != nil {
			return err
		}
		if m := external.Find(b); m != nil {
			t.Errorf("%s has %q: the page must load nothing from elsewhere nor inline", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
