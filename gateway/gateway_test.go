package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"go.uber.org/zap/zaptest"
)

// fakeInvoker is a function-field fake of gust.Invoker.
type fakeInvoker struct {
	InvokeFn func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error
}

func (f *fakeInvoker) Invoke(w http.ResponseWriter, r *http.Request, fn *gust.Function) error {
	return f.InvokeFn(w, r, fn)
}

var _ gust.Invoker = (*fakeInvoker)(nil)

// call is what the fake invoker saw of one request.
type call struct {
	Method, Path, RawPath, RawQuery, CallID, Auth, Body, Function string
	Version                                                       uint64
}

// fakeScheduler answers place requests on the bus and records them.
type fakeScheduler struct {
	mu    sync.Mutex
	reqs  []gust.PlaceRequest
	reply func(gust.PlaceRequest) gust.PlaceReply
}

// placeOK is the default answer: the function runs on worker w1.
func placeOK(gust.PlaceRequest) gust.PlaceReply {
	return gust.PlaceReply{Placement: gust.Placement{Workers: []string{"w1"}, Version: 1}}
}

// placeErr returns an answer that carries err.
func placeErr(err error) func(gust.PlaceRequest) gust.PlaceReply {
	return func(gust.PlaceRequest) gust.PlaceReply { return gust.PlaceReply{Reply: gust.ReplyOf(err)} }
}

func (f *fakeScheduler) setReply(fn func(gust.PlaceRequest) gust.PlaceReply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reply = fn
}

func (f *fakeScheduler) requests() []gust.PlaceRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// env is a gateway served by httptest, backed by an embedded NATS server,
// a fake scheduler on the bus and a fake local worker.
type env struct {
	state  *gust.State
	bus    *natsbus.Bus
	router *gateway.Router
	srv    *httptest.Server
	sched  *fakeScheduler
	gw     *gateway.Server

	inv *fakeInvoker

	mu       sync.Mutex
	calls    []call
	onInvoke func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error
}

// setOnInvoke replaces what the fake invoker does.
func (e *env) setOnInvoke(fn func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onInvoke = fn
}

// record is the fake invoker's default: it records the call and answers
// "hello from NAME".
func (e *env) record(w http.ResponseWriter, r *http.Request, fn *gust.Function) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.calls = append(e.calls, call{
		Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery,
		CallID: r.Header.Get(gust.HeaderCallID), Auth: r.Header.Get("Authorization"),
		Body: string(body), Function: fn.Key(), Version: fn.Version,
	})
	e.mu.Unlock()
	w.Header().Set("X-Fake-Function", fn.Spec.Service)
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "hello from %s", fn.Spec.Service)
	return nil
}

func (e *env) invocations() []call {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.calls)
}

// url returns the test server's URL for path.
func (e *env) url(path string) string { return e.srv.URL + path }

// MustOpenGateway starts everything an env needs and stops it when the
// test ends. cfg's zero fields take the defaults. Each of setup runs on
// the gateway before it serves (to give it a Tenancy, say).
func MustOpenGateway(tb testing.TB, cfg gateway.Config, setup ...func(*env, *gateway.Server)) *env {
	tb.Helper()
	ctx := context.Background()
	logger := zaptest.NewLogger(tb)
	st, bus := natsbustest.MustOpenState(tb)

	e := &env{state: st, bus: bus, sched: &fakeScheduler{reply: placeOK}}
	stop, err := bus.Handle(ctx, gust.SubjectPlace, "", func(_ context.Context, data []byte) any {
		var req gust.PlaceRequest
		if err := json.Unmarshal(data, &req); err != nil {
			return gust.PlaceReply{Reply: gust.ReplyOf(err)}
		}
		e.sched.mu.Lock()
		defer e.sched.mu.Unlock()
		e.sched.reqs = append(e.sched.reqs, req)
		return e.sched.reply(req)
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = stop() })

	e.onInvoke = e.record
	e.inv = &fakeInvoker{InvokeFn: func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error {
		e.mu.Lock()
		h := e.onInvoke
		e.mu.Unlock()
		return h(w, r, fn)
	}}
	e.router = gateway.NewRouter(st, bus, e.inv, "w1", logger)
	if err := e.router.Start(ctx); err != nil {
		tb.Fatalf("start router: %v", err)
	}
	tb.Cleanup(e.router.Close)

	def := gateway.DefaultConfig()
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = def.MaxBodyBytes
	}
	if cfg.DeployTimeout == 0 {
		cfg.DeployTimeout = 10 * time.Second
	}
	if cfg.Version == "" {
		cfg.Version = "test-1.2.3"
	}
	gw := gateway.New(cfg, st, bus, e.router, logger)
	e.gw = gw
	for _, f := range setup {
		f(e, gw)
	}
	// Close ends the server's background work (the placement after a
	// scale) and waits for it.
	tb.Cleanup(func() { _ = gw.Close(context.Background()) })
	e.srv = httptest.NewServer(gw.Handler())
	tb.Cleanup(e.srv.Close)
	return e
}

// MustDo sends one request; hdr is name, value pairs.
func MustDo(tb testing.TB, method, url, body string, hdr ...string) (int, http.Header, []byte) {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// MustDecode decodes a JSON body into T.
func MustDecode[T any](tb testing.TB, body []byte) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		tb.Fatalf("decode %s: %v", body, err)
	}
	return v
}

// MustDeploy deploys spec over HTTP and waits until the router knows it
// (until invoking it stops answering 404).
func MustDeploy(tb testing.TB, e *env, spec string) {
	tb.Helper()
	var s gust.FunctionSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		tb.Fatal(err)
	}
	s.Normalize()
	status, _, body := MustDo(tb, http.MethodPost, e.url("/system/functions"), spec)
	if status != http.StatusAccepted {
		tb.Fatalf("deploy %s: status %d %s, want 202", spec, status, body)
	}
	MustKnown(tb, e, s.Namespace, s.Service)
}

// MustKnown waits until the router has seen the function.
func MustKnown(tb testing.TB, e *env, ns, name string) {
	tb.Helper()
	check.For(tb, 5*time.Second, 10*time.Millisecond, func() error {
		if e.router.Function(ns, name) == nil {
			return fmt.Errorf("router does not know %s.%s", ns, name)
		}
		return nil
	})
}

// MustGetFunction reads a function from the registry.
func MustGetFunction(tb testing.TB, e *env, key string) gust.Function {
	tb.Helper()
	fn, _, err := e.state.Functions.Get(context.Background(), key)
	if err != nil {
		tb.Fatalf("get %s: %v", key, err)
	}
	return fn
}

// wantError checks an error answer's status, code and field.
func wantError(tb testing.TB, status int, body []byte, wantStatus int, wantCode, wantField string) {
	tb.Helper()
	if status != wantStatus {
		tb.Errorf("status = %d, want %d (body %s)", status, wantStatus, body)
	}
	eb := MustDecode[map[string]any](tb, body)
	if msg, _ := eb["error"].(string); msg == "" {
		tb.Errorf("body %s: want a non-empty \"error\"", body)
	}
	if got, _ := eb["code"].(string); got != wantCode {
		tb.Errorf("code = %q, want %q (body %s)", got, wantCode, body)
	}
	if got, _ := eb["field"].(string); got != wantField {
		tb.Errorf("field = %q, want %q (body %s)", got, wantField, body)
	}
}

func TestDeploy(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	ctx := context.Background()
	const key = "openfaas-fn.hello"

	t.Run("Create", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/functions"),
			`{"service":"hello","image":"img:1","labels":{"com.openfaas.scale.max":"3"}}`,
			"Content-Type", "application/json")
		if status != http.StatusAccepted {
			t.Fatalf("status = %d %s, want 202", status, body)
		}
		got := MustDecode[map[string]any](t, body)
		if got["service"] != "hello" || got["namespace"] != gust.DefaultNamespace || got["version"] != 1.0 {
			t.Errorf("answer = %s, want service hello, namespace %s, version 1", body, gust.DefaultNamespace)
		}
		fn := MustGetFunction(t, e, key)
		if fn.Spec.Namespace != gust.DefaultNamespace || fn.Spec.Image != "img:1" || fn.Version != 1 {
			t.Errorf("registry = %+v, want namespace %s image img:1 version 1", fn, gust.DefaultNamespace)
		}
		if fn.Spec.Labels[gust.LabelScaleMax] != "3" {
			t.Errorf("labels = %v, want the deployed ones", fn.Spec.Labels)
		}
		if fn.CreatedAt.IsZero() || !fn.UpdatedAt.Equal(fn.CreatedAt) {
			t.Errorf("CreatedAt %v UpdatedAt %v, want set and equal", fn.CreatedAt, fn.UpdatedAt)
		}
		reqs := e.sched.requests()
		if len(reqs) != 1 || reqs[0] != (gust.PlaceRequest{Namespace: gust.DefaultNamespace, Name: "hello"}) {
			t.Errorf("place requests = %+v, want one for %s", reqs, key)
		}
	})

	t.Run("Redeploy", func(t *testing.T) {
		first := MustGetFunction(t, e, key)
		first.Scaled = &gust.ScaleOrder{Replicas: 3, At: time.Now()}
		if _, err := e.state.Functions.Put(ctx, key, first); err != nil {
			t.Fatal(err)
		}
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/functions"), `{"service":"hello","image":"img:2"}`)
		if status != http.StatusAccepted {
			t.Fatalf("status = %d %s, want 202", status, body)
		}
		if got := MustDecode[map[string]any](t, body)["version"]; got != 2.0 {
			t.Errorf("answer version = %v, want 2", got)
		}
		fn := MustGetFunction(t, e, key)
		if fn.Version != 2 || fn.Spec.Image != "img:2" {
			t.Errorf("registry = version %d image %s, want 2 img:2", fn.Version, fn.Spec.Image)
		}
		if !fn.CreatedAt.Equal(first.CreatedAt) {
			t.Errorf("CreatedAt = %v, want %v (kept)", fn.CreatedAt, first.CreatedAt)
		}
		if fn.UpdatedAt.Before(first.UpdatedAt) {
			t.Errorf("UpdatedAt = %v, want >= %v", fn.UpdatedAt, first.UpdatedAt)
		}
		if fn.Scaled != nil {
			t.Errorf("Scaled = %+v, want nil after a deploy", *fn.Scaled)
		}
	})

	t.Run("Update", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodPut, e.url("/system/functions"), `{"service":"hello","image":"img:3"}`)
		if status != http.StatusAccepted {
			t.Fatalf("status = %d %s, want 202", status, body)
		}
		if fn := MustGetFunction(t, e, key); fn.Version != 3 || fn.Spec.Image != "img:3" {
			t.Errorf("registry = version %d image %s, want 3 img:3", fn.Version, fn.Spec.Image)
		}
	})

	t.Run("ErrUpdateMissing", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodPut, e.url("/system/functions"), `{"service":"nope","image":"img:1"}`)
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
		if _, _, err := e.state.Functions.Get(ctx, "openfaas-fn.nope"); !errors.Is(err, gust.ErrNotFound) {
			t.Errorf("PUT of a missing function created it: %v", err)
		}
	})

	t.Run("Namespace", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/functions"), `{"service":"hello","namespace":"team","image":"img:t"}`)
		if status != http.StatusAccepted {
			t.Fatalf("status = %d %s, want 202", status, body)
		}
		if fn := MustGetFunction(t, e, "team.hello"); fn.Version != 1 || fn.Spec.Image != "img:t" {
			t.Errorf("team.hello = version %d image %s, want 1 img:t", fn.Version, fn.Spec.Image)
		}
		if fn := MustGetFunction(t, e, key); fn.Spec.Image != "img:3" {
			t.Errorf("%s image = %s, want img:3 (untouched)", key, fn.Spec.Image)
		}
	})
}

func TestDeploy_Invalid(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	for _, tt := range []struct {
		name       string
		method     string
		body       string
		wantStatus int
		wantCode   string
		wantField  string
	}{
		{"BadName", http.MethodPost, `{"service":"Bad_Name!","image":"img:1"}`, 400, gust.EINVALID, "service"},
		{"Uppercase", http.MethodPost, `{"service":"Hello","image":"img:1"}`, 400, gust.EINVALID, "service"},
		{"NoService", http.MethodPost, `{"image":"img:1"}`, 400, gust.EINVALID, "service"},
		{"NoImage", http.MethodPost, `{"service":"hello"}`, 400, gust.EINVALID, "image"},
		{"BadNamespace", http.MethodPost, `{"service":"hello","namespace":"Team","image":"img:1"}`, 400, gust.EINVALID, "namespace"},
		{"BadLabel", http.MethodPost, `{"service":"hello","image":"img:1","labels":{"com.openfaas.scale.min":"lots"}}`, 400, gust.EINVALID, "labels.com.openfaas.scale.min"},
		{"MinAboveMax", http.MethodPost, `{"service":"hello","image":"img:1","labels":{"com.openfaas.scale.min":"5","com.openfaas.scale.max":"2"}}`, 400, gust.EINVALID, "labels.com.openfaas.scale.min"},
		{"BadMemory", http.MethodPost, `{"service":"hello","image":"img:1","limits":{"memory":"much"}}`, 400, gust.EINVALID, "limits.memory"},
		{"Malformed", http.MethodPost, `{"service":`, 400, gust.EINVALID, ""},
		{"NotJSON", http.MethodPost, `service=hello`, 400, gust.EINVALID, ""},
		{"WrongType", http.MethodPost, `{"service":5,"image":"img:1"}`, 400, gust.EINVALID, "service"},
		{"PutBadName", http.MethodPut, `{"service":"Bad_Name!","image":"img:1"}`, 400, gust.EINVALID, "service"},
		{"TooLarge", http.MethodPost, `{"service":"hello","image":"` + strings.Repeat("x", 1<<20) + `"}`, 413, gust.ETOOLARGE, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := MustDo(t, tt.method, e.url("/system/functions"), tt.body)
			wantError(t, status, body, tt.wantStatus, tt.wantCode, tt.wantField)
			if got := hdr.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
		})
	}
	if all, err := e.state.Functions.List(context.Background(), ">"); err != nil || len(all) != 0 {
		t.Errorf("registry after refused deploys = %v, %v; want empty", all, err)
	}
	if reqs := e.sched.requests(); len(reqs) != 0 {
		t.Errorf("place requests = %+v, want none for refused deploys", reqs)
	}
}

// TestDeploy_Refused covers deploys the scheduler refuses as invalid (an
// image that cannot be had): the registry is left as it was.
func TestDeploy_Refused(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	ctx := context.Background()
	const key = "openfaas-fn.hello"
	refuse := placeErr(gust.Invalidf("image", "pull img:bad: not found"))

	t.Run("New", func(t *testing.T) {
		e.sched.setReply(refuse)
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/functions"), `{"service":"hello","image":"img:bad"}`)
		wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, "image")
		if got := MustDecode[map[string]any](t, body)["error"]; got != "pull img:bad: not found" {
			t.Errorf("error = %q, want the scheduler's message", got)
		}
		if _, _, err := e.state.Functions.Get(ctx, key); !errors.Is(err, gust.ErrNotFound) {
			t.Errorf("registry after refused deploy: %v, want ErrNotFound", err)
		}
	})

	t.Run("CreateAfterRefused", func(t *testing.T) {
		e.sched.setReply(placeOK)
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/functions"), `{"service":"hello","image":"img:1"}`)
		if status != http.StatusAccepted {
			t.Fatalf("status = %d %s, want 202", status, body)
		}
		if fn := MustGetFunction(t, e, key); fn.Version != 1 || fn.Spec.Image != "img:1" {
			t.Errorf("registry = version %d image %s, want 1 img:1", fn.Version, fn.Spec.Image)
		}
	})

	t.Run("Redeploy", func(t *testing.T) {
		before := MustGetFunction(t, e, key)
		e.sched.setReply(refuse)
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/functions"), `{"service":"hello","image":"img:bad"}`)
		wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, "image")
		fn := MustGetFunction(t, e, key)
		if fn.Version != before.Version || fn.Spec.Image != before.Spec.Image || !fn.CreatedAt.Equal(before.CreatedAt) {
			t.Errorf("registry after refused redeploy = version %d image %s, want version %d image %s",
				fn.Version, fn.Spec.Image, before.Version, before.Spec.Image)
		}
	})

	t.Run("Unavailable", func(t *testing.T) {
		// No worker can take it now: the function stays registered and
		// gets placed later.
		e.sched.setReply(placeErr(gust.Errorf(gust.EUNAVAILABLE, "no worker")))
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/functions"), `{"service":"later","image":"img:1"}`)
		if status != http.StatusAccepted {
			t.Fatalf("status = %d %s, want 202", status, body)
		}
		if fn := MustGetFunction(t, e, "openfaas-fn.later"); fn.Version != 1 {
			t.Errorf("version = %d, want 1", fn.Version)
		}
	})

	t.Run("NoRoom", func(t *testing.T) {
		// No worker has the memory for it: the caller is told, and the
		// registry is left as it was.
		const msg = "no worker has room for openfaas-fn.big: 1 warm instance(s) of 8192 MiB need 8192 MiB of memory, and the ready worker with the most has 512 MiB free (w1)"
		e.sched.setReply(placeErr(&gust.Error{Code: gust.EUNAVAILABLE, Field: "memory", Message: msg}))
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/functions"), `{"service":"big","image":"img:1","limits":{"memory":"8Gi"}}`)
		wantError(t, status, body, http.StatusServiceUnavailable, gust.EUNAVAILABLE, "memory")
		if got := MustDecode[map[string]any](t, body)["error"]; got != msg {
			t.Errorf("error = %q, want the scheduler's message", got)
		}
		if _, _, err := e.state.Functions.Get(ctx, "openfaas-fn.big"); !errors.Is(err, gust.ErrNotFound) {
			t.Errorf("registry after a deploy no worker has room for: %v, want ErrNotFound", err)
		}
	})
}

func TestFunctions_Get(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	ctx := context.Background()

	t.Run("Empty", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url("/system/functions"), "")
		if status != http.StatusOK || strings.TrimSpace(string(body)) != "[]" {
			t.Errorf("GET /system/functions = %d %s, want 200 []", status, body)
		}
	})

	MustDeploy(t, e, `{"service":"hello","image":"img:hello","labels":{"a":"b"},"envProcess":"./run"}`)
	MustDeploy(t, e, `{"service":"alpha","image":"img:alpha"}`)
	MustDeploy(t, e, `{"service":"other","namespace":"team","image":"img:other"}`)
	for key, p := range map[string]gust.PoolStatus{
		"openfaas-fn.hello.w1": {Worker: "w1", Replicas: 2, Available: 1, Invocations: 5},
		"openfaas-fn.hello.w2": {Worker: "w2", Replicas: 1, Available: 1, Invocations: 7},
		"team.other.w1":        {Worker: "w1", Replicas: 4, Available: 4, Invocations: 100},
	} {
		if _, err := e.state.Status.Put(ctx, key, p); err != nil {
			t.Fatal(err)
		}
	}
	created := MustGetFunction(t, e, "openfaas-fn.hello").CreatedAt

	t.Run("List", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url("/system/functions"), "")
		if status != http.StatusOK {
			t.Fatalf("status = %d %s, want 200", status, body)
		}
		list := MustDecode[[]map[string]any](t, body)
		var names []string
		for _, f := range list {
			names = append(names, f["name"].(string))
		}
		if got, want := fmt.Sprint(names), "[alpha hello]"; got != want {
			t.Fatalf("names = %s, want %s (sorted, default namespace only)", got, want)
		}
		hello := list[1]
		for _, k := range []string{"name", "image", "namespace", "replicas", "availableReplicas", "invocationCount", "createdAt"} {
			if _, ok := hello[k]; !ok {
				t.Errorf("field %q missing in %v", k, hello)
			}
		}
		if hello["image"] != "img:hello" || hello["namespace"] != gust.DefaultNamespace || hello["envProcess"] != "./run" {
			t.Errorf("hello = %v, want image img:hello, namespace %s, envProcess ./run", hello, gust.DefaultNamespace)
		}
		if hello["replicas"] != 3.0 || hello["availableReplicas"] != 2.0 || hello["invocationCount"] != 12.0 {
			t.Errorf("hello replicas %v available %v invocations %v, want 3 2 12 (summed over workers)",
				hello["replicas"], hello["availableReplicas"], hello["invocationCount"])
		}
		if got, err := time.Parse(time.RFC3339Nano, hello["createdAt"].(string)); err != nil || !got.Equal(created) {
			t.Errorf("createdAt = %v (%v), want %v", hello["createdAt"], err, created)
		}
		if labels, _ := hello["labels"].(map[string]any); labels["a"] != "b" {
			t.Errorf("labels = %v, want a=b", hello["labels"])
		}
		alpha := list[0]
		if alpha["replicas"] != 0.0 || alpha["availableReplicas"] != 0.0 || alpha["invocationCount"] != 0.0 {
			t.Errorf("alpha = %v, want zero replicas and invocations (no pool status)", alpha)
		}
	})

	t.Run("ListNamespace", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url("/system/functions?namespace=team"), "")
		if status != http.StatusOK {
			t.Fatalf("status = %d %s, want 200", status, body)
		}
		list := MustDecode[[]gust.FunctionStatus](t, body)
		if len(list) != 1 || list[0].Name != "other" || list[0].Namespace != "team" || list[0].Replicas != 4 || list[0].InvocationCount != 100 {
			t.Errorf("team functions = %+v, want other with 4 replicas and 100 invocations", list)
		}
	})

	t.Run("ErrListNamespace", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url("/system/functions?namespace=Bad_NS"), "")
		wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, "namespace")
	})

	t.Run("One", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url("/system/function/hello"), "")
		if status != http.StatusOK {
			t.Fatalf("status = %d %s, want 200", status, body)
		}
		got := MustDecode[map[string]any](t, body)
		for _, k := range []string{"name", "image", "namespace", "replicas", "availableReplicas", "invocationCount", "createdAt"} {
			if _, ok := got[k]; !ok {
				t.Errorf("field %q missing in %s", k, body)
			}
		}
		if got["name"] != "hello" || got["replicas"] != 3.0 || got["availableReplicas"] != 2.0 || got["invocationCount"] != 12.0 {
			t.Errorf("hello = %s, want replicas 3, availableReplicas 2, invocationCount 12", body)
		}
	})

	t.Run("OneNamespace", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url("/system/function/other?namespace=team"), "")
		if status != http.StatusOK {
			t.Fatalf("status = %d %s, want 200", status, body)
		}
		if got := MustDecode[gust.FunctionStatus](t, body); got.Name != "other" || got.Replicas != 4 {
			t.Errorf("other = %+v, want 4 replicas", got)
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url("/system/function/nope"), "")
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
		status, _, body = MustDo(t, http.MethodGet, e.url("/system/function/other"), "") // other is in team
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
	})

	t.Run("ErrBadName", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url("/system/function/Bad_Name"), "")
		wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, "name")
	})
}

func TestDeleteFunction(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	ctx := context.Background()
	MustDeploy(t, e, `{"service":"hello","image":"img:1"}`)
	MustDeploy(t, e, `{"service":"keep","image":"img:1"}`)
	if _, err := e.state.Placements.Put(ctx, "openfaas-fn.hello", gust.Placement{Workers: []string{"w1"}, Version: 1}); err != nil {
		t.Fatal(err)
	}

	t.Run("OK", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodDelete, e.url("/system/functions"), `{"functionName":"hello"}`)
		if status != http.StatusAccepted {
			t.Fatalf("status = %d %s, want 202", status, body)
		}
		if _, _, err := e.state.Functions.Get(ctx, "openfaas-fn.hello"); !errors.Is(err, gust.ErrNotFound) {
			t.Errorf("function after delete: %v, want ErrNotFound", err)
		}
		if _, _, err := e.state.Placements.Get(ctx, "openfaas-fn.hello"); !errors.Is(err, gust.ErrNotFound) {
			t.Errorf("placement after delete: %v, want ErrNotFound", err)
		}
		MustGetFunction(t, e, "openfaas-fn.keep")
		status, _, body = MustDo(t, http.MethodGet, e.url("/system/function/hello"), "")
		wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
		check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
			if status, _, _ := MustDo(t, http.MethodGet, e.url("/function/hello"), ""); status != http.StatusNotFound {
				return fmt.Errorf("invoke after delete: status %d, want 404", status)
			}
			return nil
		})
	})

	for _, tt := range []struct {
		name       string
		url, body  string
		wantStatus int
		wantCode   string
		wantField  string
	}{
		{"ErrUnknown", "/system/functions", `{"functionName":"nope"}`, 404, gust.ENOTFOUND, ""},
		{"ErrOtherNamespace", "/system/functions", `{"functionName":"keep","namespace":"team"}`, 404, gust.ENOTFOUND, ""},
		{"ErrOtherNamespaceQuery", "/system/functions?namespace=team", `{"functionName":"keep"}`, 404, gust.ENOTFOUND, ""},
		{"ErrNoName", "/system/functions", `{}`, 400, gust.EINVALID, "functionName"},
		{"ErrBadNamespace", "/system/functions", `{"functionName":"keep","namespace":"Bad!"}`, 400, gust.EINVALID, "namespace"},
		{"ErrMalformed", "/system/functions", `{"functionName":`, 400, gust.EINVALID, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := MustDo(t, http.MethodDelete, e.url(tt.url), tt.body)
			wantError(t, status, body, tt.wantStatus, tt.wantCode, tt.wantField)
			MustGetFunction(t, e, "openfaas-fn.keep")
		})
	}
}

func TestScaleFunction(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	MustDeploy(t, e, `{"service":"hello","image":"img:1","labels":{"com.openfaas.scale.max":"2"}}`)
	placed := len(e.sched.requests())

	t.Run("OK", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/scale-function/hello"), `{"serviceName":"hello","replicas":3}`)
		if status != http.StatusAccepted {
			t.Fatalf("status = %d %s, want 202", status, body)
		}
		// Above its max of 2: its max. An order, not a minimum.
		fn := MustGetFunction(t, e, "openfaas-fn.hello")
		if fn.Scaled == nil || fn.Scaled.Replicas != 2 || fn.Scaled.At.IsZero() {
			t.Fatalf("Scaled = %+v, want 2 replicas with a time", fn.Scaled)
		}
		if c := fn.Config(); c.Min != 0 || c.Max != 2 {
			t.Errorf("Config Min, Max = %d, %d, want 0, 2 (unchanged)", c.Min, c.Max)
		}
		// Status shows the count at once, before any pool reports it.
		status, _, body = MustDo(t, http.MethodGet, e.url("/system/function/hello"), "")
		if st := MustDecode[gust.FunctionStatus](t, body); status != http.StatusOK || st.Replicas != 2 {
			t.Errorf("status %d replicas %d, want 200 and 2 at once", status, st.Replicas)
		}
		if fn.Version != 1 {
			t.Errorf("Version = %d, want 1 (scaling is not a deploy)", fn.Version)
		}
		// The gateway asks the scheduler to re-place, and waits for the
		// decision only.
		reqs := e.sched.requests()
		if len(reqs) <= placed || !reqs[len(reqs)-1].NoWait {
			t.Errorf("place requests = %+v, want one more than %d, with NoWait", reqs, placed)
		}
	})

	t.Run("Zero", func(t *testing.T) {
		n := len(e.sched.requests())
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/scale-function/hello"), `{"replicas":0}`)
		if status != http.StatusAccepted {
			t.Fatalf("status = %d %s, want 202", status, body)
		}
		if fn := MustGetFunction(t, e, "openfaas-fn.hello"); fn.Scaled == nil || fn.Scaled.Replicas != 0 {
			t.Errorf("Scaled = %+v, want 0", fn.Scaled)
		}
		if len(e.sched.requests()) <= n {
			t.Errorf("no place request after scale")
		}
	})

	t.Run("NoRoom", func(t *testing.T) {
		// No worker has room for the larger minimum: the caller is
		// told, and the minimum stays as it was.
		e.sched.setReply(placeErr(&gust.Error{Code: gust.EUNAVAILABLE, Field: "memory", Message: "no worker has room for openfaas-fn.hello"}))
		defer e.sched.setReply(placeOK)
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/scale-function/hello"), `{"replicas":2}`)
		wantError(t, status, body, http.StatusServiceUnavailable, gust.EUNAVAILABLE, "memory")
		if fn := MustGetFunction(t, e, "openfaas-fn.hello"); fn.Scaled == nil || fn.Scaled.Replicas != 0 {
			t.Errorf("Scaled = %+v, want 0 (as before the refused scale)", fn.Scaled)
		}
	})

	for _, tt := range []struct {
		name, path, body string
		wantStatus       int
		wantCode         string
		wantField        string
	}{
		{"ErrNegative", "/system/scale-function/hello", `{"replicas":-1}`, 400, gust.EINVALID, "replicas"},
		{"ErrTooMany", "/system/scale-function/hello", `{"replicas":1001}`, 400, gust.EINVALID, "replicas"},
		{"ErrMissing", "/system/scale-function/hello", `{"serviceName":"hello"}`, 400, gust.EINVALID, "replicas"},
		{"ErrWrongType", "/system/scale-function/hello", `{"replicas":"3"}`, 400, gust.EINVALID, "replicas"},
		{"ErrMalformed", "/system/scale-function/hello", `{`, 400, gust.EINVALID, ""},
		{"ErrUnknown", "/system/scale-function/nope", `{"replicas":1}`, 404, gust.ENOTFOUND, ""},
		{"ErrBadNamespaceQuery", "/system/scale-function/hello?namespace=Bad!", `{"replicas":1}`, 400, gust.EINVALID, "namespace"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := MustDo(t, http.MethodPost, e.url(tt.path), tt.body)
			wantError(t, status, body, tt.wantStatus, tt.wantCode, tt.wantField)
		})
	}
}

// TestScaleFunction_BadNamespaceBody checks that a namespace given in the
// body is validated like one in the query.
func TestScaleFunction_BadNamespaceBody(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	MustDeploy(t, e, `{"service":"hello","image":"img:1"}`)
	for _, ns := range []string{"Bad!", "*", "a b"} {
		status, _, body := MustDo(t, http.MethodPost, e.url("/system/scale-function/hello"), `{"replicas":1,"namespace":"`+ns+`"}`)
		wantError(t, status, body, http.StatusBadRequest, gust.EINVALID, "namespace")
	}
}

func TestSystem(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{Version: "9.8.7"})

	t.Run("Healthz", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url("/healthz"), "")
		if status != http.StatusOK || string(body) != "OK\n" {
			t.Errorf("GET /healthz = %d %q, want 200 \"OK\\n\"", status, body)
		}
	})

	t.Run("Info", func(t *testing.T) {
		status, hdr, body := MustDo(t, http.MethodGet, e.url("/system/info"), "")
		if status != http.StatusOK {
			t.Fatalf("status = %d %s, want 200", status, body)
		}
		if got := hdr.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q, want application/json", got)
		}
		var info struct {
			Provider struct {
				Provider      string `json:"provider"`
				Orchestration string `json:"orchestration"`
				Version       struct {
					Release string `json:"release"`
				} `json:"version"`
			} `json:"provider"`
			Version struct {
				Release string `json:"release"`
			} `json:"version"`
			Arch string `json:"arch"`
		}
		if err := json.Unmarshal(body, &info); err != nil {
			t.Fatal(err)
		}
		if info.Provider.Provider != "gust" || info.Provider.Version.Release != "9.8.7" || info.Version.Release != "9.8.7" || info.Arch == "" {
			t.Errorf("info = %s, want provider gust, release 9.8.7 and an arch", body)
		}
	})

	t.Run("Namespaces", func(t *testing.T) {
		status, _, body := MustDo(t, http.MethodGet, e.url("/system/namespaces"), "")
		if got := fmt.Sprint(MustDecode[[]string](t, body)); status != http.StatusOK || got != "[openfaas-fn]" {
			t.Errorf("namespaces = %d %s, want 200 [openfaas-fn]", status, got)
		}
		MustDeploy(t, e, `{"service":"a","namespace":"zeta","image":"img:1"}`)
		MustDeploy(t, e, `{"service":"b","namespace":"alpha","image":"img:1"}`)
		MustDeploy(t, e, `{"service":"c","namespace":"alpha","image":"img:1"}`)
		MustDeploy(t, e, `{"service":"d","image":"img:1"}`)
		status, _, body = MustDo(t, http.MethodGet, e.url("/system/namespaces"), "")
		if got := fmt.Sprint(MustDecode[[]string](t, body)); status != http.StatusOK || got != "[openfaas-fn alpha zeta]" {
			t.Errorf("namespaces = %d %s, want 200 [openfaas-fn alpha zeta]", status, got)
		}
	})

	t.Run("EmptyBearer", func(t *testing.T) {
		for _, auth := range []string{"Bearer ", "Bearer"} {
			status, _, body := MustDo(t, http.MethodGet, e.url("/system/functions"), "", "Authorization", auth)
			if status != http.StatusOK {
				t.Errorf("GET /system/functions with Authorization %q = %d %s, want 200", auth, status, body)
			}
			status, _, body = MustDo(t, http.MethodPost, e.url("/system/functions"), `{"service":"authed","image":"img:1"}`, "Authorization", auth)
			if status != http.StatusAccepted {
				t.Errorf("POST /system/functions with Authorization %q = %d %s, want 202", auth, status, body)
			}
		}
	})
}

func TestInvoke(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{MaxBodyBytes: 16})
	MustDeploy(t, e, `{"service":"hello","image":"img:1"}`)
	MustDeploy(t, e, `{"service":"hello","namespace":"team","image":"img:1"}`)

	last := func(t *testing.T) call {
		t.Helper()
		calls := e.invocations()
		if len(calls) == 0 {
			t.Fatal("the invoker was not called")
		}
		return calls[len(calls)-1]
	}

	t.Run("Path", func(t *testing.T) {
		for _, tt := range []struct {
			url                       string
			wantFn, wantPath, wantRaw string
			wantQuery                 string
		}{
			{"/function/hello/a/b?x=1", "openfaas-fn.hello", "/a/b", "/a/b", "x=1"},
			{"/function/hello", "openfaas-fn.hello", "/", "/", ""},
			{"/function/hello/", "openfaas-fn.hello", "/", "/", ""},
			{"/function/hello?x=1&y=%20", "openfaas-fn.hello", "/", "/", "x=1&y=%20"},
			{"/function/hello.openfaas-fn/x", "openfaas-fn.hello", "/x", "/x", ""},
			{"/function/hello.team/x/y?z", "team.hello", "/x/y", "/x/y", "z"},
			{"/function/hello/a%2Fb%20c", "openfaas-fn.hello", "/a/b c", "/a%2Fb%20c", ""},
		} {
			t.Run(tt.url, func(t *testing.T) {
				status, hdr, body := MustDo(t, http.MethodGet, e.url(tt.url), "")
				if status != http.StatusOK || string(body) != "hello from hello" {
					t.Fatalf("status = %d %q, want 200 from the invoker", status, body)
				}
				if hdr.Get("X-Fake-Function") != "hello" {
					t.Errorf("answer headers = %v, want the invoker's", hdr)
				}
				c := last(t)
				if c.Function != tt.wantFn || c.Path != tt.wantPath || c.RawQuery != tt.wantQuery {
					t.Errorf("invoker saw %s path %q query %q, want %s %q %q", c.Function, c.Path, c.RawQuery, tt.wantFn, tt.wantPath, tt.wantQuery)
				}
				if got := c.RawPath; got != tt.wantRaw && !(got == "" && tt.wantRaw == tt.wantPath) {
					t.Errorf("invoker saw raw path %q, want %q", got, tt.wantRaw)
				}
			})
		}
	})

	t.Run("MethodAndBody", func(t *testing.T) {
		status, _, _ := MustDo(t, http.MethodPost, e.url("/function/hello"), "ping", "Authorization", "Bearer secret")
		if status != http.StatusOK {
			t.Fatalf("status = %d, want 200", status)
		}
		c := last(t)
		if c.Method != http.MethodPost || c.Body != "ping" || c.Auth != "Bearer secret" {
			t.Errorf("invoker saw %s %q auth %q, want POST \"ping\" and the caller's Authorization", c.Method, c.Body, c.Auth)
		}
	})

	t.Run("CallIDGenerated", func(t *testing.T) {
		MustDo(t, http.MethodGet, e.url("/function/hello"), "")
		id1 := last(t).CallID
		MustDo(t, http.MethodGet, e.url("/function/hello"), "")
		id2 := last(t).CallID
		if id1 == "" || id2 == "" || id1 == id2 {
			t.Errorf("generated call ids %q, %q; want two different non-empty ids", id1, id2)
		}
	})

	t.Run("CallIDKept", func(t *testing.T) {
		MustDo(t, http.MethodGet, e.url("/function/hello"), "", gust.HeaderCallID, "my-call-1")
		if got := last(t).CallID; got != "my-call-1" {
			t.Errorf("call id = %q, want %q", got, "my-call-1")
		}
	})

	t.Run("ErrUnknown", func(t *testing.T) {
		n := len(e.invocations())
		for _, path := range []string{"/function/nope", "/function/nope/x", "/function/hello.nons", "/function/", "/function/Hello"} {
			status, _, body := MustDo(t, http.MethodGet, e.url(path), "")
			wantError(t, status, body, http.StatusNotFound, gust.ENOTFOUND, "")
		}
		if got := len(e.invocations()); got != n {
			t.Errorf("invoker called %d times for unknown functions", got-n)
		}
	})

	t.Run("ErrTooLarge", func(t *testing.T) {
		n := len(e.invocations())
		status, _, body := MustDo(t, http.MethodPost, e.url("/function/hello"), strings.Repeat("x", 17))
		wantError(t, status, body, http.StatusRequestEntityTooLarge, gust.ETOOLARGE, "")
		if got := len(e.invocations()); got != n {
			t.Errorf("invoker called for a body over the limit")
		}
		status, _, _ = MustDo(t, http.MethodPost, e.url("/function/hello"), strings.Repeat("x", 16))
		if status != http.StatusOK {
			t.Errorf("body at the limit: status %d, want 200", status)
		}
	})

	t.Run("ErrTooLargeChunked", func(t *testing.T) {
		// Without Content-Length the limit holds while the body is read.
		readErr := make(chan error, 1)
		e.setOnInvoke(func(w http.ResponseWriter, r *http.Request, fn *gust.Function) error {
			_, err := io.ReadAll(r.Body)
			readErr <- err
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return nil
		})
		defer e.setOnInvoke(e.record)
		req, err := http.NewRequest(http.MethodPost, e.url("/function/hello"), io.MultiReader(strings.NewReader(strings.Repeat("x", 40))))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.ContentLength != 0 && req.ContentLength != -1 {
			t.Fatalf("request has Content-Length %d; the test needs none", req.ContentLength)
		}
		var mbe *http.MaxBytesError
		if err := <-readErr; !errors.As(err, &mbe) || mbe.Limit != 16 {
			t.Errorf("invoker's body read = %v, want *http.MaxBytesError with limit 16", err)
		}
	})
}

func TestInvoke_Activation(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	ctx := context.Background()
	fn := gust.Function{Spec: gust.FunctionSpec{Service: "hello", Namespace: gust.DefaultNamespace, Image: "img:1"}, Version: 1}

	t.Run("FromPlacement", func(t *testing.T) {
		// A placement on w1 is in the routing table: no scheduler needed.
		e.sched.setReply(placeErr(gust.Errorf(gust.EUNAVAILABLE, "scheduler down")))
		if _, err := e.state.Placements.Put(ctx, fn.Key(), gust.Placement{Workers: []string{"w1"}, Version: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.state.Functions.Put(ctx, fn.Key(), fn); err != nil {
			t.Fatal(err)
		}
		MustKnown(t, e, gust.DefaultNamespace, "hello")
		check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
			if status, _, body := MustDo(t, http.MethodGet, e.url("/function/hello"), ""); status != http.StatusOK {
				return fmt.Errorf("status %d %s, want 200", status, body)
			}
			return nil
		})
	})

	t.Run("ErrNotPlaced", func(t *testing.T) {
		if err := e.state.Placements.Delete(ctx, fn.Key()); err != nil {
			t.Fatal(err)
		}
		n := len(e.sched.requests())
		check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
			status, _, body := MustDo(t, http.MethodGet, e.url("/function/hello"), "")
			if status != http.StatusServiceUnavailable {
				return fmt.Errorf("status %d %s, want 503", status, body)
			}
			wantError(t, status, body, http.StatusServiceUnavailable, gust.EUNAVAILABLE, "")
			return nil
		})
		if len(e.sched.requests()) <= n {
			t.Errorf("no place request for a function without placement")
		}
	})

	t.Run("Activated", func(t *testing.T) {
		e.sched.setReply(placeOK)
		n := len(e.sched.requests())
		status, _, body := MustDo(t, http.MethodGet, e.url("/function/hello"), "")
		if status != http.StatusOK || string(body) != "hello from hello" {
			t.Fatalf("status = %d %q, want 200 from the invoker", status, body)
		}
		reqs := e.sched.requests()
		if len(reqs) != n+1 || reqs[n] != (gust.PlaceRequest{Namespace: gust.DefaultNamespace, Name: "hello"}) {
			t.Errorf("place requests = %+v, want one more for hello", reqs)
		}
	})
}

func TestInvoke_InvokerError(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	MustDeploy(t, e, `{"service":"hello","image":"img:1"}`)
	for _, tt := range []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
	}{
		{"Draining", fmt.Errorf("worker w1: %w", gust.Errorf(gust.EUNAVAILABLE, "worker is draining")), 503, gust.EUNAVAILABLE},
		{"Internal", errors.New("secret detail"), 500, gust.EINTERNAL},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e.setOnInvoke(func(http.ResponseWriter, *http.Request, *gust.Function) error { return tt.err })
			status, _, body := MustDo(t, http.MethodGet, e.url("/function/hello"), "")
			wantError(t, status, body, tt.wantStatus, tt.wantCode, "")
			eb := MustDecode[gust.ErrorBody](t, body)
			if tt.wantCode == gust.EINTERNAL {
				if eb.ID == "" || strings.Contains(string(body), "secret") {
					t.Errorf("internal error body = %s, want an id and no internal detail", body)
				}
			} else if eb.ID != "" {
				t.Errorf("id = %q, want none for a non-internal error", eb.ID)
			}
		})
	}
}

// wantGustError checks that err is a *gust.Error with code and field.
func wantGustError(tb testing.TB, err error, code, field string) {
	tb.Helper()
	var ge *gust.Error
	if !errors.As(err, &ge) {
		tb.Fatalf("err = %T %v, want *gust.Error", err, err)
	}
	if ge.Code != code || ge.Field != field || ge.Message == "" {
		tb.Errorf("err = {code %q field %q message %q}, want code %q field %q and a message", ge.Code, ge.Field, ge.Message, code, field)
	}
}

func TestClient(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	ctx := context.Background()
	c := gateway.NewClient(e.srv.URL + "/")

	t.Run("Deploy", func(t *testing.T) {
		if err := c.Deploy(ctx, gust.FunctionSpec{Service: "hello", Image: "img:1"}, false); err != nil {
			t.Fatalf("Deploy: %v", err)
		}
		if err := c.Deploy(ctx, gust.FunctionSpec{Service: "hello", Image: "img:2"}, true); err != nil {
			t.Fatalf("Deploy update: %v", err)
		}
		if err := c.Deploy(ctx, gust.FunctionSpec{Service: "other", Namespace: "team", Image: "img:o"}, false); err != nil {
			t.Fatalf("Deploy in team: %v", err)
		}
		if fn := MustGetFunction(t, e, "openfaas-fn.hello"); fn.Version != 2 || fn.Spec.Image != "img:2" {
			t.Errorf("registry = version %d image %s, want 2 img:2", fn.Version, fn.Spec.Image)
		}
	})

	t.Run("ErrDeploy", func(t *testing.T) {
		wantGustError(t, c.Deploy(ctx, gust.FunctionSpec{Service: "Bad_Name!", Image: "img:1"}, false), gust.EINVALID, "service")
		wantGustError(t, c.Deploy(ctx, gust.FunctionSpec{Service: "nope", Image: "img:1"}, true), gust.ENOTFOUND, "")
		e.sched.setReply(placeErr(gust.Invalidf("image", "pull failed")))
		defer e.sched.setReply(placeOK)
		wantGustError(t, c.Deploy(ctx, gust.FunctionSpec{Service: "refused", Image: "img:bad"}, false), gust.EINVALID, "image")
	})

	t.Run("Functions", func(t *testing.T) {
		list, err := c.Functions(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Name != "hello" || list[0].Image != "img:2" || list[0].Namespace != gust.DefaultNamespace {
			t.Errorf("Functions() = %+v, want hello img:2", list)
		}
		list, err = c.Functions(ctx, "team")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Name != "other" {
			t.Errorf("Functions(team) = %+v, want other", list)
		}
		_, err = c.Functions(ctx, "Bad NS")
		wantGustError(t, err, gust.EINVALID, "namespace")
	})

	t.Run("Function", func(t *testing.T) {
		if _, err := e.state.Status.Put(ctx, "openfaas-fn.hello.w1", gust.PoolStatus{Worker: "w1", Replicas: 2, Available: 2, Invocations: 9}); err != nil {
			t.Fatal(err)
		}
		st, err := c.Function(ctx, "", "hello")
		if err != nil {
			t.Fatal(err)
		}
		if st.Name != "hello" || st.Image != "img:2" || st.Replicas != 2 || st.AvailableReplicas != 2 || st.InvocationCount != 9 || st.CreatedAt.IsZero() {
			t.Errorf("Function() = %+v, want hello img:2 with 2 replicas and 9 invocations", st)
		}
		st, err = c.Function(ctx, "team", "other")
		if err != nil || st.Name != "other" {
			t.Errorf("Function(team, other) = %+v, %v", st, err)
		}
		_, err = c.Function(ctx, "", "nope")
		wantGustError(t, err, gust.ENOTFOUND, "")
	})

	t.Run("Scale", func(t *testing.T) {
		n := len(e.sched.requests())
		if err := c.Scale(ctx, "", "hello", 4); err != nil {
			t.Fatal(err)
		}
		if fn := MustGetFunction(t, e, "openfaas-fn.hello"); fn.Scaled == nil || fn.Scaled.Replicas != 4 {
			t.Errorf("Scaled = %+v, want 4", fn.Scaled)
		}
		wantGustError(t, c.Scale(ctx, "", "hello", -2), gust.EINVALID, "replicas")
		wantGustError(t, c.Scale(ctx, "", "nope", 1), gust.ENOTFOUND, "")
		if len(e.sched.requests()) <= n {
			t.Errorf("no place request after scale")
		}
	})

	t.Run("Invoke", func(t *testing.T) {
		MustKnown(t, e, gust.DefaultNamespace, "hello")
		resp, err := c.Invoke(ctx, http.MethodPost, "hello", "", "/p/q", "a=1", strings.NewReader("body"), http.Header{gust.HeaderCallID: {"cid"}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(b) != "hello from hello" {
			t.Fatalf("Invoke = %d %q, want 200 from the invoker", resp.StatusCode, b)
		}
		calls := e.invocations()
		got := calls[len(calls)-1]
		if got.Path != "/p/q" || got.RawQuery != "a=1" || got.Body != "body" || got.CallID != "cid" {
			t.Errorf("invoker saw %+v, want path /p/q query a=1 body \"body\" call id cid", got)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		if err := c.Delete(ctx, "", "hello"); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, "team", "other"); err != nil {
			t.Fatal(err)
		}
		_, err := c.Function(ctx, "", "hello")
		wantGustError(t, err, gust.ENOTFOUND, "")
		wantGustError(t, c.Delete(ctx, "", "hello"), gust.ENOTFOUND, "")
		list, err := c.Functions(ctx, "")
		if err != nil || len(list) != 0 {
			t.Errorf("Functions() after delete = %+v, %v; want none", list, err)
		}
	})

	t.Run("ErrUnreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		if _, err := gateway.NewClient(url).Functions(ctx, ""); err == nil {
			t.Errorf("Functions() against a closed server = nil error, want one")
		}
	})
}

func TestResponseError(t *testing.T) {
	for _, tt := range []struct {
		name      string
		status    int
		body      string
		wantCode  string
		wantField string
		wantMsg   string
	}{
		{"JSON", 400, `{"error":"bad image","code":"invalid","field":"image"}`, gust.EINVALID, "image", "bad image"},
		{"JSONNoCode", 404, `{"error":"gone"}`, gust.ENOTFOUND, "", "gone"},
		{"Text", 502, "bad gateway\n", gust.EFUNCTION, "", "bad gateway"},
		{"TextUnknownStatus", 418, "teapot", gust.EINVALID, "", "teapot"},
		{"TextKnownStatus", 503, "try later", gust.EUNAVAILABLE, "", "try later"},
		{"Empty", 404, "", gust.ENOTFOUND, "", "404 Not Found"},
		{"JSONWithoutError", 409, `{"code":"conflict"}`, gust.ECONFLICT, "", `{"code":"conflict"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			rec.WriteHeader(tt.status)
			rec.Body = bytes.NewBufferString(tt.body)
			resp := rec.Result()
			var ge *gust.Error
			if err := gateway.ResponseError(resp); !errors.As(err, &ge) {
				t.Fatalf("ResponseError = %T %v, want *gust.Error", err, err)
			}
			if ge.Code != tt.wantCode || ge.Field != tt.wantField || ge.Message != tt.wantMsg {
				t.Errorf("ResponseError = {%q %q %q}, want {%q %q %q}", ge.Code, ge.Field, ge.Message, tt.wantCode, tt.wantField, tt.wantMsg)
			}
		})
	}
}

// TestConcurrentDeploys checks that racing deploys of one function each
// get a distinct version or a conflict, never a lost update.
func TestConcurrentDeploys(t *testing.T) {
	e := MustOpenGateway(t, gateway.Config{})
	MustDeploy(t, e, `{"service":"hello","image":"img:0"}`)
	const n = 8
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"service":"hello","image":"img:%d"}`, i+1)
			resp, err := http.Post(e.url("/system/functions"), "application/json", strings.NewReader(body))
			if err != nil {
				t.Errorf("deploy %d: %v", i, err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		switch s {
		case http.StatusAccepted:
			ok++
		case http.StatusConflict:
		default:
			t.Errorf("status = %d, want 202 or 409", s)
		}
	}
	sort.Ints(statuses)
	if fn := MustGetFunction(t, e, "openfaas-fn.hello"); fn.Version != uint64(1+ok) {
		t.Errorf("version = %d after %d accepted deploys (statuses %v), want %d", fn.Version, ok, statuses, 1+ok)
	}
}
