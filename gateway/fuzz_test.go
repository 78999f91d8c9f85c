package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

// specFields are the JSON names of FunctionSpec: the first part of the
// field an invalid deploy is refused for.
var specFields = map[string]bool{
	"service": true, "image": true, "namespace": true, "envProcess": true, "envVars": true,
	"constraints": true, "secrets": true, "labels": true, "annotations": true, "limits": true,
	"requests": true, "readOnlyRootFilesystem": true,
}

// decodeSpec reads body as the deploy handler does.
func decodeSpec(body []byte) (gust.FunctionSpec, error) {
	var spec gust.FunctionSpec
	r := httptest.NewRequest(http.MethodPost, "/system/functions", bytes.NewReader(body))
	err := decodeJSON(httptest.NewRecorder(), r, &spec)
	return spec, err
}

// fuzzBounds are an operator's bounds, tighter than the defaults.
var fuzzBounds = gust.Bounds{
	MaxMemoryBytes: 1 << 30, MaxNanoCPUs: 2e9, MaxScale: 50, MaxConcurrency: 200,
	MaxTimeout: 5 * time.Minute, MaxIdleTimeout: 30 * time.Minute, MaxRetryAttempts: 10, MaxRetryAge: 48 * time.Hour,
	MaxLabels: 16, MaxAnnotations: 16, MaxKeyBytes: 128, MaxValueBytes: 1024,
}

// FuzzDeploySpec decodes a deploy request body as POST /system/functions
// does and validates it within an operator's bounds. A refused body is a
// client error naming a field of the spec; an accepted spec has a
// configuration within the bounds, with the limits it asked for, and
// triggers outside Gust's own subjects and streams and inside its
// namespace's; and it survives the registry's JSON round trip unchanged:
// encoding it, decoding and validating again gives the same bytes and the
// same configuration.
func FuzzDeploySpec(f *testing.F) {
	if err := fuzzBounds.Check(); err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`{"service":"echo","image":"ghcr.io/openfaas/alpine:latest","envProcess":"cat"}`,
		`{"service":"nodeinfo","image":"functions/nodeinfo:latest","namespace":"openfaas-fn","labels":{"com.openfaas.scale.min":"1","com.openfaas.scale.max":"5","gust.concurrency":"10"},"limits":{"memory":"128Mi","cpu":"0.5"},"requests":{"memory":"64Mi","cpu":"100m"}}`,
		`{"service":"orders","image":"acme/orders:2","namespace":"team-a","annotations":{"topic":"orders.created,orders.*"},"labels":{"gust.timeout":"30s","gust.idle-timeout":"5m","gust.retry.on":"5xx,timeout"}}`,
		`{"service":"ro","image":"acme/ro:1","readOnlyRootFilesystem":true,"labels":{"gust.user":"1000:1000","gust.health":"tcp"}}`,
		`{"service":"s","image":"i","annotations":{"gust.stream":"ORDERS","gust.stream.filter":"orders.>"}}`,
		`{"service":"s","image":"i","secrets":["db-password"],"envVars":{"A":"1","B=C":"2"}}`,
		`{"service":"s","image":"i","limits":{"memory":"9E"}}`,
		`{"service":"s","image":"i","limits":{"memory":"9223372036854775807"}}`,
		`{"service":"s","image":"i","limits":{"memory":"1Mi"}}`,
		`{"service":"s","image":"i","limits":{"cpu":"1e-10"}}`,
		`{"service":"s","image":"i","labels":{"com.openfaas.scale.min":"5","com.openfaas.scale.max":"2"}}`,
		`{"service":"s","image":"i","labels":{"com.openfaas.scale.max":"1000000000"}}`,
		`{"service":"s","image":"i","annotations":{"topic":"gust.>"}}`,
		`{"service":"S","image":"i"}`,
		`{"service":"a.b","image":"i"}`,
		`{"service":"` + strings.Repeat("a", 64) + `","image":"i"}`,
		`{"service":"s","image":"i","namespace":"Team_A"}`,
		`{"service":"s","image":"i i"}`,
		`{"service":"s","image":" "}`,
		`{"service":"s"}`,
		`{"service":5,"image":"i"}`,
		`{"service":"s","image":"i","labels":{"gust.concurrency":7}}`,
		`{"service":"s","image":"i","limits":"128Mi"}`,
		`{"service":"s","image":"i","unknown":{"x":[1,2,3]}}`,
		`{"service":"s","service":"t","image":"i"}`,
		`{"service":"s","image":"i"} trailing`,
		`{"service":"\u00e9","image":"i"}`,
		`{"service":"s","image":"i","labels":{"":""}}`,
		`{"service":"s","image":"i","limits":{"memory":"2Gi","cpu":"3"}}`,
		`{"service":"s","image":"i","requests":{"memory":"1025Mi","cpu":"2001m"}}`,
		`{"service":"s","image":"i","labels":{"gust.timeout":"301s","gust.idle-timeout":"31m","gust.concurrency":"201","com.openfaas.scale.min":"51"}}`,
		`{"service":"s","image":"i","labels":{"gust.retry.max-attempts":"11","gust.retry.max-age":"49h","gust.retry.max-delay":"72h"}}`,
		`{"service":"s","image":"i","labels":{"` + strings.Repeat("k", 129) + `":"v"}}`,
		`{"service":"s","image":"i","annotations":{"k":"` + strings.Repeat("v", 1025) + `"}}`,
		`{"service":"s","image":"i","namespace":"team-a","annotations":{"topic":"orders.created","gust.stream":"ORDERS","gust.stream.filter":"orders.>"}}`,
		`{"service":"s","image":"i","annotations":{"topic":"ns.team-a.orders"}}`,
		`{"service":"s","image":"i","annotations":{"topic":"$KV.gust_functions.>,_INBOX.x,>,*.x"}}`,
		`{"service":"s","image":"i","annotations":{"gust.stream":"gust_meter"}}`,
		`{"service":"s","image":"i","namespace":"team-a","annotations":{"gust.stream":"KV_functions"}}`,
		`{"service":"s","image":"localhost:5000/acme/fn@sha256:` + strings.Repeat("a", 64) + `"}`,
		`{"service":"s","image":"UPPER/case"}`,
		`null`, `[]`, `{}`, `"`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		spec, err := decodeSpec(body)
		if err != nil {
			if c := gust.ErrorCode(err); c != gust.EINVALID && c != gust.ETOOLARGE {
				t.Fatalf("decode %q: %v, want EINVALID or ETOOLARGE", body, err)
			}
			return
		}
		if err := spec.ValidateWithin(fuzzBounds); err != nil {
			field := gust.ErrorField(err)
			top, _, _ := strings.Cut(field, ".")
			if gust.ErrorCode(err) != gust.EINVALID || !specFields[top] {
				t.Fatalf("Validate(%q) = %v (field %q), want EINVALID naming a field of the spec", body, err, field)
			}
			return
		}
		spec.Normalize()
		if !gust.ValidName(spec.Service) || !gust.ValidName(spec.Namespace) {
			t.Fatalf("accepted %q with service %q, namespace %q", body, spec.Service, spec.Namespace)
		}
		c, err := gust.ParseConfig(&spec)
		if err != nil {
			t.Fatalf("Validate accepted %q but ParseConfig = %v", body, err)
		}
		if c.Min < 0 || c.Min > c.Max || c.Concurrency < 1 || c.Timeout <= 0 || c.IdleTimeout <= 0 {
			t.Fatalf("accepted %q with min %d, max %d, concurrency %d, timeout %v, idle %v", body, c.Min, c.Max, c.Concurrency, c.Timeout, c.IdleTimeout)
		}
		if c.MemoryBytes < 6<<20 || c.NanoCPUs < 0 {
			t.Fatalf("accepted %q with memory %d bytes, %d nano-CPUs", body, c.MemoryBytes, c.NanoCPUs)
		}
		b := fuzzBounds
		if c.MemoryBytes > b.MaxMemoryBytes || c.NanoCPUs > b.MaxNanoCPUs || c.Max > b.MaxScale || c.Concurrency > b.MaxConcurrency ||
			c.Timeout > b.MaxTimeout || c.IdleTimeout > b.MaxIdleTimeout || c.Retry.MaxAttempts > b.MaxRetryAttempts ||
			c.Retry.MaxAge > b.MaxRetryAge || c.Retry.MaxDelay > b.MaxRetryAge {
			t.Fatalf("accepted %q beyond the bounds: %+v", body, c)
		}
		if spec.Requests != nil {
			if m, err := gust.ParseMemory(spec.Requests.Memory); err == nil && m > b.MaxMemoryBytes {
				t.Fatalf("accepted %q with requests.memory beyond the bounds", body)
			}
			if n, err := gust.ParseCPU(spec.Requests.CPU); err == nil && n > b.MaxNanoCPUs {
				t.Fatalf("accepted %q with requests.cpu beyond the bounds", body)
			}
		}
		for _, m := range []map[string]string{spec.Labels, spec.Annotations} {
			if len(m) > b.MaxLabels {
				t.Fatalf("accepted %q with %d labels or annotations", body, len(m))
			}
			for k, v := range m {
				if len(k) > b.MaxKeyBytes || len(v) > b.MaxValueBytes {
					t.Fatalf("accepted %q with a label or annotation of %d+%d bytes", body, len(k), len(v))
				}
			}
		}
		// A trigger is never one of Gust's or NATS's own subjects, and
		// outside the default namespace always inside its own.
		triggers := c.Topics
		if c.StreamFilter != "" {
			triggers = append(triggers[:len(triggers):len(triggers)], c.StreamFilter)
		}
		for _, tr := range triggers {
			first, rest, _ := strings.Cut(tr, ".")
			if !gust.ValidSubject(tr) || first == "gust" || first == "*" || first == ">" || strings.HasPrefix(first, "$") || strings.HasPrefix(first, "_") {
				t.Fatalf("accepted %q with the trigger subject %q", body, tr)
			}
			if own := spec.Namespace == gust.DefaultNamespace; own == (first == gust.NamespaceSubjectToken) ||
				(!own && !strings.HasPrefix(rest, spec.Namespace+".")) {
				t.Fatalf("accepted %q (namespace %s) with the trigger subject %q", body, spec.Namespace, tr)
			}
		}
		if u := strings.ToUpper(c.Stream); strings.HasPrefix(u, "GUST_") || strings.HasPrefix(u, "KV_") || strings.HasPrefix(u, "OBJ_") {
			t.Fatalf("accepted %q with the stream %q", body, c.Stream)
		}
		if spec.Limits != nil && spec.Limits.Memory != "" {
			if b, err := gust.ParseMemory(spec.Limits.Memory); err != nil || max(b, gust.DockerMinMemory) != c.MemoryBytes {
				t.Fatalf("limits.memory %q gave %d bytes, ParseMemory: %d, %v", spec.Limits.Memory, c.MemoryBytes, b, err)
			}
		}
		if spec.Limits != nil && spec.Limits.CPU != "" {
			if n, err := gust.ParseCPU(spec.Limits.CPU); err != nil || n != c.NanoCPUs || n <= 0 {
				t.Fatalf("limits.cpu %q gave %d nano-CPUs, ParseCPU: %d, %v", spec.Limits.CPU, c.NanoCPUs, n, err)
			}
		}
		// The registry keeps the spec as JSON: what it reads back is
		// what was accepted.
		enc, err := json.Marshal(spec)
		if err != nil {
			t.Fatalf("encode accepted spec %+v: %v", spec, err)
		}
		again, err := decodeSpec(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %s: %v", enc, err)
		}
		if err := again.ValidateWithin(fuzzBounds); err != nil {
			t.Fatalf("re-encoded %s no longer validates: %v", enc, err)
		}
		enc2, _ := json.Marshal(again)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the spec:\n%s\n%s", enc, enc2)
		}
		c2, _ := gust.ParseConfig(&again)
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the configuration:\n%+v\n%+v", c, c2)
		}
	})
}

// fuzzRouter is a router holding a few functions, as its watch would have
// filled it.
func fuzzRouter() *Router {
	rt := &Router{functions: map[string]*gust.Function{}}
	for _, k := range []struct{ ns, name string }{
		{gust.DefaultNamespace, "echo"}, {gust.DefaultNamespace, "a"}, {gust.DefaultNamespace, "hello-world"},
		{"team-a", "echo"}, {"team-a", "x1"}, {"b", "a"},
	} {
		fn := &gust.Function{Spec: gust.FunctionSpec{Service: k.name, Namespace: k.ns, Image: "i"}}
		rt.functions[fn.Key()] = fn
	}
	return rt
}

// FuzzCallPath resolves a call path /function/NAME[.NAMESPACE][/SUB] as the
// call guard and the invoke handler do. A path that resolves names its
// function in exactly one spelling (NAME, or NAME.NAMESPACE), with valid
// names, and the default namespace when it names none; the sub-path is
// what follows the first slash, untouched; the canonical path of what it
// resolved to resolves the same. A path that does not resolve is a 404.
func FuzzCallPath(f *testing.F) {
	for _, p := range []string{
		"echo", "echo/", "echo/a/b?x=1", "echo.team-a", "echo.team-a/sub/path", "echo.openfaas-fn/x",
		"a.b", "a.b.c", "x1.team-a/%2F..%2Fsystem", "hello-world/%20space", "ECHO", "ech%6F",
		"echo%2Fteam-a", "echo.", ".team-a", "", "/", "//echo", "echo..team-a", "echo.team-a.",
		"../system/functions", "echo/../../system/secrets", "echo\x00", "echo.team-a%00", "héllo",
		"echo.*", "echo.>", "echo;x", "echo%", "x1.team-a/" + strings.Repeat("a/", 100),
	} {
		f.Add(p)
	}
	rt := fuzzRouter()
	s := &Server{router: rt}
	f.Fuzz(func(t *testing.T, p string) {
		u, err := url.ParseRequestURI("/function/" + p)
		if err != nil {
			return // net/http answers 400 before any handler
		}
		r := (&http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}}).WithContext(context.Background())
		fn, sub, err := s.target(r, "/function/")
		if err != nil {
			if gust.ErrorCode(err) != gust.ENOTFOUND || fn != nil {
				t.Fatalf("target(%q) = %v, %v; want ENOTFOUND", u, fn, err)
			}
			return
		}
		name, ns := fn.Spec.Service, fn.Spec.Namespace
		if !gust.ValidName(name) || !gust.ValidName(ns) {
			t.Fatalf("target(%q) resolved %s, not valid names", u, fn.Key())
		}
		seg, rest, hasSub := strings.Cut(strings.TrimPrefix(u.EscapedPath(), "/function/"), "/")
		if seg != name+"."+ns && !(seg == name && ns == gust.DefaultNamespace) {
			t.Fatalf("target(%q) resolved %s from the segment %q", u, fn.Key(), seg)
		}
		if sub != rest || (!hasSub && sub != "") {
			t.Fatalf("target(%q) gave sub-path %q, want %q", u, sub, rest)
		}
		canon, err := url.ParseRequestURI("/function/" + name + "." + ns + "/" + sub)
		if err != nil {
			t.Fatalf("canonical path of %q does not parse: %v", u, err)
		}
		fn2, sub2, err := s.target(&http.Request{URL: canon, Header: http.Header{}}, "/function/")
		if err != nil || fn2 != fn || sub2 != sub {
			t.Fatalf("canonical %q resolved %v, %q, %v; %q resolved %s, %q", canon, fn2, sub2, err, u, fn.Key(), sub)
		}
	})
}

// fakeBilling records the filter the handlers pass to the store.
type fakeBilling struct {
	filter  gust.CallFilter
	groupBy string
	calls   int
}

func (b *fakeBilling) AddCalls(context.Context, []gust.CallRecord) error         { return nil }
func (b *fakeBilling) AddInstances(context.Context, []gust.InstanceRecord) error { return nil }
func (b *fakeBilling) Call(context.Context, string) (gust.CallRecord, error) {
	return gust.CallRecord{}, gust.ErrNotFound
}

func (b *fakeBilling) Calls(_ context.Context, f gust.CallFilter) ([]gust.CallRecord, string, error) {
	b.filter, b.calls = f, b.calls+1
	return nil, "", nil
}

func (b *fakeBilling) Usage(_ context.Context, f gust.CallFilter, groupBy string) ([]gust.UsageRow, []gust.InstanceUsageRow, error) {
	b.filter, b.groupBy, b.calls = f, groupBy, b.calls+1
	return nil, nil, nil
}

// queryParams are the parameters of /system/billing and /system/invocations.
var queryParams = map[string]bool{
	"namespace": true, "function": true, "from": true, "to": true,
	"status": true, "limit": true, "cursor": true, "group_by": true, "format": true,
}

// FuzzBillingQuery reads a query string as GET /system/invocations and GET
// /system/billing do. A refused query is EINVALID naming a parameter it
// carries, and the store is not asked; an accepted one reaches the store
// with valid names, UTC bounds in order that re-read the same when
// formatted back, a page size from 1 to the maximum, a known status and
// grouping, and the cursor as given.
func FuzzBillingQuery(f *testing.F) {
	for _, q := range []string{
		"", "namespace=team-a&function=echo", "from=2026-11-01&to=2026-12-01",
		"from=2026-11-27T10:00:00Z&to=2026-11-27T11:00:00.5+01:00", "from=2026-12-01&to=2026-11-01",
		"from=2026-11-27&to=2026-11-27", "from=yesterday", "to=2026-02-30", "from=0000-01-01&to=9999-12-31",
		"status=ok&limit=50", "status=rejected&limit=1000", "limit=0", "limit=1001", "limit=-1", "limit=1e3",
		"limit=%2B5", "status=OK", "cursor=eyJ0IjoxfQ&limit=10", "group_by=day&format=csv",
		"group_by=month&format=json", "group_by=week", "format=xml", "namespace=Team_A", "function=a.b",
		"namespace=&function=", "namespace=a&namespace=b", "from=2026-11-27T10:00:00-23:59",
		"%zz=1", "from=2026-11-27T10:00:00Z;to=x", "function=" + strings.Repeat("a", 64),
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		store := &fakeBilling{}
		s := &Server{billing: store}
		for _, path := range []string{"/system/invocations", "/system/billing"} {
			*store = fakeBilling{}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.URL = &url.URL{Path: path, RawQuery: raw}
			q := r.URL.Query()
			w := httptest.NewRecorder()
			var err error
			if path == "/system/invocations" {
				err = s.listInvocations(w, r)
			} else {
				err = s.billingReport(w, r)
			}
			if err != nil {
				field := gust.ErrorField(err)
				if gust.ErrorCode(err) != gust.EINVALID || !queryParams[field] || !q.Has(field) {
					t.Fatalf("%s?%s: %v (field %q), want EINVALID naming a parameter of the query", path, raw, err, field)
				}
				if store.calls != 0 {
					t.Fatalf("%s?%s was refused (%v) but reached the store", path, raw, err)
				}
				continue
			}
			if store.calls != 1 || w.Code != http.StatusOK {
				t.Fatalf("%s?%s: %d store calls, status %d", path, raw, store.calls, w.Code)
			}
			fl := store.filter
			if (fl.Namespace != "" && !gust.ValidName(fl.Namespace)) || (fl.Function != "" && !gust.ValidName(fl.Function)) {
				t.Fatalf("%s?%s reached the store with namespace %q, function %q", path, raw, fl.Namespace, fl.Function)
			}
			if fl.Namespace != q.Get("namespace") || fl.Function != q.Get("function") {
				t.Fatalf("%s?%s reached the store with namespace %q, function %q", path, raw, fl.Namespace, fl.Function)
			}
			for _, b := range []struct {
				name string
				t    time.Time
			}{{"from", fl.From}, {"to", fl.To}} {
				if b.t.IsZero() != (q.Get(b.name) == "") {
					t.Fatalf("%s?%s: %s=%q gave %v", path, raw, b.name, q.Get(b.name), b.t)
				}
				if b.t.IsZero() {
					continue
				}
				if b.t.Location() != time.UTC {
					t.Fatalf("%s?%s: %s is not UTC: %v", path, raw, b.name, b.t)
				}
				back, err := parseTime(url.Values{b.name: {b.t.Format(time.RFC3339Nano)}}, b.name)
				if err != nil || !back.Equal(b.t) {
					t.Fatalf("%s?%s: %s %v formatted back reads %v, %v", path, raw, b.name, b.t, back, err)
				}
			}
			if !fl.From.IsZero() && !fl.To.IsZero() && !fl.From.Before(fl.To) {
				t.Fatalf("%s?%s reached the store with from %v not before to %v", path, raw, fl.From, fl.To)
			}
			if path == "/system/invocations" {
				if fl.Limit < 1 || fl.Limit > maxListLimit || fl.Cursor != q.Get("cursor") {
					t.Fatalf("%s?%s reached the store with limit %d, cursor %q", path, raw, fl.Limit, fl.Cursor)
				}
				switch fl.Outcome {
				case "", gust.OutcomeOK, gust.OutcomeError, gust.OutcomeTimeout, gust.OutcomeCrashed, gust.OutcomeRejected:
				default:
					t.Fatalf("%s?%s reached the store with status %q", path, raw, fl.Outcome)
				}
				var list invocationList
				if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || list.Invocations == nil {
					t.Fatalf("%s?%s answered %q (%v), want a list", path, raw, w.Body.Bytes(), err)
				}
			} else {
				switch store.groupBy {
				case gust.GroupByNamespace, gust.GroupByFunction, gust.GroupByHour, gust.GroupByDay, gust.GroupByMonth:
				default:
					t.Fatalf("%s?%s reached the store with group_by %q", path, raw, store.groupBy)
				}
				if csv := strings.HasPrefix(w.Header().Get("Content-Type"), "text/csv"); csv != (q.Get("format") == "csv") {
					t.Fatalf("%s?%s answered Content-Type %q", path, raw, w.Header().Get("Content-Type"))
				}
			}
		}
	})
}
