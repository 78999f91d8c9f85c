// Package ui is the gateway's dashboard: an HTML page, its style sheet and
// its script modules, embedded in the binary and served under /ui/, plus
// the two JSON answers the page needs that the management API does not
// give (the pools of instances per worker, and the last hour's calls by
// minute). Everything else the page reads from the API itself, with the
// credentials the browser already sends, so the page can do nothing its
// user could not do with curl.
//
// There is no build step: the files in static/ are what the browser runs
// (plain ES modules, charts drawn as SVG by chart.js, a few hundred lines,
// smaller than any charting library).
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Prefix is where the gateway mounts the dashboard.
const Prefix = "/ui/"

// CSP is the Content-Security-Policy of every dashboard answer: the page
// loads only its own scripts and styles (no inline script, no eval, no
// other origin), talks only to its own gateway, and may not be framed.
// The charts are built with DOM calls and SVG attributes, never inline
// styles, so style-src needs no 'unsafe-inline'.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// contentTypes are the types of the files the dashboard serves, set here
// rather than read from the host's mime.types, which may lack or differ.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".ico":  "image/x-icon",
}

// asset is one embedded file, read once.
type asset struct {
	name, ctype, etag string
	data              []byte
}

// Static serves the embedded files under Prefix: Prefix itself is
// index.html, a path that names no file is a 404 (no listing, no
// fallback to the page), and every answer carries CSP.
func Static() http.Handler {
	files := map[string]*asset{}
	root, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed directive guarantees the directory
	}
	_ = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		files[p] = &asset{name: p, ctype: contentTypes[path.Ext(p)], etag: `"` + hex.EncodeToString(sum[:8]) + `"`, data: data}
		return nil
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		SecurityHeaders(w.Header())
		name := strings.TrimPrefix(r.URL.Path, Prefix)
		if name == "" {
			name = "index.html"
		}
		a := files[name]
		if a == nil || a.ctype == "" {
			http.Error(w, "404 page not found", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", a.ctype)
		// Revalidated on every load (the ETag makes that a 304), so a
		// new gateway's page is never mixed with an old cached script.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("ETag", a.etag)
		http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.data))
	})
}

// SecurityHeaders sets the headers of every dashboard answer.
func SecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// Redirect sends /ui to /ui/.
func Redirect() http.Handler {
	return http.RedirectHandler(Prefix, http.StatusMovedPermanently)
}
