package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/docker"
	"github.com/gustfaas/gust/internal/fnbuild"
	"github.com/gustfaas/gust/scheduler"
	"github.com/gustfaas/gust/worker"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Test images, built once per test binary from examples/ and testdata/.
var testImages = map[string]string{
	"echo":      "../../examples/echo",
	"hello":     "../../examples/hello",
	"sleep":     "../../examples/sleep",
	"orders":    "../../examples/orders",
	"misbehave": "../../testdata/functions/misbehave",
}

// imageTag is the tag of a test image.
func imageTag(name string) string { return "gust-test/" + name + ":e2e" }

var (
	buildOnce sync.Once
	buildErr  error
)

// MustDocker skips the test in -short mode and when no Docker Engine
// answers at all. CI always has one: it sets GUST_REQUIRE_DOCKER, which
// turns the second skip into a failure.
func MustDocker(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs a Docker Engine: skipped in -short mode")
	}
	skip := tb.Skipf
	if os.Getenv("GUST_REQUIRE_DOCKER") != "" {
		skip = tb.Fatalf
	}
	rt, err := docker.New(docker.Config{}, zap.NewNop())
	if err != nil {
		skip("no Docker client: %v", err)
	}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := rt.Ping(ctx); err != nil {
		skip("no Docker Engine answers: %v", err)
	}
}

// MustImages builds the test function images (once per test binary).
func MustImages(tb testing.TB) {
	tb.Helper()
	MustDocker(tb)
	buildOnce.Do(func() {
		rt, err := docker.New(docker.Config{}, zap.NewNop())
		if err != nil {
			buildErr = err
			return
		}
		defer rt.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for name, dir := range testImages {
			if err := fnbuild.Build(ctx, rt, dir, imageTag(name), io.Discard); err != nil {
				buildErr = fmt.Errorf("build %s: %w", name, err)
				return
			}
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
}

// testNetwork is a Docker network per test binary, so tests never touch
// the network of a `gust up` running on the same host.
var testNetwork = fmt.Sprintf("gust-test-%d", os.Getpid())

// UpOption adjusts a test UpMain.
type UpOption func(*UpMain)

// MustRunUp starts `gust up` in process on free ports with a fresh data
// directory (or dataDir, to test restarts) and registers its Close.
func MustRunUp(tb testing.TB, dataDir string, opts ...UpOption) *UpMain {
	tb.Helper()
	MustImages(tb)
	if dataDir == "" {
		dataDir = tb.TempDir()
	}
	wc := worker.DefaultConfig()
	wc.ReadyTimeout = 15 * time.Second
	sc := scheduler.DefaultConfig()
	gc := defaultGatewayConfig()
	m := &UpMain{
		Listen: "127.0.0.1:0", NATSListen: "127.0.0.1:0", DataDir: dataDir, Network: testNetwork,
		Gateway: gc, Scheduler: sc, Worker: wc, Logger: testLogger(tb),
	}
	for _, o := range opts {
		o(m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		tb.Fatalf("gust up: %v", err)
	}
	tb.Cleanup(func() {
		if err := m.Close(); err != nil {
			tb.Errorf("close gust up: %v", err)
		}
		MustNoContainers(tb, map[string]string{gust.LabelWorker: m.Worker.ID})
	})
	return m
}

// testLogger logs to the test log, or to stderr with GUST_TEST_LOG=1.
func testLogger(tb testing.TB) *zap.Logger {
	if os.Getenv("GUST_TEST_LOG") != "" {
		l, _ := zap.NewDevelopment()
		return l
	}
	return zaptest.NewLogger(tb, zaptest.Level(zap.InfoLevel))
}

// Containers lists the containers carrying labels that are instances:
// all but the network holders (docker.LabelHolder) and those a worker
// prepared ahead for a function's next cold start and has not started
// (docker.LabelPrepared), which are sandboxes made ahead, not instances.
// MustNoContainers sees those too.
func Containers(tb testing.TB, labels map[string]string) []gust.Instance {
	tb.Helper()
	var out []gust.Instance
	for _, c := range allContainers(tb, labels) {
		if (c.Running || c.Labels[docker.LabelPrepared] != "true") && c.Labels[docker.LabelHolder] != "true" {
			out = append(out, c)
		}
	}
	return out
}

// allContainers lists every container carrying labels.
func allContainers(tb testing.TB, labels map[string]string) []gust.Instance {
	tb.Helper()
	rt, err := docker.New(docker.Config{}, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	defer rt.Close()
	cs, err := rt.List(context.Background(), labels)
	if err != nil {
		tb.Fatal(err)
	}
	return cs
}

// MustNoContainers fails unless no container carries labels.
func MustNoContainers(tb testing.TB, labels map[string]string) {
	tb.Helper()
	if cs := allContainers(tb, labels); len(cs) > 0 {
		tb.Errorf("%d containers left with labels %v", len(cs), labels)
		rt, _ := docker.New(docker.Config{}, zap.NewNop())
		for _, c := range cs {
			_ = rt.Remove(context.Background(), c.ID)
		}
		rt.Close()
	}
}

// call sends one request and returns status, headers and body.
func call(tb testing.TB, method, url string, body string, hdr ...string) (int, http.Header, string) {
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
		tb.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func defaultSchedulerConfig() scheduler.Config { return scheduler.DefaultConfig() }

// defaultGatewayConfig is the gateway defaults with authentication on, as
// in production, with the tests' admin password.
func defaultGatewayConfig() gateway.Config {
	c := gateway.DefaultConfig()
	c.AdminPassword = testAdminPassword
	// The tests' callback targets listen on loopback, which callbacks reach
	// only when allowed (TestHostile_Callback* test the refusal).
	c.CallbackAllow, _ = gateway.ParseOutboundAllow("127.0.0.1")
	return c
}
func defaultWorkerConfig() worker.Config {
	c := worker.DefaultConfig()
	c.ReadyTimeout = 15 * time.Second
	return c
}

// testAdminPassword is the admin password of every gateway the tests start:
// in process through defaultGatewayConfig, and as $GUST_ADMIN_PASSWORD for
// the gust binaries they run (see TestMain).
const testAdminPassword = "e2e-admin-password"

// adminTransport sends the admin's credentials on the management routes
// (/system/..., /metrics) of requests that carry none, so the tests' many
// management calls (call, http.Get, gateway.Client) authenticate the way
// an operator's would; function calls stay anonymous, as callers of public
// functions are. A test that wants an anonymous management call uses a
// client of its own (anonClient).
type adminTransport struct{ base http.RoundTripper }

func (t adminTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	p := req.URL.Path
	if req.Header.Get("Authorization") == "" && (p == "/system" || strings.HasPrefix(p, "/system/") || p == "/metrics") {
		req = req.Clone(req.Context())
		req.SetBasicAuth(gateway.AdminUser, testAdminPassword)
	}
	return t.base.RoundTrip(req)
}

// CloseIdleConnections closes the idle connections of the base transport
// (http.Client.CloseIdleConnections calls it).
func (t adminTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// anonClient is a client that sends no credentials of its own.
func anonClient(tb testing.TB) *http.Client {
	tr := &http.Transport{}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
