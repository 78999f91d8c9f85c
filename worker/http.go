package worker

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gustfaas/gust"
)

// Handler serves calls from gateways on other hosts, and /healthz. Its
// answers follow the data plane's contract: the function's answer as it
// is, or an error in gust.ErrorBody's shape with the status of its code,
// and the call's outcome in gust.HeaderOutcome either way.
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
	if v := r.Header.Get(gust.HeaderFunctionVersion); fn == nil || v != "" && v != strconv.FormatUint(fn.Version, 10) {
		f, _, err := w.state.Functions.Get(r.Context(), key)
		if err != nil {
			writeError(rw, gust.Errorf(gust.ENOTFOUND, "function %s not found", key))
			return
		}
		fn = &f
	}
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.RawPath = "/" + sub
	u.Path = u.RawPath
	if p, err := url.PathUnescape(u.RawPath); err == nil {
		u.Path = p
	}
	r2.URL = &u
	if err := w.Invoke(rw, r2, fn); err != nil {
		writeError(rw, err)
	}
}
