package worker

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/gustfaas/gust"
)

var jsonMarshal = json.Marshal

// Handler serves calls from gateways on other hosts, and /healthz.
func (w *Worker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, r *http.Request) {
		rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc(gust.InvokePrefix, w.serveInvoke)
	return mux
}

func (w *Worker) serveInvoke(rw http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.EscapedPath(), gust.InvokePrefix)
	ns, rest, _ := strings.Cut(rest, "/")
	name, sub, _ := strings.Cut(rest, "/")
	key := gust.FunctionKey(ns, name)
	w.mu.Lock()
	fn := w.functions[key]
	w.mu.Unlock()
	if fn == nil || r.Header.Get(gust.HeaderFunctionVersion) > "" && r.Header.Get(gust.HeaderFunctionVersion) != uitoa(fn.Version) {
		f, _, err := w.state.Functions.Get(r.Context(), key)
		if err != nil {
			writeError(rw, http.StatusNotFound, "function "+key+" not found")
			return
		}
		fn = &f
	}
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.RawPath = "/" + sub
	u.Path = u.RawPath
	if p, err := unescapePath(u.RawPath); err == nil {
		u.Path = p
	}
	r2.URL = &u
	if err := w.Invoke(rw, r2, fn); err != nil {
		status := http.StatusServiceUnavailable
		if gust.ErrorCode(err) == gust.ENOTFOUND {
			status = http.StatusNotFound
		}
		writeError(rw, status, gust.ErrorMessage(err))
	}
}
