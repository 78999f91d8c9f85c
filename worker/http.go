package worker

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gustfaas/gust"
)

// ListenerConfig guards the worker's HTTP listener, which only gateways
// may call.
type ListenerConfig struct {
	// Token is the secret gateways send in gust.HeaderWorkerToken; a call
	// without it is refused (401) before anything else is looked at.
	Token string
	// MaxBodyBytes bounds a call's body (413 past it); 0 takes
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

// DefaultMaxBodyBytes is the largest call body a worker takes by default:
// the gateway's default limit (gateway.DefaultConfig), which it enforces
// before the worker sees a call.
const DefaultMaxBodyBytes = 20 << 20

// Limits of what a gateway sends with a call.
const (
	maxCallID  = 512   // bytes of X-Gust-Call-Id
	maxAttempt = 10000 // X-Gust-Attempt
)

// Handler serves calls from gateways on other hosts, and /healthz. Its
// answers follow the data plane's contract: the function's answer as it
// is, or an error in gust.ErrorBody's shape with the status of its code,
// and the call's outcome in gust.HeaderOutcome either way. Every call
// must carry cfg.Token (compared in constant time), a valid call id and
// a known trigger; the token is removed before the function sees the
// call.
func (w *Worker) Handler(cfg ListenerConfig) http.Handler {
	if cfg.Token == "" {
		panic("worker: a listener without a token would take calls from anyone")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	want := sha256.Sum256([]byte(cfg.Token))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, r *http.Request) {
		rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc(gust.InvokePrefix, func(rw http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get(gust.HeaderWorkerToken)))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			writeError(rw, gust.Errorf(gust.EUNAUTHORIZED, "this worker takes calls from gateways only: missing or wrong %s", gust.HeaderWorkerToken))
			return
		}
		r.Header.Del(gust.HeaderWorkerToken)
		if err := checkCall(r.Header); err != nil {
			writeError(rw, err)
			return
		}
		if r.ContentLength > cfg.MaxBodyBytes {
			writeError(rw, gust.Errorf(gust.ETOOLARGE, "request body is %d bytes, over the worker's limit of %d", r.ContentLength, cfg.MaxBodyBytes))
			return
		}
		r.Body = http.MaxBytesReader(rw, r.Body, cfg.MaxBodyBytes)
		w.serveInvoke(rw, r)
	})
	return mux
}

// checkCall validates what the gateway says of a call: Gust's call id,
// which keys its metering record, the trigger and the attempt.
func checkCall(h http.Header) error {
	if id := h.Get(gust.HeaderGustCallID); !ValidCallID(id) {
		return gust.Invalidf("headers."+gust.HeaderGustCallID, "%s is not a call id: 1 to %d printable characters, no spaces", gust.HeaderGustCallID, maxCallID)
	}
	switch h.Get(gust.HeaderTrigger) {
	case "", gust.TriggerHTTP, gust.TriggerAsync, gust.TriggerEvent:
	default:
		return gust.Invalidf("headers."+gust.HeaderTrigger, "%s must be %s, %s or %s", gust.HeaderTrigger, gust.TriggerHTTP, gust.TriggerAsync, gust.TriggerEvent)
	}
	if a := h.Get(gust.HeaderAttempt); a != "" {
		if n, err := strconv.Atoi(a); err != nil || n < 1 || n > maxAttempt || a[0] == '0' {
			return gust.Invalidf("headers."+gust.HeaderAttempt, "%s must be a number from 1 to %d", gust.HeaderAttempt, maxAttempt)
		}
	}
	return nil
}

// ValidCallID reports whether id can be Gust's id of a call: what the
// gateway makes (hex for calls, "ev-" and the message's stream sequence
// or time and subject for events): bounded, printable, without spaces.
func ValidCallID(id string) bool {
	if id == "" || len(id) > maxCallID || !utf8.ValidString(id) {
		return false
	}
	return !strings.ContainsFunc(id, func(r rune) bool {
		return unicode.IsSpace(r) || !unicode.IsPrint(r)
	})
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
			err := gust.Errorf(gust.ENOTFOUND, "function %s not found", key)
			refuse(rw.Header(), r.Header.Get(gust.HeaderHandoff) == gust.HandoffRetry, err)
			writeError(rw, err)
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
