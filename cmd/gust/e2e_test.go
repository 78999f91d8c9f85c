package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/docker"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) {
	// Management calls of the tests authenticate as admin (adminTransport);
	// the gust binaries the tests run take the same password: `gust up`
	// and `gust gateway` from $GUST_ADMIN_PASSWORD, the CLI from
	// $GUST_PASSWORD.
	http.DefaultClient.Transport = adminTransport{http.DefaultTransport}
	os.Setenv("GUST_ADMIN_PASSWORD", testAdminPassword)
	os.Setenv("GUST_PASSWORD", testAdminPassword)
	code := m.Run()
	printBenchTableAtExit()
	// Remove the per-binary Docker network the tests used.
	if rt, err := docker.New(docker.Config{Network: testNetwork}, zap.NewNop()); err == nil {
		_ = rt.RemoveNetwork(context.Background())
		rt.Close()
	}
	os.Exit(code)
}

// gw returns the gateway base URL of m.
func gw(m *UpMain) string { return "http://" + m.GatewayAddr() }

// deploy posts a spec and returns the status and body.
func deploy(tb testing.TB, m *UpMain, method string, spec any) (int, string) {
	tb.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		tb.Fatal(err)
	}
	st, _, body := call(tb, method, gw(m)+"/system/functions", string(b), "Content-Type", "application/json")
	return st, body
}

// mustDeploy deploys and fails the test unless the gateway answers 202.
func mustDeploy(tb testing.TB, m *UpMain, name, image string, labels map[string]string) {
	tb.Helper()
	st, body := deploy(tb, m, http.MethodPost, gust.FunctionSpec{Service: name, Image: image, Labels: labels})
	if st != http.StatusAccepted {
		tb.Fatalf("deploy %s: got %d %s, want 202", name, st, body)
	}
}

// fnContainers lists the running containers of function name in m.
func fnContainers(tb testing.TB, m *UpMain, name string) []gust.Instance {
	tb.Helper()
	var out []gust.Instance
	for _, c := range Containers(tb, map[string]string{gust.LabelFunction: name, gust.LabelWorker: m.Worker.ID}) {
		if c.Running {
			out = append(out, c)
		}
	}
	return out
}

func containerIDs(cs []gust.Instance) []string {
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	return ids
}

// waitContainers polls until function name has exactly n running
// containers.
func waitContainers(tb testing.TB, m *UpMain, name string, n int, within time.Duration) {
	tb.Helper()
	check.For(tb, within, 100*time.Millisecond, func() error {
		if got := len(fnContainers(tb, m, name)); got != n {
			return fmt.Errorf("%s has %d containers, want %d", name, got, n)
		}
		return nil
	})
}

// errorBody decodes a JSON error answer.
func errorBody(tb testing.TB, body string) gust.ErrorBody {
	tb.Helper()
	var eb gust.ErrorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil {
		tb.Fatalf("error answer is not JSON: %q", body)
	}
	return eb
}

type echoReply struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
	CallID  string            `json:"callId"`
}

func TestInvoke(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "echo", imageTag("echo"), nil)

	t.Run("MethodsPathQueryHeadersBody", func(t *testing.T) {
		for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
			body := ""
			if method != "GET" && method != "OPTIONS" {
				body = "payload-" + method
			}
			st, h, out := call(t, method, gw(m)+"/function/echo/a/b%20c?x=1&y=two", body, "X-Custom", "v1")
			if st != 200 {
				t.Fatalf("%s: got status %d %s", method, st, out)
			}
			var got echoReply
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%s: %v in %q", method, err, out)
			}
			if got.Method != method || got.Path != "/a/b c" || got.Query != "x=1&y=two" || got.Body != body || got.Headers["X-Custom"] != "v1" {
				t.Errorf("%s: function saw %+v", method, got)
			}
			if h.Get("X-Call-Id") == "" || h.Get("X-Call-Id") != got.CallID {
				t.Errorf("%s: X-Call-Id %q, function saw %q", method, h.Get("X-Call-Id"), got.CallID)
			}
			if h.Get("X-Duration-Seconds") == "" {
				t.Errorf("%s: no X-Duration-Seconds", method)
			}
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		if st, _, _ := call(t, "HEAD", gw(m)+"/function/echo", ""); st != 200 {
			t.Errorf("HEAD: got %d", st)
		}
	})
	t.Run("CallerCallID", func(t *testing.T) {
		_, h, out := call(t, "GET", gw(m)+"/function/echo", "", "X-Call-Id", "my-call-1")
		if h.Get("X-Call-Id") != "my-call-1" || !strings.Contains(out, `"callId":"my-call-1"`) {
			t.Errorf("X-Call-Id %q, body %s; want the caller's id", h.Get("X-Call-Id"), out)
		}
	})
	t.Run("NamespaceSuffix", func(t *testing.T) {
		st, _, out := call(t, "GET", gw(m)+"/function/echo.openfaas-fn/x", "")
		if st != 200 || !strings.Contains(out, `"path":"/x"`) {
			t.Errorf("echo.openfaas-fn: got %d %s", st, out)
		}
	})
	t.Run("EmptyBearerIgnored", func(t *testing.T) {
		// OpenFaaS clients send an empty Bearer: it is no credential (401
		// with the Basic challenge, not a refusal of a bad scheme), and no
		// obstacle to a public function.
		st, h, out := call(t, "GET", gw(m)+"/system/functions", "", "Authorization", "Bearer ")
		if st != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("empty bearer on /system/functions: got %d %s, WWW-Authenticate %q; want 401 with a Basic challenge", st, out, h.Get("WWW-Authenticate"))
		}
		if st, _, out := call(t, "GET", gw(m)+"/function/echo", "", "Authorization", "Bearer "); st != 200 {
			t.Errorf("empty bearer on a public function: got %d %s", st, out)
		}
	})
	t.Run("WarmReuse", func(t *testing.T) {
		before := containerIDs(fnContainers(t, m, "echo"))
		for i := 0; i < 20; i++ {
			if st, _, out := call(t, "POST", gw(m)+"/function/echo", "x"); st != 200 {
				t.Fatalf("call %d: %d %s", i, st, out)
			}
		}
		after := containerIDs(fnContainers(t, m, "echo"))
		if len(before) != 1 || strings.Join(before, ",") != strings.Join(after, ",") {
			t.Errorf("containers before %v, after 20 calls %v: want the same single one", before, after)
		}
	})
	t.Run("Status", func(t *testing.T) {
		check.For(t, 5*time.Second, 100*time.Millisecond, func() error {
			st, _, out := call(t, "GET", gw(m)+"/system/function/echo", "")
			var fs gust.FunctionStatus
			if err := json.Unmarshal([]byte(out), &fs); err != nil || st != 200 {
				return fmt.Errorf("status %d %s", st, out)
			}
			if fs.Name != "echo" || fs.Namespace != "openfaas-fn" || fs.Replicas != 1 || fs.AvailableReplicas != 1 || fs.InvocationCount < 20 || fs.CreatedAt.IsZero() {
				return fmt.Errorf("status %+v", fs)
			}
			return nil
		})
	})
	t.Run("Delete", func(t *testing.T) {
		st, _, out := call(t, "DELETE", gw(m)+"/system/functions", `{"functionName":"echo"}`)
		if st != 202 && st != 200 {
			t.Fatalf("delete: %d %s", st, out)
		}
		waitContainers(t, m, "echo", 0, 10*time.Second)
		check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
			if st, _, _ := call(t, "GET", gw(m)+"/function/echo", ""); st != 404 {
				return fmt.Errorf("invoke after delete: %d, want 404", st)
			}
			return nil
		})
	})
}

// sleepReply is what the sleep example answers.
type sleepReply struct {
	Instance string `json:"instance"`
	InFlight int    `json:"inflight"`
}

// TestConcurrencyLimitAndScaleUp sends more concurrent calls than one
// instance takes: the function scales up to its max and no instance ever
// runs more calls than its concurrency. Each call sleeps long enough
// (one instance alone would need 9 s for all of them) that the new
// instances are ready while calls still wait, even when starting a
// container takes seconds on a loaded machine.
func TestConcurrencyLimitAndScaleUp(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "sleepy", imageTag("sleep"), map[string]string{
		gust.LabelConcurrency: "2", gust.LabelScaleMax: "3",
	})
	const calls = 12
	var wg sync.WaitGroup
	replies := make([]sleepReply, calls)
	statuses := make([]int, calls)
	stop := make(chan struct{})
	peak := 0
	var peakMu sync.Mutex
	go func() { // watch the container count while the calls run
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			n := len(fnContainers(t, m, "sleepy"))
			peakMu.Lock()
			peak = max(peak, n)
			peakMu.Unlock()
		}
	}()
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _, out := call(t, "GET", gw(m)+"/function/sleepy?ms=1500", "")
			statuses[i] = st
			_ = json.Unmarshal([]byte(out), &replies[i])
		}()
	}
	wg.Wait()
	close(stop)
	instances := map[string]bool{}
	for i, r := range replies {
		if statuses[i] != 200 {
			t.Fatalf("call %d: status %d", i, statuses[i])
		}
		if r.InFlight > 2 {
			t.Errorf("instance %s ran %d calls at once, want at most 2 (gust.concurrency)", r.Instance, r.InFlight)
		}
		instances[r.Instance] = true
	}
	peakMu.Lock()
	defer peakMu.Unlock()
	if len(instances) != 3 {
		t.Errorf("calls ran on %d instances, want 3 (scaled up to max)", len(instances))
	}
	if peak > 3 {
		t.Errorf("peak of %d containers, want at most 3 (com.openfaas.scale.max)", peak)
	}
}

// TestScaleToZeroAndColdStart: surplus instances stop after the idle
// timeout, min 0 goes to zero, and a call at zero is held until one new
// instance is ready, which serves every call waiting for it.
func TestScaleToZeroAndColdStart(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "idler", imageTag("sleep"), map[string]string{gust.LabelIdleTimeout: "1s"})
	if n := len(fnContainers(t, m, "idler")); n != 1 {
		t.Fatalf("after deploy: %d containers, want 1 started at once", n)
	}
	waitContainers(t, m, "idler", 0, 10*time.Second)

	// Several calls at zero: all held, all answered, by one new instance.
	const calls = 5
	var wg sync.WaitGroup
	cold := make([]string, calls)
	insts := make([]string, calls)
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, h, out := call(t, "GET", gw(m)+"/function/idler?ms=200", "")
			if st != 200 {
				t.Errorf("cold call %d: %d %s", i, st, out)
			}
			var r sleepReply
			_ = json.Unmarshal([]byte(out), &r)
			cold[i], insts[i] = h.Get(gust.HeaderColdStart), r.Instance
		}()
	}
	wg.Wait()
	for i := range insts {
		if insts[i] != insts[0] {
			t.Errorf("cold calls ran on instances %v, want one", insts)
			break
		}
	}
	if cold[0] != "true" {
		t.Errorf("X-Gust-Cold-Start of a call at zero: %q, want true", cold[0])
	}
	// The next call is warm.
	if _, h, _ := call(t, "GET", gw(m)+"/function/idler", ""); h.Get(gust.HeaderColdStart) != "" {
		t.Errorf("warm call marked cold")
	}
	waitContainers(t, m, "idler", 0, 10*time.Second)
}

// TestMinWarmAndScaleFunction: the minimum stays warm past the idle
// timeout; scale-function moves it.
func TestMinWarmAndScaleFunction(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "warm", imageTag("hello"), map[string]string{gust.LabelScaleMin: "2", gust.LabelIdleTimeout: "1s"})
	waitContainers(t, m, "warm", 2, 10*time.Second)
	time.Sleep(2 * time.Second) // past the idle timeout: the minimum stays
	if n := len(fnContainers(t, m, "warm")); n != 2 {
		t.Fatalf("past the idle timeout: %d containers, want min 2", n)
	}
	st, _, out := call(t, "POST", gw(m)+"/system/scale-function/warm", `{"serviceName":"warm","replicas":3}`)
	if st != 202 {
		t.Fatalf("scale: %d %s", st, out)
	}
	waitContainers(t, m, "warm", 3, 10*time.Second)
	if st, _, _ := call(t, "POST", gw(m)+"/system/scale-function/warm", `{"serviceName":"warm","replicas":0}`); st != 202 {
		t.Fatalf("scale to 0: %d", st)
	}
	waitContainers(t, m, "warm", 0, 10*time.Second)
}

// TestBadInput: every bad input gets a clear answer and changes nothing.
func TestBadInput(t *testing.T) {
	m := MustRunUp(t, "", func(m *UpMain) { m.Gateway.MaxBodyBytes = 1024 })
	mustDeploy(t, m, "mis", imageTag("misbehave"), map[string]string{gust.LabelTimeout: "1s", gust.LabelScaleMax: "1", gust.LabelHealth: "/healthy"})

	deploys := []struct {
		name      string
		method    string
		body      string
		status    int
		wantField string
	}{
		{"InvalidName", "POST", `{"service":"Bad_Name!","image":"x"}`, 400, "service"},
		{"MissingImage", "POST", `{"service":"ok"}`, 400, "image"},
		{"BadMemory", "POST", `{"service":"ok","image":"x","limits":{"memory":"lots"}}`, 400, "limits.memory"},
		{"BadCPU", "POST", `{"service":"ok","image":"x","limits":{"cpu":"-1"}}`, 400, "limits.cpu"},
		{"BadLabel", "POST", `{"service":"ok","image":"x","labels":{"com.openfaas.scale.max":"many"}}`, 400, "labels.com.openfaas.scale.max"},
		{"BadDuration", "POST", `{"service":"ok","image":"x","labels":{"gust.idle-timeout":"5"}}`, 400, "labels.gust.idle-timeout"},
		{"MalformedJSON", "POST", `{"service":"ok`, 400, ""},
		{"WrongType", "POST", `{"service":"ok","image":7}`, 400, "image"},
		{"UpdateMissing", "PUT", `{"service":"nosuch","image":"x"}`, 404, ""},
		{"ImageCannotBeHad", "POST", `{"service":"ghost","image":"gust-test/no-such-image:never"}`, 400, "image"},
		{"ImageNeverReady", "POST", `{"service":"broken","image":"` + imageTag("misbehave") + `","envVars":{"MISBEHAVE_UNHEALTHY":"1"}}`, 400, "image"},
	}
	for _, d := range deploys {
		t.Run("Deploy"+d.name, func(t *testing.T) {
			st, _, out := call(t, d.method, gw(m)+"/system/functions", d.body)
			if st != d.status {
				t.Fatalf("got %d %s, want %d", st, out, d.status)
			}
			eb := errorBody(t, out)
			if eb.Field != d.wantField || eb.Error == "" {
				t.Errorf("error %+v, want field %q and a message", eb, d.wantField)
			}
		})
	}
	// Nothing of the refused deploys was registered or left running.
	st, _, out := call(t, "GET", gw(m)+"/system/functions", "")
	var fns []gust.FunctionStatus
	if err := json.Unmarshal([]byte(out), &fns); err != nil || st != 200 {
		t.Fatalf("list: %d %s", st, out)
	}
	if len(fns) != 1 || fns[0].Name != "mis" {
		t.Errorf("functions after refused deploys: %+v, want only mis", fns)
	}
	if n := len(fnContainers(t, m, "broken")); n != 0 {
		t.Errorf("%d containers of a refused deploy left", n)
	}

	t.Run("UnknownFunction", func(t *testing.T) {
		if st, _, out := call(t, "GET", gw(m)+"/function/nosuch", ""); st != 404 || errorBody(t, out).Error == "" {
			t.Errorf("got %d %s, want 404 with a JSON error", st, out)
		}
	})
	t.Run("BodyTooLarge", func(t *testing.T) {
		if st, _, out := call(t, "POST", gw(m)+"/function/mis", strings.Repeat("x", 2048)); st != 413 {
			t.Errorf("got %d %s, want 413", st, out)
		}
	})
	t.Run("Crash", func(t *testing.T) {
		before := containerIDs(fnContainers(t, m, "mis"))
		if st, _, out := call(t, "GET", gw(m)+"/function/mis?crash=1", ""); st != 502 {
			t.Errorf("got %d %s, want 502", st, out)
		}
		// The crashed instance is replaced: the next call is served by a
		// new container.
		st, _, out := call(t, "GET", gw(m)+"/function/mis", "")
		if st != 200 {
			t.Fatalf("call after crash: %d %s", st, out)
		}
		after := containerIDs(fnContainers(t, m, "mis"))
		if len(after) != 1 || len(before) == 1 && after[0] == before[0] {
			t.Errorf("containers before crash %v, after %v: want one new", before, after)
		}
	})
	t.Run("Garbage", func(t *testing.T) {
		if st, _, out := call(t, "GET", gw(m)+"/function/mis?garbage=1", ""); st != 502 {
			t.Errorf("got %d %s, want 502", st, out)
		}
		if st, _, _ := call(t, "GET", gw(m)+"/function/mis", ""); st != 200 {
			t.Errorf("call after garbage: %d", st)
		}
	})
	t.Run("Timeout", func(t *testing.T) {
		t0 := time.Now()
		st, h, out := call(t, "GET", gw(m)+"/function/mis?hang=1", "")
		if st != 504 {
			t.Errorf("got %d %s, want 504", st, out)
		}
		if d := time.Since(t0); d > 5*time.Second {
			t.Errorf("504 after %s; gust.timeout is 1s", d)
		}
		if h.Get("X-Call-Id") == "" {
			t.Errorf("504 without X-Call-Id")
		}
		if st, _, _ := call(t, "GET", gw(m)+"/function/mis", ""); st != 200 {
			t.Errorf("call after timeout: %d", st)
		}
	})
	t.Run("TimeoutNoRecovery", func(t *testing.T) {
		before := containerIDs(fnContainers(t, m, "mis"))
		if st, _, out := call(t, "GET", gw(m)+"/function/mis?freeze=1", ""); st != 504 {
			t.Errorf("got %d %s, want 504", st, out)
		}
		// The frozen instance fails its readiness check and is replaced.
		check.For(t, 15*time.Second, 100*time.Millisecond, func() error {
			st, _, out := call(t, "GET", gw(m)+"/function/mis", "")
			if st != 200 {
				return fmt.Errorf("call after freeze: %d %s", st, out)
			}
			after := containerIDs(fnContainers(t, m, "mis"))
			if len(after) != 1 || len(before) == 1 && after[0] == before[0] {
				return fmt.Errorf("containers before freeze %v, after %v: want one new", before, after)
			}
			return nil
		})
	})
	t.Run("FunctionStatusPassesThrough", func(t *testing.T) {
		if st, _, _ := call(t, "GET", gw(m)+"/function/mis?status=418", ""); st != 418 {
			t.Errorf("got %d, want the function's own 418", st)
		}
	})
	t.Run("ScaleBadReplicas", func(t *testing.T) {
		st, _, out := call(t, "POST", gw(m)+"/system/scale-function/mis", `{"replicas":-1}`)
		if st != 400 || errorBody(t, out).Field != "replicas" {
			t.Errorf("got %d %s, want 400 naming replicas", st, out)
		}
	})
}

// TestStreaming: a function that writes slowly reaches the caller as it
// writes, not buffered whole.
func TestStreaming(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "streamer", imageTag("misbehave"), nil)
	t0 := time.Now()
	resp, err := http.Get(gw(m) + "/function/streamer?stream=10")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	first, err := rd.ReadString('\n')
	firstAt := time.Since(t0)
	if err != nil || first != "line 1\n" {
		t.Fatalf("first line %q, %v", first, err)
	}
	rest, _ := io.ReadAll(rd)
	total := time.Since(t0)
	if n := strings.Count(first+string(rest), "\n"); n != 10 {
		t.Errorf("got %d lines, want 10", n)
	}
	// The ten lines take ~900 ms to write; the first must not wait for them.
	if firstAt > total/2 {
		t.Errorf("first line after %s of %s: the answer was buffered", firstAt, total)
	}
}

// TestRestartKeepsRegistry: the registry lives in JetStream KV under the
// data directory, so a restarted gust up still has its functions.
func TestRestartKeepsRegistry(t *testing.T) {
	dir := t.TempDir()
	m := MustRunUp(t, dir)
	mustDeploy(t, m, "keeper", imageTag("hello"), map[string]string{gust.LabelScaleMin: "1"})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(fnContainers(t, m, "keeper")); n != 0 {
		t.Fatalf("%d containers left after close, want 0", n)
	}
	m2 := MustRunUp(t, dir)
	st, _, out := call(t, "GET", gw(m2)+"/system/function/keeper", "")
	if st != 200 || !strings.Contains(out, imageTag("hello")) {
		t.Fatalf("after restart: %d %s", st, out)
	}
	if st, _, out := call(t, "POST", gw(m2)+"/function/keeper", "again"); st != 200 || out != "Hello, again!\n" {
		t.Errorf("invoke after restart: %d %q", st, out)
	}
	// The warm minimum comes back on its own.
	waitContainers(t, m2, "keeper", 1, 10*time.Second)
}

// TestLeftoversRemoved: a worker that starts and finds containers with its
// labels that it does not track removes them.
func TestLeftoversRemoved(t *testing.T) {
	MustImages(t)
	dir := t.TempDir()
	id, err := localID(dir, workerIDFile)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := openRuntime(context.Background(), testNetwork, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	c, err := rt.Start(context.Background(), gust.ContainerSpec{
		Name: "gust-leftover-" + id, Image: imageTag("hello"), Port: 8080,
		Labels: map[string]string{gust.LabelWorker: id, gust.LabelFunction: "old"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Remove(context.Background(), c.ID) })
	MustRunUp(t, dir)
	if cs := Containers(t, map[string]string{gust.LabelWorker: id, gust.LabelFunction: "old"}); len(cs) != 0 {
		t.Errorf("leftover container still there after the worker started")
	}
}

// TestDrain: closing gust up lets a call in flight finish, then removes
// the containers.
func TestDrain(t *testing.T) {
	m := MustRunUp(t, "")
	mustDeploy(t, m, "drainer", imageTag("sleep"), nil)
	done := make(chan int, 1)
	go func() {
		st, _, _ := call(t, "GET", gw(m)+"/function/drainer?ms=1500", "")
		done <- st
	}()
	time.Sleep(300 * time.Millisecond) // the call is in flight
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-done:
		if st != 200 {
			t.Errorf("call in flight during drain: %d, want 200", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("call in flight did not finish")
	}
	if n := len(fnContainers(t, m, "drainer")); n != 0 {
		t.Errorf("%d containers after drain", n)
	}
}

// TestSeparateRoles runs NATS, scheduler, worker and gateway as separate
// role Mains, each with its own NATS connection; the gateway reaches the
// worker over HTTP at the address the worker advertises.
func TestSeparateRoles(t *testing.T) {
	MustImages(t)
	ctx := context.Background()
	r := mustRolesApart(t, "separate-roles")
	r.scheduler(defaultSchedulerConfig(), "")
	wk := r.worker(defaultWorkerConfig(), "")
	_, base := r.gateway()

	c := gateway.NewClient(base)
	if err := c.Deploy(ctx, gust.FunctionSpec{Service: "remote", Image: imageTag("echo")}, false); err != nil {
		t.Fatal(err)
	}
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		st, _, out := call(t, "PUT", base+"/function/remote/p?q=1", "body")
		if st != 200 || !strings.Contains(out, `"path":"/p"`) || !strings.Contains(out, `"body":"body"`) {
			return fmt.Errorf("invoke through separate roles: %d %s", st, out)
		}
		return nil
	})
	if err := c.Delete(ctx, "", "remote"); err != nil {
		t.Fatal(err)
	}
	check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		if cs := Containers(t, map[string]string{gust.LabelWorker: wk.Config.ID}); len(cs) > 0 {
			return errors.New("containers left after delete")
		}
		return nil
	})
}

// TestCallsOverLoopback: a worker that may enter its instances' network
// namespaces (root) calls a function over the function's own loopback,
// which sees the call come from 127.0.0.1; with --bridge-calls it calls it
// at its bridge address, from the bridge's side. Either way the call is
// answered with its figures, on a kept connection too.
func TestCallsOverLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("entering a network namespace takes root")
	}
	for _, bridge := range []bool{false, true} {
		t.Run(fmt.Sprintf("BridgeCalls=%v", bridge), func(t *testing.T) {
			m := MustRunUp(t, "", func(m *UpMain) { m.Worker.BridgeCalls = bridge })
			mustDeploy(t, m, "peer", imageTag("misbehave"), nil)
			for i := range 3 { // a kept connection, then the same again
				st, h, out := call(t, "GET", gw(m)+"/function/peer?peer=1", "")
				if st != http.StatusOK || h.Get(gust.HeaderDuration) == "" {
					t.Fatalf("call %d: %d %s (duration %q)", i, st, out, h.Get(gust.HeaderDuration))
				}
				host, _, err := net.SplitHostPort(out)
				if err != nil {
					t.Fatalf("call %d answered %q: %v", i, out, err)
				}
				if loop := net.ParseIP(host).IsLoopback(); loop == bridge {
					t.Errorf("call %d came from %s: loopback %v, want %v", i, host, loop, !bridge)
				}
			}
		})
	}
}
