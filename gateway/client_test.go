package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
)

// recorded is one request as the server saw it.
type recorded struct {
	method, path, auth, body string
}

// MustRecorder serves canned answers for the client's routes and records
// every request; the client it returns owns its transport, closed at the
// end of the test.
func MustRecorder(tb testing.TB, answers map[string]string) (*gateway.Client, func() []recorded) {
	tb.Helper()
	var (
		mu  sync.Mutex
		got []recorded
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, recorded{r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), string(b)})
		mu.Unlock()
		if a, ok := answers[r.Method+" "+r.URL.Path]; ok {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, a)
			return
		}
		if r.URL.Path == "/system/functions" && r.Method == http.MethodGet {
			if r.Header.Get("Authorization") == "Basic "+basic("admin", "wrong") {
				w.Header().Set("WWW-Authenticate", `Basic realm="gust"`)
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"error":"credentials required","code":"unauthorized"}`)
				return
			}
			io.WriteString(w, "[]")
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	tr := &http.Transport{}
	tb.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
	})
	c := gateway.NewClient(srv.URL)
	c.HTTP = &http.Client{Transport: tr}
	return c, func() []recorded {
		mu.Lock()
		defer mu.Unlock()
		return append([]recorded(nil), got...)
	}
}

func basic(user, pw string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(user, pw)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// TestClientCredentials: the admin's password goes as Basic (user admin),
// a key as Bearer, on management calls and function calls alike; a
// caller's own Authorization header on a function call is kept.
func TestClientCredentials(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		set  func(*gateway.Client)
		want string
	}{
		{"None", func(*gateway.Client) {}, ""},
		{"Admin", func(c *gateway.Client) { c.Password = "pw" }, "Basic " + basic("admin", "pw")},
		{"Key", func(c *gateway.Client) { c.Token = "gk_id_secret" }, "Bearer gk_id_secret"},
		{"PasswordWins", func(c *gateway.Client) { c.Password, c.Token = "pw", "gk_id_secret" }, "Basic " + basic("admin", "pw")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, got := MustRecorder(t, nil)
			tc.set(c)
			if _, err := c.Functions(ctx, ""); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Billing(ctx, nil); err != nil {
				t.Fatal(err)
			}
			resp, err := c.Invoke(ctx, http.MethodGet, "fn", "", "", "", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if _, err := c.InvokeAsync(ctx, http.MethodPost, "fn", "", "", "", nil, nil); err != nil {
				t.Fatal(err)
			}
			for _, r := range got() {
				if r.auth != tc.want {
					t.Errorf("%s %s: Authorization %q, want %q", r.method, r.path, r.auth, tc.want)
				}
			}
		})
	}
	t.Run("CallersOwnHeader", func(t *testing.T) {
		c, got := MustRecorder(t, nil)
		c.Password = "pw"
		resp, err := c.Invoke(ctx, http.MethodGet, "fn", "", "", "", nil, http.Header{"Authorization": {"Bearer for-the-function"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if r := got(); len(r) != 1 || r[0].auth != "Bearer for-the-function" {
			t.Errorf("got %+v, want the caller's Authorization kept", r)
		}
	})
	t.Run("CheckCredentials", func(t *testing.T) {
		c, _ := MustRecorder(t, nil)
		c.Password = "pw"
		if err := c.CheckCredentials(ctx); err != nil {
			t.Errorf("accepted credentials: %v", err)
		}
		c.Password = "wrong"
		err := c.CheckCredentials(ctx)
		if ge, ok := err.(*gust.Error); !ok || ge.Code != gust.EUNAUTHORIZED {
			t.Errorf("refused credentials: got %v, want an EUNAUTHORIZED *gust.Error", err)
		}
	})
}

// TestClientTenancy: the requests the access-control verbs send (method,
// path, body), and the answers they decode.
func TestClientTenancy(t *testing.T) {
	ctx := context.Background()
	c, got := MustRecorder(t, map[string]string{
		"POST /system/keys":            `{"id":"k1","name":"ci","namespace":"team-a","createdAt":"2026-12-01T00:00:00Z","key":"gk_k1_secret"}`,
		"GET /system/keys":             `[{"id":"k1","name":"ci","namespace":"team-a","createdAt":"2026-12-01T00:00:00Z"}]`,
		"GET /system/namespaces":       `["openfaas-fn","team-a"]`,
		"GET /system/namespace/team-a": `{"name":"team-a","labels":{},"annotations":{},"quota":{"instances":2}}`,
		"GET /system/secrets":          `[{"name":"db","namespace":"team-a"}]`,
	})
	c.Password = "pw"
	if err := c.CreateNamespace(ctx, gust.Namespace{Name: "team-a", Quota: &gust.Quota{Instances: 2, Concurrency: 3, Memory: "1Gi"}}); err != nil {
		t.Fatal(err)
	}
	nss, err := c.Namespaces(ctx)
	if err != nil || strings.Join(nss, ",") != "openfaas-fn,team-a" {
		t.Errorf("Namespaces: %+v, %v", nss, err)
	}
	ns, err := c.Namespace(ctx, "team-a")
	if err != nil || ns.Name != "team-a" || ns.Quota == nil || ns.Quota.Instances != 2 {
		t.Errorf("Namespace: %+v, %v", ns, err)
	}
	if err := c.DeleteNamespace(ctx, "team-a"); err != nil {
		t.Fatal(err)
	}
	k, err := c.CreateKey(ctx, "team-a", "ci")
	if err != nil || k.ID != "k1" || k.Key != "gk_k1_secret" || k.Namespace != "team-a" {
		t.Errorf("CreateKey: %+v, %v", k, err)
	}
	keys, err := c.Keys(ctx)
	if err != nil || len(keys) != 1 || keys[0].ID != "k1" {
		t.Errorf("Keys: %+v, %v", keys, err)
	}
	if err := c.DeleteKey(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateSecret(ctx, gateway.Secret{Name: "db", Namespace: "team-a", Value: "v"}, false); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateSecret(ctx, gateway.Secret{Name: "bin", Namespace: "team-a", RawValue: []byte{0xff, 0}}, true); err != nil {
		t.Fatal(err)
	}
	ss, err := c.Secrets(ctx, "team-a")
	if err != nil || len(ss) != 1 || ss[0].Name != "db" {
		t.Errorf("Secrets: %+v, %v", ss, err)
	}
	if err := c.DeleteSecret(ctx, "team-a", "db"); err != nil {
		t.Fatal(err)
	}

	want := []recorded{
		{"POST", "/system/namespace/", "", `{"name":"team-a","labels":null,"annotations":null,"quota":{"instances":2,"concurrency":3,"memory":"1Gi"},"createdAt":"0001-01-01T00:00:00Z"}`},
		{"GET", "/system/namespaces", "", ""},
		{"GET", "/system/namespace/team-a", "", ""},
		{"DELETE", "/system/namespace/team-a", "", ""},
		{"POST", "/system/keys", "", `{"namespace":"team-a","name":"ci"}`},
		{"GET", "/system/keys", "", ""},
		{"DELETE", "/system/keys/k1", "", ""},
		{"POST", "/system/secrets", "", `{"name":"db","namespace":"team-a","value":"v"}`},
		{"PUT", "/system/secrets", "", `{"name":"bin","namespace":"team-a","rawValue":"/wA="}`},
		{"GET", "/system/secrets?namespace=team-a", "", ""},
		{"DELETE", "/system/secrets", "", `{"name":"db","namespace":"team-a"}`},
	}
	rs := got()
	if len(rs) != len(want) {
		t.Fatalf("%d requests, want %d: %+v", len(rs), len(want), rs)
	}
	for i, w := range want {
		r := rs[i]
		if r.method != w.method || r.path != w.path || !sameJSON(r.body, w.body) {
			t.Errorf("request %d: %s %s %s, want %s %s %s", i, r.method, r.path, r.body, w.method, w.path, w.body)
		}
		if r.auth != "Basic "+basic("admin", "pw") {
			t.Errorf("request %d: Authorization %q", i, r.auth)
		}
	}
}

// sameJSON compares two JSON texts by value ("" only equals "").
func sameJSON(a, b string) bool {
	if a == "" || b == "" {
		return a == b
	}
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}
