package gateway_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const testPassword = "correct horse battery staple"

// authEnv is a gateway that authenticates: admin password testPassword,
// namespaces team-a and team-b with a key each, and in team-a a public
// function fa, a private function fp, a dead letter "dla" and an async
// call "calla"; in team-b a public function fb.
type authEnv struct {
	*env
	tenancy    *gust.Tenancy
	async      *gateway.Async
	meter      *callMeter
	keyA, keyB string // tokens
}

// Credentials as request headers (name, value pairs for MustDo).
func basicAuth(user, pass string) []string {
	return []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
}

func bearerAuth(token string) []string { return []string{"Authorization", "Bearer " + token} }

func (a *authEnv) admin() []string { return basicAuth("admin", testPassword) }

// MustAddKey stores a key of namespace ns and returns its token.
func MustAddKey(tb testing.TB, t *gust.Tenancy, id, ns string) string {
	tb.Helper()
	token := gust.KeyTokenPrefix + id + "_" + strings.Repeat(id, 8)
	sum := sha256.Sum256([]byte(token))
	key := gust.APIKey{ID: id, Name: "test", Namespace: ns, Created: time.Now().UTC(), Hash: hex.EncodeToString(sum[:])}
	if _, err := t.Keys.Create(context.Background(), id, key); err != nil {
		tb.Fatalf("create key %s: %v", id, err)
	}
	return token
}

// MustOpenAuthGateway starts an authEnv.
func MustOpenAuthGateway(tb testing.TB) *authEnv {
	tb.Helper()
	ctx := context.Background()
	a := &authEnv{meter: &callMeter{}}
	a.env = MustOpenGateway(tb, gateway.Config{AdminPassword: testPassword}, func(e *env, gw *gateway.Server) {
		t, err := natsbus.OpenTenancy(ctx, e.bus, bytes.Repeat([]byte{7}, natsbus.SecretsKeySize))
		if err != nil {
			tb.Fatalf("open tenancy: %v", err)
		}
		as, err := natsbus.OpenAsync(ctx, e.bus, time.Hour)
		if err != nil {
			tb.Fatalf("open async: %v", err)
		}
		a.tenancy = t
		a.async = &gateway.Async{Queue: e.bus, Events: e.bus, DeadLetters: natsbus.NewDeadLetters(e.bus),
			Calls: as.Calls, Idempotency: as.Idempotency, Stream: natsbus.StreamAsync}
		gw.WithTenancy(t).WithAsync(a.async, nil).WithMetering(a.meter, nil)
	})
	for _, ns := range []string{"team-a", "team-b"} {
		if _, err := a.tenancy.Namespaces.Create(ctx, ns, gust.Namespace{Name: ns, Created: time.Now().UTC()}); err != nil {
			tb.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	a.keyA = MustAddKey(tb, a.tenancy, "ka", "team-a")
	a.keyB = MustAddKey(tb, a.tenancy, "kb", "team-b")
	a.deploy(tb, `{"service":"fa","namespace":"team-a","image":"img:1"}`)
	a.deploy(tb, `{"service":"fp","namespace":"team-a","image":"img:1","labels":{"gust.private":"true"}}`)
	a.deploy(tb, `{"service":"fb","namespace":"team-b","image":"img:1"}`)
	req := gust.AsyncRequest{CallID: "dla", Namespace: "team-a", Function: "fa", Method: "POST", Path: "/"}
	if err := a.async.DeadLetters.Add(ctx, gust.DeadLetter{Request: req, Attempts: 1, Failed: time.Now().UTC()}); err != nil {
		tb.Fatalf("add dead letter: %v", err)
	}
	if _, err := a.async.Calls.Put(ctx, "calla", gust.AsyncStatus{CallID: "calla", Namespace: "team-a", Function: "fa", State: gust.AsyncQueued}); err != nil {
		tb.Fatalf("put async status: %v", err)
	}
	return a
}

// deploy deploys spec as admin and waits until the router knows it.
func (a *authEnv) deploy(tb testing.TB, spec string) {
	tb.Helper()
	var s gust.FunctionSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		tb.Fatal(err)
	}
	s.Normalize()
	status, _, body := MustDo(tb, http.MethodPost, a.url("/system/functions"), spec, a.admin()...)
	if status != http.StatusAccepted {
		tb.Fatalf("deploy %s: status %d %s, want 202", spec, status, body)
	}
	MustKnown(tb, a.env, s.Namespace, s.Service)
}

// wantRefused checks a 401 (with the Basic challenge) or a 403, with the
// JSON error body of its code.
func wantRefused(tb testing.TB, what string, status int, hdr http.Header, body []byte, want int) {
	tb.Helper()
	if status != want {
		tb.Errorf("%s: status %d %s, want %d", what, status, body, want)
		return
	}
	code := gust.EFORBIDDEN
	if want == http.StatusUnauthorized {
		code = gust.EUNAUTHORIZED
		if got := hdr.Get("WWW-Authenticate"); got != `Basic realm="gust"` {
			tb.Errorf("%s: WWW-Authenticate = %q, want Basic realm=\"gust\"", what, got)
		}
	}
	var eb gust.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Code != code || eb.Error == "" {
		tb.Errorf("%s: body %s, want a JSON error of code %s", what, body, code)
	}
}

// TestAuth_Matrix walks the gateway's own route table: every route, with
// each kind of caller, answers as its rule says. A route added to the
// table without an expectation here fails the test, and so does a rule
// that differs from the expected one.
func TestAuth_Matrix(t *testing.T) {
	a := MustOpenAuthGateway(t)

	// The expected rule of every route, and how the test fills in its
	// path and body so that it acts in team-a (or names nothing that
	// matters, for admin-only routes).
	type fixture struct{ access, path, body string }
	const fnBody = `{"service":"fa","namespace":"team-a","image":"img:1","functionName":"nofn","name":"s1","value":"v","replicas":1}`
	want := map[string]fixture{
		"GET /healthz": {"public", "/healthz", ""},
		"GET /metrics": {"admin", "/metrics", ""},

		"GET /system/info":                          {"caller", "/system/info", ""},
		"GET /system/namespaces":                    {"namespaced", "/system/namespaces?namespace=team-a", ""},
		"GET /system/functions":                     {"namespaced", "/system/functions?namespace=team-a", ""},
		"POST /system/functions":                    {"namespaced", "/system/functions", fnBody},
		"PUT /system/functions":                     {"namespaced", "/system/functions", fnBody},
		"DELETE /system/functions":                  {"namespaced", "/system/functions", fnBody},
		"GET /system/function/{name}":               {"namespaced", "/system/function/fa?namespace=team-a", ""},
		"POST /system/scale-function/{name}":        {"namespaced", "/system/scale-function/fa", fnBody},
		"GET /system/billing":                       {"namespaced", "/system/billing?namespace=team-a", ""},
		"GET /system/invocations":                   {"namespaced", "/system/invocations?namespace=team-a", ""},
		"GET /system/invocations/{callId}":          {"namespaced", "/system/invocations/calla", ""},
		"GET /system/deadletters":                   {"namespaced", "/system/deadletters?namespace=team-a", ""},
		"DELETE /system/deadletters":                {"namespaced", "/system/deadletters?namespace=team-a&function=nofn", ""},
		"GET /system/deadletters/{callId}":          {"namespaced", "/system/deadletters/dla", ""},
		"POST /system/deadletters/{callId}/redrive": {"namespaced", "/system/deadletters/dla/redrive", ""},
		"GET /system/logs":                          {"namespaced", "/system/logs?name=fa&namespace=team-a", ""},
		"POST /system/namespace":                    {"admin", "/system/namespace", `{"name":"team-c"}`},
		"POST /system/namespace/":                   {"admin", "/system/namespace/", `{"name":"team-d"}`},
		"GET /system/namespace/{name}":              {"namespaced", "/system/namespace/team-a", ""},
		"PUT /system/namespace/{name}":              {"admin", "/system/namespace/team-z", `{"name":"team-z"}`},
		"DELETE /system/namespace/{name}":           {"admin", "/system/namespace/team-z", ""},
		"GET /system/keys":                          {"admin", "/system/keys", ""},
		"POST /system/keys":                         {"admin", "/system/keys", `{"namespace":"team-a","name":"more"}`},
		"DELETE /system/keys/{id}":                  {"admin", "/system/keys/nokey", ""},
		"GET /system/workers":                       {"admin", "/system/workers", ""},
		"POST /system/workers/{id}/drain":           {"admin", "/system/workers/noworker/drain", ""},
		"GET /system/secrets":                       {"namespaced", "/system/secrets?namespace=team-a", ""},
		"POST /system/secrets":                      {"namespaced", "/system/secrets", fnBody},
		"PUT /system/secrets":                       {"namespaced", "/system/secrets", fnBody},
		"DELETE /system/secrets":                    {"namespaced", "/system/secrets", fnBody},
		"GET /ui":                                   {"caller", "/ui", ""},
		"GET /ui/*":                                 {"caller", "/ui/", ""},
		"GET /ui/api/pools":                         {"namespaced", "/ui/api/pools?namespace=team-a", ""},
		"GET /ui/api/activity":                      {"namespaced", "/ui/api/activity?namespace=team-a", ""},
		" /async-function/*":                        {"call", "/async-function/fp.team-a", ""},
		" /function/*":                              {"call", "/function/fp.team-a", ""},
	}
	callers := []struct {
		name string
		hdr  []string
	}{
		{"Anonymous", nil},
		{"WrongPassword", basicAuth("admin", "wrong")},
		{"OtherNamespaceKey", bearerAuth(a.keyB)},
		{"OwnKey", bearerAuth(a.keyA)},
		{"Admin", a.admin()},
	}
	const ok = 0 // any status but 401 and 403
	// The expected status of each kind of caller, by rule. A call's
	// fixture is a private function of team-a.
	expect := map[string][5]int{
		"public":     {ok, ok, ok, ok, ok},
		"admin":      {401, 401, 403, 403, ok},
		"caller":     {401, 401, ok, ok, ok},
		"namespaced": {401, 401, 403, ok, ok},
		"call":       {401, 401, 403, ok, ok},
	}

	seen := map[string]bool{}
	for _, rr := range gateway.RouteRules(a.gw) {
		id := rr.Method + " " + rr.Pattern
		seen[id] = true
		fx, found := want[id]
		if !found {
			t.Errorf("route %s is not in the auth matrix: add it with its expected rule", id)
			continue
		}
		if rr.Access != fx.access {
			t.Errorf("route %s has rule %s, want %s", id, rr.Access, fx.access)
			continue
		}
		method := rr.Method
		if method == "" {
			method = http.MethodPost
		}
		t.Run(strings.ReplaceAll(id, "/", "_"), func(t *testing.T) {
			for i, c := range callers {
				status, hdr, body := MustDo(t, method, a.url(fx.path), fx.body, c.hdr...)
				what := fmt.Sprintf("%s %s as %s", method, fx.path, c.name)
				switch w := expect[fx.access][i]; w {
				case ok:
					if status == http.StatusUnauthorized || status == http.StatusForbidden {
						t.Errorf("%s: status %d %s, want it allowed", what, status, body)
					}
				default:
					wantRefused(t, what, status, hdr, body, w)
				}
			}
		})
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("the matrix expects route %s, which the gateway does not have", id)
		}
	}
}

// TestAuth_KeyListings checks that a key's listings without a namespace
// are its namespace's, and that it cannot name another.
func TestAuth_KeyListings(t *testing.T) {
	a := MustOpenAuthGateway(t)
	status, _, body := MustDo(t, http.MethodGet, a.url("/system/functions"), "", bearerAuth(a.keyA)...)
	if status != http.StatusOK {
		t.Fatalf("GET /system/functions as team-a's key: %d %s", status, body)
	}
	var names []string
	for _, f := range MustDecode[[]map[string]any](t, body) {
		names = append(names, fmt.Sprint(f["name"], ".", f["namespace"]))
	}
	if strings.Join(names, ",") != "fa.team-a,fp.team-a" && strings.Join(names, ",") != "fp.team-a,fa.team-a" {
		t.Errorf("team-a's key lists %v, want fa and fp of team-a only", names)
	}
	status, _, body = MustDo(t, http.MethodGet, a.url("/system/function/fa"), "", bearerAuth(a.keyA)...)
	if status != http.StatusOK {
		t.Errorf("GET /system/function/fa as team-a's key: %d %s, want 200 (its namespace by default)", status, body)
	}
	status, hdr, body := MustDo(t, http.MethodGet, a.url("/system/deadletters?namespace=team-a"), "", bearerAuth(a.keyB)...)
	wantRefused(t, "team-b's key listing team-a's dead letters", status, hdr, body, http.StatusForbidden)
	status, _, body = MustDo(t, http.MethodGet, a.url("/system/deadletters"), "", bearerAuth(a.keyB)...)
	if status != http.StatusOK || strings.Contains(string(body), "dla") {
		t.Errorf("team-b's key listing dead letters: %d %s, want 200 without team-a's", status, body)
	}
	status, _, body = MustDo(t, http.MethodGet, a.url("/system/deadletters"), "", bearerAuth(a.keyA)...)
	if status != http.StatusOK || !strings.Contains(string(body), "dla") {
		t.Errorf("team-a's key listing dead letters: %d %s, want 200 with its dead letter", status, body)
	}
	status, _, body = MustDo(t, http.MethodGet, a.url("/system/namespaces"), "", bearerAuth(a.keyA)...)
	if got := MustDecode[[]string](t, body); status != http.StatusOK || len(got) != 1 || got[0] != "team-a" {
		t.Errorf("GET /system/namespaces as team-a's key: %d %s, want [team-a]", status, body)
	}
	status, _, body = MustDo(t, http.MethodGet, a.url("/system/namespaces"), "", a.admin()...)
	if got := MustDecode[[]string](t, body); status != http.StatusOK || !slices.Contains(got, "team-b") || !slices.Contains(got, gust.DefaultNamespace) {
		t.Errorf("GET /system/namespaces as admin: %d %s, want every namespace", status, body)
	}
	// A key deploys in its namespace; the handler still reads the body
	// the guard read.
	status, _, body = MustDo(t, http.MethodPost, a.url("/system/functions"), `{"service":"fk","namespace":"team-a","image":"img:k"}`, bearerAuth(a.keyA)...)
	if status != http.StatusAccepted {
		t.Fatalf("deploy as team-a's key: %d %s", status, body)
	}
	if fn := MustGetFunction(t, a.env, "team-a.fk"); fn.Spec.Image != "img:k" {
		t.Errorf("deployed image = %q, want img:k", fn.Spec.Image)
	}
	// Without a namespace, a deploy is in openfaas-fn: not the key's.
	status, hdr, body = MustDo(t, http.MethodPost, a.url("/system/functions"), `{"service":"fk","image":"img:k"}`, bearerAuth(a.keyA)...)
	wantRefused(t, "deploy in openfaas-fn as team-a's key", status, hdr, body, http.StatusForbidden)
}

// TestAuth_PrivateCalls covers calls of private and public functions.
func TestAuth_PrivateCalls(t *testing.T) {
	a := MustOpenAuthGateway(t)
	for _, tt := range []struct {
		name, path string
		hdr        []string
		want       int
	}{
		{"PrivateAnonymous", "/function/fp.team-a", nil, 401},
		{"PrivateWrongPassword", "/function/fp.team-a", basicAuth("admin", "nope"), 401},
		{"PrivateForeignBearer", "/function/fp.team-a", bearerAuth("not-a-gust-key"), 401},
		{"PrivateOtherKey", "/function/fp.team-a", bearerAuth(a.keyB), 403},
		{"PrivateOwnKey", "/function/fp.team-a/x", bearerAuth(a.keyA), 200},
		{"PrivateAdmin", "/function/fp.team-a", a.admin(), 200},
		{"PublicAnonymous", "/function/fa.team-a", nil, 200},
		{"PublicOtherKey", "/function/fa.team-a", bearerAuth(a.keyB), 200},
		{"PublicWrongPassword", "/function/fa.team-a", basicAuth("admin", "nope"), 200},
		{"AsyncPrivateAnonymous", "/async-function/fp.team-a", nil, 401},
		{"AsyncPrivateOtherKey", "/async-function/fp.team-a", bearerAuth(a.keyB), 403},
		{"AsyncPrivateOwnKey", "/async-function/fp.team-a", bearerAuth(a.keyA), 202},
		{"Missing", "/function/nope.team-a", nil, 404},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := MustDo(t, http.MethodPost, a.url(tt.path), "x", tt.hdr...)
			if tt.want == 401 || tt.want == 403 {
				wantRefused(t, tt.path, status, hdr, body, tt.want)
			} else if status != tt.want {
				t.Errorf("status %d %s, want %d", status, body, tt.want)
			}
			// A refused sync call is still a call on the record, once,
			// rejected with the status it got.
			if strings.HasPrefix(tt.path, "/function/fp") && (tt.want == 401 || tt.want == 403) {
				id := hdr.Get(gust.HeaderCallID)
				var recs []gust.CallRecord
				for _, rec := range a.meter.records() {
					if rec.CallID == id {
						recs = append(recs, rec)
					}
				}
				if id == "" || len(recs) != 1 || recs[0].Outcome != gust.OutcomeRejected || recs[0].Status != tt.want || recs[0].Function != "fp" {
					t.Errorf("records of refused call %q = %+v, want one rejected record with status %d", id, recs, tt.want)
				}
			}
		})
	}
}

// TestAuth_CredentialStripped checks that the credential that
// authenticated a call never reaches the function, and that any other
// Authorization does, untouched.
func TestAuth_CredentialStripped(t *testing.T) {
	a := MustOpenAuthGateway(t)
	wrong := basicAuth("admin", "nope")
	for _, tt := range []struct {
		name, path string
		hdr        []string
		wantAuth   string
	}{
		{"AdminPrivate", "/function/fp.team-a", a.admin(), ""},
		{"AdminPublic", "/function/fa.team-a", a.admin(), ""},
		{"KeyPrivate", "/function/fp.team-a", bearerAuth(a.keyA), ""},
		{"OtherKeyPublic", "/function/fa.team-a", bearerAuth(a.keyB), ""},
		{"ForeignBearer", "/function/fa.team-a", bearerAuth("the-functions-own"), "Bearer the-functions-own"},
		{"WrongPassword", "/function/fa.team-a", wrong, wrong[1]},
		{"RevokedLookingKey", "/function/fa.team-a", bearerAuth("gk_gone_secret"), "Bearer gk_gone_secret"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := MustDo(t, http.MethodGet, a.url(tt.path), "", tt.hdr...)
			if status != http.StatusOK {
				t.Fatalf("status %d %s, want 200", status, body)
			}
			calls := a.invocations()
			if got := calls[len(calls)-1].Auth; got != tt.wantAuth {
				t.Errorf("the function saw Authorization %q, want %q", got, tt.wantAuth)
			}
		})
	}
}

// TestAuth_AsyncCredentialStripped checks that an async call is queued
// without the credential that authenticated it, and with any other.
func TestAuth_AsyncCredentialStripped(t *testing.T) {
	a := MustOpenAuthGateway(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name, fn string
		hdr      []string
		wantAuth []string
	}{
		{"Key", "fp", bearerAuth(a.keyA), nil},
		{"Admin", "fa", a.admin(), nil},
		{"Foreign", "fa", bearerAuth("the-functions-own"), []string{"Bearer the-functions-own"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := MustDo(t, http.MethodPost, a.url("/async-function/"+tt.fn+".team-a"), "x", tt.hdr...)
			if status != http.StatusAccepted {
				t.Fatalf("status %d %s, want 202", status, body)
			}
			st, err := a.bus.JS.Stream(ctx, natsbus.StreamAsync)
			if err != nil {
				t.Fatal(err)
			}
			// Queued under the function's subject, the last there.
			msg, err := st.GetLastMsgForSubject(ctx, gust.SubjectAsyncPrefix+"team-a."+tt.fn)
			if err != nil {
				t.Fatal(err)
			}
			req := MustDecode[gust.AsyncRequest](t, msg.Data)
			if req.CallID != hdr.Get(gust.HeaderCallID) {
				t.Fatalf("last call queued for %s: %s, want %s", tt.fn, req.CallID, hdr.Get(gust.HeaderCallID))
			}
			if got := req.Header["Authorization"]; !slices.Equal(got, tt.wantAuth) {
				t.Errorf("queued call's Authorization = %q, want %q", got, tt.wantAuth)
			}
		})
	}
}

// TestAuth_CrossSite checks that a browser page on another site cannot
// change anything with the credentials its browser saved.
func TestAuth_CrossSite(t *testing.T) {
	a := MustOpenAuthGateway(t)
	host := strings.TrimPrefix(a.srv.URL, "http://")
	deploy := `{"service":"fx","namespace":"team-a","image":"img:1"}`
	for _, tt := range []struct {
		name, method, path, body string
		hdr                      []string
		want                     int
	}{
		{"ForeignOrigin", "POST", "/system/functions", deploy, []string{"Origin", "http://elsewhere.example"}, 403},
		{"ForeignOriginSamePort", "POST", "/system/functions", deploy, []string{"Origin", "http://evil.example:" + strings.Split(host, ":")[1]}, 403},
		{"NullOrigin", "DELETE", "/system/functions", `{"functionName":"fa","namespace":"team-a"}`, []string{"Origin", "null"}, 403},
		{"SecFetchSite", "POST", "/system/keys", `{"namespace":"team-a","name":"x"}`, []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"OwnOrigin", "POST", "/system/functions", deploy, []string{"Origin", a.srv.URL}, 202},
		{"SameOriginFetch", "POST", "/system/functions", deploy, []string{"Sec-Fetch-Site", "same-origin"}, 202},
		{"ForeignOriginRead", "GET", "/system/functions?namespace=team-a", "", []string{"Origin", "http://elsewhere.example"}, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := MustDo(t, tt.method, a.url(tt.path), tt.body, append(a.admin(), tt.hdr...)...)
			if tt.want == 403 {
				wantRefused(t, tt.name, status, hdr, body, 403)
			} else if status != tt.want {
				t.Errorf("status %d %s, want %d", status, body, tt.want)
			}
		})
	}
	if fn := MustGetFunction(t, a.env, "team-a.fa"); fn.Version != 1 {
		t.Errorf("fa version = %d after refused cross-site calls, want 1", fn.Version)
	}
}

// TestAuth_Keys checks that a revoked key fails at once, and that a token
// naming a key with the wrong secret fails.
func TestAuth_Keys(t *testing.T) {
	a := MustOpenAuthGateway(t)
	ctx := context.Background()
	tok := MustAddKey(t, a.tenancy, "kr", "team-a")
	path := a.url("/system/functions?namespace=team-a")
	if status, _, body := MustDo(t, http.MethodGet, path, "", bearerAuth(tok)...); status != http.StatusOK {
		t.Fatalf("with a fresh key: %d %s, want 200", status, body)
	}
	status, hdr, body := MustDo(t, http.MethodGet, path, "", bearerAuth("gk_kr_wrongsecret")...)
	wantRefused(t, "a key id with the wrong secret", status, hdr, body, 401)
	status, hdr, body = MustDo(t, http.MethodGet, path, "", bearerAuth("gk_kr")...)
	wantRefused(t, "a token without a secret", status, hdr, body, 401)
	if err := a.tenancy.Keys.Delete(ctx, "kr"); err != nil {
		t.Fatal(err)
	}
	status, hdr, body = MustDo(t, http.MethodGet, path, "", bearerAuth(tok)...)
	wantRefused(t, "a revoked key", status, hdr, body, 401)
	status, hdr, body = MustDo(t, http.MethodGet, a.url("/function/fp.team-a"), "", bearerAuth(tok)...)
	wantRefused(t, "a revoked key calling a private function", status, hdr, body, 401)
	// An empty Bearer (OpenFaaS clients send one without a token) is no
	// credential: anonymous.
	status, hdr, body = MustDo(t, http.MethodGet, path, "", "Authorization", "Bearer ")
	wantRefused(t, "an empty Bearer", status, hdr, body, 401)
	status, hdr, body = MustDo(t, http.MethodGet, path, "", basicAuth("root", testPassword)...)
	wantRefused(t, "the admin password as another user", status, hdr, body, 401)
}

// TestAuth_Off checks that a gateway without an admin password lets
// everyone act, as before access control.
func TestAuth_Off(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	MustDeploy(t, e, `{"service":"fp","image":"img:1","labels":{"gust.private":"true"}}`)
	if status, _, body := MustDo(t, http.MethodGet, e.url("/system/functions"), ""); status != http.StatusOK {
		t.Errorf("anonymous GET /system/functions: %d %s, want 200", status, body)
	}
	if status, _, body := MustDo(t, http.MethodGet, e.url("/metrics"), ""); status == 401 || status == 403 {
		t.Errorf("anonymous GET /metrics: %d %s, want it allowed", status, body)
	}
	status, _, body := MustDo(t, http.MethodGet, e.url("/function/fp"), "", basicAuth("admin", "x")...)
	if status != http.StatusOK {
		t.Fatalf("anonymous call of a private function: %d %s, want 200", status, body)
	}
	calls := e.invocations()
	if got, want := calls[len(calls)-1].Auth, basicAuth("admin", "x")[1]; got != want {
		t.Errorf("the function saw Authorization %q, want %q (untouched)", got, want)
	}
}

// TestAuth_Audit checks the audit log of state-changing management calls:
// who, what, where and the outcome, and never a credential or a body.
func TestAuth_Audit(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	a := MustOpenAuthGateway(t)
	gateway.SetAuditLogger(a.gw, zap.New(core).Named("audit"))

	MustDo(t, http.MethodPost, a.url("/system/functions"), `{"service":"fz","namespace":"team-a","image":"img:1"}`, a.admin()...)
	MustDo(t, http.MethodPost, a.url("/system/secrets"), `{"name":"db","namespace":"team-a","value":"hunter2"}`, bearerAuth(a.keyA)...)
	MustDo(t, http.MethodDelete, a.url("/system/functions"), `{"functionName":"fa","namespace":"team-a"}`, bearerAuth(a.keyB)...)
	MustDo(t, http.MethodPost, a.url("/system/keys"), `{"namespace":"team-a","name":"x"}`, basicAuth("admin", "wrong")...)
	MustDo(t, http.MethodPut, a.url("/system/functions"), `{"service":"fz","namespace":"team-a","image":"img:2"}`, append(a.admin(), "Origin", "http://elsewhere.example")...)
	MustDo(t, http.MethodGet, a.url("/system/functions"), "", a.admin()...) // a read: not audited

	type line struct {
		who, method, route, ns string
		status                 int64
	}
	want := []line{
		{"admin", "POST", "/system/functions", "team-a", 202},
		{"key ka", "POST", "/system/secrets", "team-a", 201},
		{"key kb", "DELETE", "/system/functions", "team-a", 403},
		{"anonymous", "POST", "/system/keys", "", 401},
		{"admin", "PUT", "/system/functions", "", 403},
	}
	entries := logs.All()
	if len(entries) != len(want) {
		t.Fatalf("%d audit lines, want %d: %+v", len(entries), len(want), entries)
	}
	for i, en := range entries {
		f := en.ContextMap()
		got := line{fmt.Sprint(f["who"]), fmt.Sprint(f["method"]), fmt.Sprint(f["route"]), fmt.Sprint(f["namespace"]), 0}
		got.status, _ = f["status"].(int64)
		if en.LoggerName != "audit" || got != want[i] {
			t.Errorf("audit line %d = %s %+v, want logger audit %+v", i, en.LoggerName, got, want[i])
		}
		all := fmt.Sprint(en.Message, f)
		for _, secret := range []string{testPassword, "wrong", "hunter2", a.keyA, a.keyB, "Basic "} {
			if strings.Contains(all, secret) {
				t.Errorf("audit line %d shows %q: %s", i, secret, all)
			}
		}
	}
}
