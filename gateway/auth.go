package gateway

// Access control of the gateway. Every route is registered with one rule
// (routes, in server.go) and guard is the one place the rule is applied:
// no handler checks credentials itself, and a route without a rule cannot
// be registered. Callers are the admin (HTTP Basic, as faas-cli login
// sends it), a namespace's key ("Authorization: Bearer gk_..."), or
// anonymous. With no admin password configured the gateway authenticates
// nobody and lets every caller act as admin, as before access control.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// AdminUser is the user name of the admin's HTTP Basic credentials.
const AdminUser = "admin"

// Caller is who made a request, as the gateway authenticated it. The zero
// Caller is anonymous.
type Caller struct {
	// Admin acts everywhere. On a gateway without an admin password every
	// caller is admin.
	Admin bool
	// KeyID is the id of the namespace key that authenticated the
	// request; Namespace is that key's namespace.
	KeyID     string
	Namespace string
}

// Anonymous reports whether the caller sent no valid credentials.
func (c Caller) Anonymous() bool { return !c.Admin && c.KeyID == "" }

// MayActIn reports whether the caller may act in namespace ns.
func (c Caller) MayActIn(ns string) bool {
	return c.Admin || c.KeyID != "" && c.Namespace == ns
}

// String names the caller for logs: "admin", "key ID" or "anonymous";
// never a credential.
func (c Caller) String() string {
	switch {
	case c.Admin:
		return "admin"
	case c.KeyID != "":
		return "key " + c.KeyID
	}
	return "anonymous"
}

type callerKey struct{}

// CallerFrom returns the caller the gateway authenticated for a request's
// context; anonymous when there is none.
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// access says who may use a route.
type access int

const (
	// accessUnset is the zero rule: Handler refuses to register it.
	accessUnset access = iota
	// accessPublic needs no credentials (/healthz).
	accessPublic
	// accessAdmin is for the admin only.
	accessAdmin
	// accessCaller is for any authenticated caller, admin or key.
	accessCaller
	// accessNamespaced is for the admin, and for a key acting in its own
	// namespace (found by the rule's source).
	accessNamespaced
	// accessCall is a function call: anyone may call a public function;
	// a private one (label gust.private=true) only the admin or a key of
	// its namespace.
	accessCall
)

var accessNames = [...]string{"unset", "public", "admin", "caller", "namespaced", "call"}

func (a access) String() string { return accessNames[a] }

// nsSource is where a namespaced route finds the namespace it acts in.
// Each matches what its handlers read, defaults included.
type nsSource int

const (
	nsNone nsSource = iota
	// nsQuery is the namespace query parameter. Absent, it is a listing
	// (or the handler's default namespace): a key's calls get its own
	// namespace filled in.
	nsQuery
	// nsBody is the JSON body's "namespace"; absent, openfaas-fn.
	nsBody
	// nsBodyOrQuery is the body's "namespace", else as nsQuery.
	nsBodyOrQuery
	// nsPathName is the route's {name}: the namespace itself.
	nsPathName
	// nsDeadLetter is the namespace of the dead letter {callId}.
	nsDeadLetter
	// nsInvocation is the namespace of the call {callId}.
	nsInvocation
)

var nsSourceNames = [...]string{"", "query", "body", "body-or-query", "path", "dead-letter", "invocation"}

func (n nsSource) String() string { return nsSourceNames[n] }

// rule is the access rule of one route.
type rule struct {
	access access
	ns     nsSource
}

var (
	rulePublic = rule{access: accessPublic}
	ruleAdmin  = rule{access: accessAdmin}
	ruleCaller = rule{access: accessCaller}
	ruleCall   = rule{access: accessCall}
)

// ruleNamespaced is the rule of a route that acts in the namespace src
// names.
func ruleNamespaced(src nsSource) rule { return rule{access: accessNamespaced, ns: src} }

// endpoint is one row of the gateway's route table: Handler registers
// handler for method and pattern ("" method: any) behind guard.
type endpoint struct {
	method, pattern string
	rule            rule
	handler         http.Handler
}

// authOn reports whether the gateway authenticates its callers.
func (s *Server) authOn() bool { return s.cfg.AdminPassword != "" }

// errUnauthorized answers a caller without valid credentials; guard adds
// the Basic challenge.
var errUnauthorized = gust.Errorf(gust.EUNAUTHORIZED, "credentials required: HTTP Basic as admin, or a namespace key as a Bearer token")

// authenticate returns the caller of r. bad reports credentials that did
// not authenticate (a wrong password, an unknown or revoked key, a
// scheme Gust does not speak); the caller is anonymous then. An error is
// a failed look-up of a key, not a refusal.
func (s *Server) authenticate(r *http.Request) (c Caller, bad bool, err error) {
	if !s.authOn() {
		return Caller{Admin: true}, false, nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return Caller{}, false, nil
	}
	scheme, rest, _ := strings.Cut(h, " ")
	switch {
	case strings.EqualFold(scheme, "Basic"):
		user, pass, ok := r.BasicAuth()
		if ok && user == AdminUser && s.adminPassword(pass) {
			return Caller{Admin: true}, false, nil
		}
		return Caller{}, true, nil
	case strings.EqualFold(scheme, "Bearer"):
		token := strings.TrimSpace(rest)
		if token == "" {
			// OpenFaaS clients send an empty Bearer without a token.
			return Caller{}, false, nil
		}
		key, ok, err := s.keyOfToken(r.Context(), token)
		if err != nil || !ok {
			return Caller{}, true, err
		}
		return Caller{KeyID: key.ID, Namespace: key.Namespace}, false, nil
	}
	return Caller{}, true, nil
}

// adminPassword compares pass with the admin password in constant time
// (of their SHA-256 sums, so their lengths do not show either).
func (s *Server) adminPassword(pass string) bool {
	got := sha256.Sum256([]byte(pass))
	want := sha256.Sum256([]byte(s.cfg.AdminPassword))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// keyOfToken finds the key a token names and checks the token against
// its hash in constant time. A token naming no stored key (never made,
// or revoked) is not ok.
func (s *Server) keyOfToken(ctx context.Context, token string) (gust.APIKey, bool, error) {
	id := gust.KeyIDOfToken(token)
	if id == "" || s.tenancy == nil || s.tenancy.Keys == nil {
		return gust.APIKey{}, false, nil
	}
	key, _, err := s.tenancy.Keys.Get(ctx, id)
	if errors.Is(err, gust.ErrNotFound) {
		return gust.APIKey{}, false, nil
	}
	if err != nil {
		return gust.APIKey{}, false, fmt.Errorf("look up key %s: %w", id, err)
	}
	sum := sha256.Sum256([]byte(token))
	got := hex.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(got), []byte(strings.ToLower(key.Hash))) != 1 {
		return gust.APIKey{}, false, nil
	}
	return key, true, nil
}

// stateChanging reports whether method changes state.
func stateChanging(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch:
		return true
	}
	return false
}

// crossSite reports a request a browser sent from another site's page:
// its Origin names another host than the one it was sent to, or the
// browser says so (Sec-Fetch-Site). Such a page must not act with the
// Basic credentials the browser saved for the gateway.
func crossSite(r *http.Request) bool {
	if strings.EqualFold(r.Header.Get("Sec-Fetch-Site"), "cross-site") {
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return true // "null" (a sandboxed page, a file) or garbage
	}
	return !strings.EqualFold(u.Host, r.Host)
}

// guard wraps a route's handler in its rule: the one place where
// credentials are checked, cross-site requests refused and management
// calls audited.
func (s *Server) guard(rt endpoint) http.Handler {
	switch rt.rule.access {
	case accessPublic:
		return rt.handler
	case accessCall:
		return s.guardCall(rt)
	case accessNamespaced:
		if rt.rule.ns == nsNone {
			panic(fmt.Sprintf("gateway: namespaced route %s %s says not where its namespace is", rt.method, rt.pattern))
		}
	case accessAdmin, accessCaller:
	default:
		panic(fmt.Sprintf("gateway: route %s %s has no access rule", rt.method, rt.pattern))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ns string
		var c Caller
		if stateChanging(r.Method) {
			aw := &statusWriter{ResponseWriter: w}
			w = aw
			defer func() { s.auditCall(r, rt.pattern, c, ns, aw.status) }()
		}
		var err error
		c, ns, r, err = s.admit(r, rt)
		if err != nil {
			s.refuse(w, r, err)
			return
		}
		rt.handler.ServeHTTP(w, r)
	})
}

// admit applies rt's rule to r: it returns the caller, the namespace the
// call acts in (when known) and the request to serve, which carries the
// caller in its context, a body that is still readable and, for a key's
// listing, its namespace as the query parameter.
func (s *Server) admit(r *http.Request, rt endpoint) (Caller, string, *http.Request, error) {
	c, bad, err := s.authenticate(r)
	if err != nil {
		return c, "", r, err
	}
	// Refused whoever it is (authenticated first only so that the audit
	// says whose browser it was).
	if stateChanging(r.Method) && crossSite(r) {
		return c, "", r, gust.Errorf(gust.EFORBIDDEN, "cross-site request refused: Origin %q is not this gateway (%s)", r.Header.Get("Origin"), r.Host)
	}
	if bad || c.Anonymous() {
		return c, "", r, errUnauthorized
	}
	r = r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
	if rt.rule.access == accessAdmin && !c.Admin {
		return c, "", r, gust.Errorf(gust.EFORBIDDEN, "%s %s is for the admin only", r.Method, rt.pattern)
	}
	if rt.rule.access != accessNamespaced {
		return c, "", r, nil
	}
	// The admin's namespace is found for the audit only: of state-changing
	// calls.
	if c.Admin && !stateChanging(r.Method) {
		return c, "", r, nil
	}
	ns, r, err := s.actingNamespace(r, rt.rule.ns, c)
	if err != nil {
		return c, ns, r, err
	}
	if ns != "" && !c.MayActIn(ns) {
		return c, ns, r, gust.Errorf(gust.EFORBIDDEN, "key %s of namespace %s may not act in namespace %s", c.KeyID, c.Namespace, ns)
	}
	return c, ns, r, nil
}

// namespaceOf returns the namespace r acts in, as src finds it, and the
// request to serve. "" is a namespace not known: an admin's listing of
// all, or a record that does not exist (its handler answers 404).
func (s *Server) actingNamespace(r *http.Request, src nsSource, c Caller) (string, *http.Request, error) {
	switch src {
	case nsQuery:
		return s.queryNamespace(r, c)
	case nsBody, nsBodyOrQuery:
		ns, r, err := s.bodyNamespace(r, c)
		if err != nil || ns != "" {
			return ns, r, err
		}
		if src == nsBody {
			return gust.DefaultNamespace, r, nil
		}
		ns, r, err = s.queryNamespace(r, c)
		if ns == "" && err == nil {
			ns = gust.DefaultNamespace // the handlers' default
		}
		return ns, r, err
	case nsPathName:
		return chi.URLParam(r, "name"), r, nil
	case nsDeadLetter:
		if s.async == nil {
			return "", r, nil
		}
		dl, err := s.async.DeadLetters.Get(r.Context(), chi.URLParam(r, "callId"))
		if errors.Is(err, gust.ErrNotFound) {
			return "", r, nil
		}
		return dl.Request.Namespace, r, err
	case nsInvocation:
		return s.invocationNamespace(r)
	}
	return "", r, fmt.Errorf("route %s has no namespace source", r.URL.Path)
}

// queryNamespace returns the namespace query parameter. A key that gives
// none gets its own: its listings are filtered to its namespace.
func (s *Server) queryNamespace(r *http.Request, c Caller) (string, *http.Request, error) {
	q := r.URL.Query()
	if ns := q.Get("namespace"); ns != "" {
		return ns, r, nil
	}
	if c.Admin {
		return "", r, nil
	}
	q.Set("namespace", c.Namespace)
	u := *r.URL
	u.RawQuery = q.Encode()
	r2 := *r
	r2.URL = &u
	return c.Namespace, &r2, nil
}

// bodyNamespace reads the "namespace" of r's JSON body ("" when it has
// none) and leaves the body readable for the handler. A body over the
// handlers' limit is read no further: a key's call is refused then, an
// admin's goes on with its namespace unknown.
func (s *Server) bodyNamespace(r *http.Request, c Caller) (string, *http.Request, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return "", r, nil
	}
	head, err := io.ReadAll(io.LimitReader(r.Body, maxSpecBytes+1))
	if err != nil {
		return "", r, gust.Errorf(gust.EINVALID, "read request body: %v", err)
	}
	r2 := *r
	if len(head) > maxSpecBytes {
		r2.Body = readCloser{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
		if c.Admin {
			return "", &r2, nil
		}
		return "", &r2, gust.Errorf(gust.ETOOLARGE, "request body is over %d bytes", maxSpecBytes)
	}
	r2.Body = readCloser{bytes.NewReader(head), r.Body}
	if len(bytes.TrimSpace(head)) == 0 {
		return "", &r2, nil
	}
	var v struct {
		Namespace string `json:"namespace"`
	}
	if err := json.Unmarshal(head, &v); err != nil {
		if c.Admin {
			return "", &r2, nil // its handler says what is wrong
		}
		return "", &r2, gust.Errorf(gust.EINVALID, "malformed JSON: %v", err)
	}
	return v.Namespace, &r2, nil
}

// readCloser reads from Reader and closes Closer.
type readCloser struct {
	io.Reader
	io.Closer
}

// invocationNamespace returns the namespace of the call {callId}: of its
// async status, or of its record; "" when neither exists.
func (s *Server) invocationNamespace(r *http.Request) (string, *http.Request, error) {
	id := chi.URLParam(r, "callId")
	callID, _ := gust.SplitAttemptID(id)
	if s.async != nil && statusKey(callID) {
		st, _, err := s.async.Calls.Get(r.Context(), callID)
		if err == nil {
			return st.Namespace, r, nil
		}
		if !errors.Is(err, gust.ErrNotFound) {
			return "", r, err
		}
	}
	if s.billing != nil {
		rec, err := s.billing.Call(r.Context(), id)
		if err == nil {
			return rec.Namespace, r, nil
		}
		if !errors.Is(err, gust.ErrNotFound) {
			return "", r, err
		}
	}
	return "", r, nil
}

// refuse answers a request guard turned away; a 401 carries the Basic
// challenge faas-cli and browsers answer.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	if gust.ErrorCode(err) == gust.EUNAUTHORIZED {
		w.Header().Set("WWW-Authenticate", `Basic realm="gust"`)
	}
	s.writeError(w, r, err)
}

// calledKey keys the function a call guard resolved, so that the call's
// handler serves the function that was checked.
type calledKey struct{}

type called struct {
	fn  *gust.Function
	sub string
}

// guardCall applies the call rule: a private function needs the admin or
// a key of its namespace. The credential that authenticated a call is
// removed before the call goes on to the function; any other
// Authorization (the function's own) passes untouched.
func (s *Server) guardCall(rt endpoint) http.Handler {
	prefix := strings.TrimSuffix(rt.pattern, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authOn() {
			rt.handler.ServeHTTP(w, r)
			return
		}
		arrived := time.Now()
		r, fn, err := s.admitCall(r, prefix)
		if err != nil {
			if fn != nil && prefix == "/function/" {
				// A sync call refused by a private function's rule is
				// still a call on the record, as every call the gateway
				// turns away (it bills nothing).
				callID, callerID := newCallID(), r.Header.Get(gust.HeaderCallID)
				if callerID == "" {
					callerID = callID
				}
				w.Header().Set(gust.HeaderCallID, callerID)
				s.reject(fn, callID, callerID, arrived, err)
			}
			s.refuse(w, r, err)
			return
		}
		rt.handler.ServeHTTP(w, r)
	})
}

// admitCall applies a call's rule; fn is the function called, once known,
// also when the call is refused.
func (s *Server) admitCall(r *http.Request, prefix string) (*http.Request, *gust.Function, error) {
	fn, sub, err := s.target(r, prefix)
	if err != nil {
		return r, nil, err
	}
	c, bad, err := s.authenticate(r)
	if err != nil {
		return r, fn, err
	}
	if !c.Anonymous() {
		r.Header.Del("Authorization")
	}
	if fn.Spec.Labels[gust.LabelPrivate] == "true" {
		if bad || c.Anonymous() {
			return r, fn, gust.Errorf(gust.EUNAUTHORIZED, "function %s is private: call it as admin or with a key of namespace %s", fn.Key(), fn.Spec.Namespace)
		}
		if !c.MayActIn(fn.Spec.Namespace) {
			return r, fn, gust.Errorf(gust.EFORBIDDEN, "function %s is private to namespace %s; key %s is of namespace %s", fn.Key(), fn.Spec.Namespace, c.KeyID, c.Namespace)
		}
	}
	ctx := context.WithValue(r.Context(), calledKey{}, called{fn: fn, sub: sub})
	if !c.Anonymous() {
		ctx = context.WithValue(ctx, callerKey{}, c)
	}
	return r.WithContext(ctx), fn, nil
}

// auditCall logs one state-changing management call: who, what, in which
// namespace, and its status. Never a credential, nor a body (which may
// hold a secret's value).
func (s *Server) auditCall(r *http.Request, pattern string, c Caller, ns string, status int) {
	if status == 0 {
		status = http.StatusOK
	}
	who := c.String()
	if !s.authOn() {
		who = "anyone (authentication off)"
	}
	s.audit.Info("management call",
		zap.String("who", who), zap.String("method", r.Method), zap.String("route", pattern),
		zap.String("path", r.URL.Path), zap.String("namespace", ns), zap.Int("status", status))
}

// statusWriter remembers the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
