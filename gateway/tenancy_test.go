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
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// tenantEnv is a gateway with a Tenancy on an embedded NATS server, served
// by httptest through its real router; a fake scheduler on the bus places
// every deploy.
type tenantEnv struct {
	state   *gust.State
	bus     *natsbus.Bus
	tenancy *gust.Tenancy
	srv     *httptest.Server
	// logs holds every line the gateway logged, at every level.
	logs *observer.ObservedLogs
}

// noLogShows fails the test if any line the gateway logged, message or
// field, holds s.
func (e *tenantEnv) noLogShows(tb testing.TB, s string) {
	tb.Helper()
	for _, l := range e.logs.All() {
		line := l.Message + " " + fmt.Sprint(l.ContextMap())
		if strings.Contains(line, s) {
			tb.Errorf("a log line shows %q: %s", s, line)
		}
	}
}

func (e *tenantEnv) url(path string) string { return e.srv.URL + path }

// do sends one management call as the admin would; the tests of the
// routes' rules for other callers are the auth middleware's.
func (e *tenantEnv) do(tb testing.TB, method, path, body string) (int, []byte) {
	tb.Helper()
	status, _, b := MustDo(tb, method, e.url(path), body, "Content-Type", "application/json")
	return status, b
}

// MustOpenTenantGateway starts a gateway with a Tenancy and stops it when
// the test ends.
func MustOpenTenantGateway(tb testing.TB) *tenantEnv {
	tb.Helper()
	ctx := context.Background()
	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(zapcore.NewTee(zaptest.NewLogger(tb).Core(), core))
	st, bus := natsbustest.MustOpenState(tb)
	stop, err := bus.Handle(ctx, gust.SubjectPlace, "", func(context.Context, []byte) any {
		return placeOK(gust.PlaceRequest{})
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = stop() })
	tn, err := natsbus.OpenTenancy(ctx, bus, bytes.Repeat([]byte{7}, natsbus.SecretsKeySize))
	if err != nil {
		tb.Fatalf("open tenancy: %v", err)
	}
	inv := &fakeInvoker{InvokeFn: func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error {
		w.WriteHeader(http.StatusOK)
		return nil
	}}
	router := gateway.NewRouter(st, bus, inv, "w1", logger)
	if err := router.Start(ctx); err != nil {
		tb.Fatalf("start router: %v", err)
	}
	tb.Cleanup(router.Close)
	cfg := gateway.DefaultConfig()
	cfg.DeployTimeout = 10 * time.Second
	gw := gateway.New(cfg, st, bus, router, logger).WithTenancy(tn)
	tb.Cleanup(func() { _ = gw.Close(context.Background()) })
	srv := httptest.NewServer(gw.Handler())
	tb.Cleanup(srv.Close)
	return &tenantEnv{state: st, bus: bus, tenancy: tn, srv: srv, logs: logs}
}

func (e *tenantEnv) mustCreateNamespace(tb testing.TB, name string) {
	tb.Helper()
	status, body := e.do(tb, http.MethodPost, "/system/namespace/", fmt.Sprintf(`{"name":%q}`, name))
	if status != http.StatusCreated {
		tb.Fatalf("create namespace %s: %d %s, want 201", name, status, body)
	}
}

func TestNamespaces(t *testing.T) {
	e := MustOpenTenantGateway(t)

	t.Run("Create", func(t *testing.T) {
		status, body := e.do(t, http.MethodPost, "/system/namespace/",
			`{"name":"team-a","labels":{"team":"a"},"annotations":{"note":"x"},"quota":{"instances":3,"concurrency":5,"memory":"2Gi"}}`)
		if status != http.StatusCreated {
			t.Fatalf("status = %d %s, want 201", status, body)
		}
		ns := MustDecode[gust.Namespace](t, body)
		if ns.Name != "team-a" || ns.Labels["team"] != "a" || ns.Annotations["note"] != "x" || ns.Created.IsZero() ||
			ns.Quota == nil || *ns.Quota != (gust.Quota{Instances: 3, Concurrency: 5, Memory: "2Gi"}) {
			t.Errorf("created %s", body)
		}
		// Without the trailing slash too.
		if status, body := e.do(t, http.MethodPost, "/system/namespace", `{"name":"team-b"}`); status != http.StatusCreated {
			t.Errorf("POST /system/namespace = %d %s, want 201", status, body)
		}
	})
	t.Run("ErrExists", func(t *testing.T) {
		status, body := e.do(t, http.MethodPost, "/system/namespace/", `{"name":"team-a"}`)
		wantError(t, status, body, http.StatusConflict, gust.ECONFLICT, "")
		status, body = e.do(t, http.MethodPost, "/system/namespace/", `{"name":"openfaas-fn"}`)
		wantError(t, status, body, http.StatusConflict, gust.ECONFLICT, "")
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		for _, tt := range []struct{ body, field string }{
			{`{}`, "name"},
			{`{"name":"Team_A"}`, "name"},
			{`{"name":"x","quota":{"memory":"lots"}}`, "quota.memory"},
			{`{"name":"x","quota":{"instances":-1}}`, "quota.instances"},
			{`{"name":"x","quota":{"concurrency":-2}}`, "quota.concurrency"},
			{`{"name":"x","quota":{"instances":"many"}}`, "quota.instances"},
		} {
			status, body := e.do(t, http.MethodPost, "/system/namespace/", tt.body)
			wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, tt.field)
		}
		if _, _, err := e.tenancy.Namespaces.Get(context.Background(), "x"); err == nil {
			t.Error("a refused create made namespace x")
		}
	})
	t.Run("Get", func(t *testing.T) {
		status, body := e.do(t, http.MethodGet, "/system/namespace/team-b", "")
		if status != http.StatusOK {
			t.Fatalf("status = %d %s", status, body)
		}
		got := MustDecode[map[string]any](t, body)
		if got["name"] != "team-b" || got["labels"] == nil || got["annotations"] == nil {
			t.Errorf("GET = %s, want name, labels and annotations", body)
		}
		status, body = e.do(t, http.MethodGet, "/system/namespace/nope", "")
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
	})
	t.Run("Update", func(t *testing.T) {
		status, body := e.do(t, http.MethodPut, "/system/namespace/team-a", `{"name":"team-a","labels":{"tier":"gold"},"quota":{"concurrency":9}}`)
		if status != http.StatusOK {
			t.Fatalf("status = %d %s, want 200", status, body)
		}
		_, body = e.do(t, http.MethodGet, "/system/namespace/team-a", "")
		ns := MustDecode[gust.Namespace](t, body)
		if ns.Labels["tier"] != "gold" || ns.Labels["team"] != "" || len(ns.Annotations) != 0 ||
			ns.Quota == nil || *ns.Quota != (gust.Quota{Concurrency: 9}) {
			t.Errorf("after PUT: %s; want labels, annotations and quota replaced", body)
		}
		status, body = e.do(t, http.MethodPut, "/system/namespace/team-a", `{"quota":{"memory":"0"}}`)
		wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, "quota.memory")
		status, body = e.do(t, http.MethodPut, "/system/namespace/team-a", `{"name":"team-b"}`)
		wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, "name")
		status, body = e.do(t, http.MethodPut, "/system/namespace/nope", `{}`)
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
	})
	t.Run("List", func(t *testing.T) {
		status, body := e.do(t, http.MethodGet, "/system/namespaces", "")
		if got := fmt.Sprint(MustDecode[[]string](t, body)); status != http.StatusOK || got != "[openfaas-fn team-a team-b]" {
			t.Errorf("GET /system/namespaces = %d %s, want [openfaas-fn team-a team-b]", status, body)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		status, body := e.do(t, http.MethodDelete, "/system/namespace/openfaas-fn", "")
		wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, "name")

		if status, body := e.do(t, http.MethodPost, "/system/functions", `{"service":"f","namespace":"team-b","image":"img:1"}`); status != http.StatusAccepted {
			t.Fatalf("deploy: %d %s", status, body)
		}
		status, body = e.do(t, http.MethodDelete, "/system/namespace/team-b", "")
		wantError(t, status, body, http.StatusConflict, gust.ECONFLICT, "")
		if status, body := e.do(t, http.MethodDelete, "/system/functions", `{"functionName":"f","namespace":"team-b"}`); status != http.StatusAccepted {
			t.Fatalf("delete function: %d %s", status, body)
		}

		// The namespace's keys and secrets go with it.
		_, body = e.do(t, http.MethodPost, "/system/keys", `{"namespace":"team-b","name":"ci"}`)
		id := MustDecode[map[string]any](t, body)["id"].(string)
		if status, body := e.do(t, http.MethodPost, "/system/secrets", `{"name":"s","namespace":"team-b","value":"v"}`); status != http.StatusCreated {
			t.Fatalf("create secret: %d %s", status, body)
		}
		if status, body := e.do(t, http.MethodDelete, "/system/namespace/team-b", ""); status != http.StatusAccepted {
			t.Fatalf("DELETE = %d %s, want 202", status, body)
		}
		status, body = e.do(t, http.MethodGet, "/system/namespace/team-b", "")
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
		ctx := context.Background()
		if _, _, err := e.tenancy.Keys.Get(ctx, id); err == nil {
			t.Error("the deleted namespace's key is still there")
		}
		if names, err := e.tenancy.Secrets.List(ctx, "team-b"); err != nil || len(names) != 0 {
			t.Errorf("the deleted namespace's secrets: %v, %v; want none", names, err)
		}
		status, body = e.do(t, http.MethodDelete, "/system/namespace/team-b", "")
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
	})
}

func TestKeys(t *testing.T) {
	e := MustOpenTenantGateway(t)
	e.mustCreateNamespace(t, "team-a")
	ctx := context.Background()

	status, body := e.do(t, http.MethodPost, "/system/keys", `{"namespace":"team-a","name":"ci"}`)
	if status != http.StatusCreated {
		t.Fatalf("create key: %d %s, want 201", status, body)
	}
	created := MustDecode[map[string]any](t, body)
	id, _ := created["id"].(string)
	token, _ := created["key"].(string)
	t.Run("Create", func(t *testing.T) {
		if created["name"] != "ci" || created["namespace"] != "team-a" || created["createdAt"] == nil {
			t.Errorf("answer %s: want id, name, namespace, createdAt and key", body)
		}
		e.noLogShows(t, token)
		if _, ok := created["hash"]; ok {
			t.Errorf("answer %s shows the hash", body)
		}
		if !strings.HasPrefix(token, gust.KeyTokenPrefix) || gust.KeyIDOfToken(token) != id || id == "" {
			t.Fatalf("token %q: want gk_<id>_<secret> naming id %q", token, id)
		}
		secret := strings.TrimPrefix(token, gust.KeyTokenPrefix+id+"_")
		if len(secret) < 52 { // 256 bits in base32
			t.Errorf("secret part %q: %d characters, want at least 52", secret, len(secret))
		}
		k, _, err := e.tenancy.Keys.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(token))
		if k.Hash != hex.EncodeToString(sum[:]) {
			t.Errorf("stored hash %q, want the SHA-256 of the token", k.Hash)
		}
		kv, err := e.bus.JS.KeyValue(ctx, natsbus.BucketKeys)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := kv.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw.Value(), []byte(secret)) {
			t.Errorf("the stored key record holds the secret: %s", raw.Value())
		}
		// Another key: other id, other secret.
		_, body2 := e.do(t, http.MethodPost, "/system/keys", `{"namespace":"openfaas-fn","name":"deploy"}`)
		other := MustDecode[map[string]any](t, body2)
		if other["id"] == id || other["key"] == token {
			t.Errorf("two keys share an id or a token: %s and %s", body, body2)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		for _, tt := range []struct{ body, field string }{
			{`{"name":"ci"}`, "namespace"},
			{`{"namespace":"nope","name":"ci"}`, "namespace"},
			{`{"namespace":"Bad!","name":"ci"}`, "namespace"},
			{`{"namespace":"team-a"}`, "name"},
			{`{"namespace":"team-a","name":"has space"}`, "name"},
		} {
			status, body := e.do(t, http.MethodPost, "/system/keys", tt.body)
			wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, tt.field)
		}
	})
	t.Run("List", func(t *testing.T) {
		status, body := e.do(t, http.MethodGet, "/system/keys", "")
		if status != http.StatusOK {
			t.Fatalf("status = %d %s", status, body)
		}
		if bytes.Contains(body, []byte(token)) || bytes.Contains(body, []byte(strings.TrimPrefix(token, gust.KeyTokenPrefix+id+"_"))) {
			t.Fatalf("GET /system/keys shows a key's secret: %s", body)
		}
		if bytes.Contains(body, []byte(`"hash"`)) || bytes.Contains(body, []byte(`"key"`)) {
			t.Fatalf("GET /system/keys shows a hash or key field: %s", body)
		}
		keys := MustDecode[[]map[string]any](t, body)
		if len(keys) != 2 || keys[0]["namespace"] != "openfaas-fn" || keys[1]["id"] != id || keys[1]["name"] != "ci" || keys[1]["createdAt"] == nil {
			t.Errorf("keys = %s; want the openfaas-fn key, then team-a's ci", body)
		}
		_, body = e.do(t, http.MethodGet, "/system/keys?namespace=team-a", "")
		if keys := MustDecode[[]map[string]any](t, body); len(keys) != 1 || keys[0]["id"] != id {
			t.Errorf("keys of team-a = %s; want ci alone", body)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		if status, body := e.do(t, http.MethodDelete, "/system/keys/"+id, ""); status != http.StatusNoContent {
			t.Fatalf("DELETE = %d %s, want 204", status, body)
		}
		// Gone at once from the table every gateway reads.
		if _, _, err := e.tenancy.Keys.Get(ctx, id); err == nil {
			t.Error("the revoked key is still stored")
		}
		status, body := e.do(t, http.MethodDelete, "/system/keys/"+id, "")
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
		_, body = e.do(t, http.MethodGet, "/system/keys?namespace=team-a", "")
		if keys := MustDecode[[]map[string]any](t, body); len(keys) != 0 {
			t.Errorf("keys of team-a after the revocation = %s, want []", body)
		}
	})
}

func TestSecrets(t *testing.T) {
	e := MustOpenTenantGateway(t)
	e.mustCreateNamespace(t, "team-a")
	ctx := context.Background()
	const value = "s3cr3t-value-gw"
	noValue := func(t *testing.T, what string, body []byte) {
		t.Helper()
		if bytes.Contains(body, []byte(value)) || bytes.Contains(body, []byte("rawValue")) || bytes.Contains(body, []byte(`"value"`)) {
			t.Errorf("%s shows a value: %s", what, body)
		}
	}

	t.Run("Create", func(t *testing.T) {
		status, body := e.do(t, http.MethodPost, "/system/secrets", `{"name":"db","namespace":"team-a","value":"`+value+`"}`)
		if status != http.StatusCreated {
			t.Fatalf("create: %d %s, want 201", status, body)
		}
		noValue(t, "the create answer", body)
		got, err := e.tenancy.Secrets.Get(ctx, "team-a", "db")
		if err != nil || string(got) != value {
			t.Fatalf("stored %q, %v", got, err)
		}
		raw := []byte{0, 1, 2, 0xff}
		status, body = e.do(t, http.MethodPost, "/system/secrets", `{"name":"bin","namespace":"team-a","rawValue":"`+base64.StdEncoding.EncodeToString(raw)+`"}`)
		if status != http.StatusCreated {
			t.Fatalf("create rawValue: %d %s", status, body)
		}
		if got, err := e.tenancy.Secrets.Get(ctx, "team-a", "bin"); err != nil || !bytes.Equal(got, raw) {
			t.Errorf("rawValue stored as %v, %v; want %v", got, err, raw)
		}
		// Without a namespace: the default one.
		if status, body := e.do(t, http.MethodPost, "/system/secrets", `{"name":"db","value":"other"}`); status != http.StatusCreated {
			t.Fatalf("create in the default namespace: %d %s", status, body)
		}
	})
	t.Run("ErrExists", func(t *testing.T) {
		status, body := e.do(t, http.MethodPost, "/system/secrets", `{"name":"db","namespace":"team-a","value":"x"}`)
		wantError(t, status, body, http.StatusConflict, gust.ECONFLICT, "")
		noValue(t, "the conflict answer", body)
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		for _, tt := range []struct{ method, body, field string }{
			{http.MethodPost, `{"namespace":"team-a","value":"x"}`, "name"},
			{http.MethodPost, `{"name":"a.b","namespace":"team-a","value":"x"}`, "name"},
			{http.MethodPost, `{"name":"n","namespace":"team-a"}`, "value"},
			{http.MethodPost, `{"name":"n","namespace":"nope","value":"x"}`, "namespace"},
			{http.MethodPost, `{"name":"n","namespace":"team-a","rawValue":"not base64!"}`, ""},
			{http.MethodPut, `{"name":"n","namespace":"team-a"}`, "value"},
			{http.MethodDelete, `{"namespace":"team-a"}`, "name"},
		} {
			status, body := e.do(t, tt.method, "/system/secrets", tt.body)
			wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, tt.field)
		}
	})
	t.Run("List", func(t *testing.T) {
		status, body := e.do(t, http.MethodGet, "/system/secrets?namespace=team-a", "")
		if status != http.StatusOK {
			t.Fatalf("list: %d %s", status, body)
		}
		noValue(t, "the list", body)
		if got := MustDecode[[]map[string]string](t, body); fmt.Sprint(got) != "[map[name:bin namespace:team-a] map[name:db namespace:team-a]]" {
			t.Errorf("list = %s", body)
		}
		_, body = e.do(t, http.MethodGet, "/system/secrets", "")
		if got := MustDecode[[]map[string]string](t, body); len(got) != 1 || got[0]["namespace"] != gust.DefaultNamespace {
			t.Errorf("list of the default namespace = %s", body)
		}
		_, body = e.do(t, http.MethodGet, "/system/secrets?namespace=empty", "")
		if string(bytes.TrimSpace(body)) != "[]" {
			t.Errorf("list of a namespace without secrets = %s, want []", body)
		}
	})
	t.Run("Update", func(t *testing.T) {
		status, body := e.do(t, http.MethodPut, "/system/secrets", `{"name":"db","namespace":"team-a","value":"new-`+value+`"}`)
		if status != http.StatusOK {
			t.Fatalf("update: %d %s, want 200", status, body)
		}
		noValue(t, "the update answer", body)
		if got, _ := e.tenancy.Secrets.Get(ctx, "team-a", "db"); string(got) != "new-"+value {
			t.Errorf("after update: %q", got)
		}
		status, body = e.do(t, http.MethodPut, "/system/secrets", `{"name":"missing","namespace":"team-a","value":"x"}`)
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
	})
	t.Run("Delete", func(t *testing.T) {
		if status, body := e.do(t, http.MethodDelete, "/system/secrets", `{"name":"bin","namespace":"team-a"}`); status != http.StatusAccepted {
			t.Fatalf("delete: %d %s, want 202", status, body)
		}
		status, body := e.do(t, http.MethodDelete, "/system/secrets", `{"name":"bin","namespace":"team-a"}`)
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
		if names, _ := e.tenancy.Secrets.List(ctx, "team-a"); fmt.Sprint(names) != "[db]" {
			t.Errorf("after delete: %v, want [db]", names)
		}
	})
	t.Run("NotLogged", func(t *testing.T) {
		if len(e.logs.FilterMessage("secret created").All()) == 0 {
			t.Fatal("no \"secret created\" line: is the observer wired?")
		}
		e.noLogShows(t, value)
	})
}

func TestDeploy_Tenancy(t *testing.T) {
	e := MustOpenTenantGateway(t)
	e.mustCreateNamespace(t, "team-a")
	if status, body := e.do(t, http.MethodPost, "/system/secrets", `{"name":"db","namespace":"team-a","value":"v"}`); status != http.StatusCreated {
		t.Fatalf("create secret: %d %s", status, body)
	}
	for _, tt := range []struct{ name, spec, field string }{
		{"ErrNoNamespace", `{"service":"f","namespace":"nope","image":"img:1"}`, "namespace"},
		{"ErrNoSecret", `{"service":"f","namespace":"team-a","image":"img:1","secrets":["db","missing"]}`, "secrets"},
		{"ErrSecretOfOtherNamespace", `{"service":"f","image":"img:1","secrets":["db"]}`, "secrets"},
		{"ErrSecretName", `{"service":"f","namespace":"team-a","image":"img:1","secrets":["../etc"]}`, "secrets"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, method := range []string{http.MethodPost, http.MethodPut} {
				status, body := e.do(t, method, "/system/functions", tt.spec)
				wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, tt.field)
			}
			if fns, _ := e.state.Functions.List(context.Background(), ">"); len(fns) != 0 {
				t.Errorf("a refused deploy registered %v", fns)
			}
		})
	}
	t.Run("OK", func(t *testing.T) {
		status, body := e.do(t, http.MethodPost, "/system/functions", `{"service":"f","namespace":"team-a","image":"img:1","secrets":["db"]}`)
		if status != http.StatusAccepted {
			t.Fatalf("deploy: %d %s, want 202", status, body)
		}
		status, body = e.do(t, http.MethodGet, "/system/function/f?namespace=team-a", "")
		if status != http.StatusOK || bytes.Contains(body, []byte(`"v"`)) {
			t.Errorf("status of f: %d %s", status, body)
		}
		var st gust.FunctionStatus
		if err := json.Unmarshal(body, &st); err != nil || fmt.Sprint(st.Secrets) != "[db]" {
			t.Errorf("status of f names secrets %v (%v), want [db]", st.Secrets, err)
		}
	})
}

// Without a Tenancy the tenancy routes answer 404 and a deploy is checked
// as before.
func TestTenancyRoutes_NoTenancy(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	for _, rt := range []struct{ method, path, body string }{
		{http.MethodPost, "/system/namespace/", `{"name":"x"}`},
		{http.MethodGet, "/system/namespace/openfaas-fn", ""},
		{http.MethodGet, "/system/keys", ""},
		{http.MethodPost, "/system/keys", `{"namespace":"openfaas-fn","name":"k"}`},
		{http.MethodGet, "/system/secrets", ""},
		{http.MethodPost, "/system/secrets", `{"name":"s","value":"v"}`},
	} {
		status, _, body := MustDo(t, rt.method, e.url(rt.path), rt.body)
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
	}
	status, _, body := MustDo(t, http.MethodPost, e.url("/system/functions"), `{"service":"f","namespace":"anywhere","image":"img:1","secrets":["s"]}`)
	if status != http.StatusAccepted {
		t.Errorf("deploy without a Tenancy: %d %s, want 202", status, body)
	}
}
