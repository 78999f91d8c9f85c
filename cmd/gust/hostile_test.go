package main

// Hostile end-to-end tests (issue 9): each attacks one bound or rule of a
// running `gust up` from the outside and checks it holds. They need
// Docker, like the other tests of this package; every network peer they
// use listens on loopback.

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
)

// strictCallbacks lets no callback reach a loopback address but allowed.
func strictCallbacks(allowed string) UpOption {
	return func(m *UpMain) {
		a, err := gateway.ParseOutboundAllow(allowed)
		if err != nil {
			panic(err)
		}
		m.Gateway.CallbackAllow = a
	}
}

// mustRefuse deploys spec and fails unless the gateway answers 400 naming
// field.
func mustRefuse(t *testing.T, m *UpMain, spec gust.FunctionSpec, field string) {
	t.Helper()
	st, body := deploy(t, m, http.MethodPost, spec)
	if st != http.StatusBadRequest {
		t.Errorf("deploy %+v: got %d %s, want 400", spec, st, body)
		return
	}
	if eb := errorBody(t, body); eb.Field != field || eb.Code != gust.EINVALID {
		t.Errorf("deploy %+v: error %+v, want code %s naming %s", spec, eb, gust.EINVALID, field)
	}
}

// TestHostile_TriggerOnGustSubjects: a function cannot subscribe to Gust's
// own subjects or consume its streams, in any namespace; nothing of the
// refused deploy is registered.
func TestHostile_TriggerOnGustSubjects(t *testing.T) {
	MustDocker(t)
	m := MustRunUp(t, "")
	for _, topic := range []string{"gust.>", "gust.scheduler.place", ">", "*.x", "$KV.gust_functions.>", "$JS.API.>", "_INBOX.>"} {
		mustRefuse(t, m, gust.FunctionSpec{Service: "ht", Image: imageTag("echo"),
			Annotations: map[string]string{gust.AnnotationTopic: topic}}, "annotations."+gust.AnnotationTopic)
	}
	for _, stream := range []string{"GUST_ASYNC", "GUST_METER", "KV_gust_functions"} {
		mustRefuse(t, m, gust.FunctionSpec{Service: "ht", Image: imageTag("echo"),
			Annotations: map[string]string{gust.AnnotationStream: stream}}, "annotations."+gust.AnnotationStream)
	}
	// openfaas-fn cannot name another namespace's subjects either.
	mustRefuse(t, m, gust.FunctionSpec{Service: "ht", Image: imageTag("echo"),
		Annotations: map[string]string{gust.AnnotationTopic: "ns.team-x.orders"}}, "annotations."+gust.AnnotationTopic)
	if st, _, body := call(t, http.MethodGet, gw(m)+"/system/function/ht", ""); st != http.StatusNotFound {
		t.Errorf("GET /system/function/ht after refused deploys: %d %s, want 404", st, body)
	}
}

// TestHostile_Bounds: a 9 EB memory limit and a scale.max of 100000 are
// refused at deploy, naming the field, before any container starts.
func TestHostile_Bounds(t *testing.T) {
	MustDocker(t)
	m := MustRunUp(t, "")
	mustRefuse(t, m, gust.FunctionSpec{Service: "hb", Image: imageTag("echo"),
		Limits: &gust.FunctionResources{Memory: "9000000000000000000"}}, "limits.memory")
	mustRefuse(t, m, gust.FunctionSpec{Service: "hb", Image: imageTag("echo"),
		Labels: map[string]string{gust.LabelScaleMax: "100000"}}, "labels."+gust.LabelScaleMax)
	mustRefuse(t, m, gust.FunctionSpec{Service: "hb", Image: "Not A Reference"}, "image")
	if cs := fnContainers(t, m, "hb"); len(cs) != 0 {
		t.Errorf("refused deploys left %d containers", len(cs))
	}
}

// hits counts the requests a loopback test server gets.
type hits struct{ n atomic.Int32 }

func (h *hits) handler(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.n.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		if next != nil {
			next(w, r)
		}
	}
}

// listenOn serves h on addr, a loopback address, until the test ends.
func listenOn(t *testing.T, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// TestHostile_CallbackToLoopback: an async call whose callback names a
// loopback address (literally, or as localhost) is refused at enqueue with
// 400 naming X-Callback-Url, and the loopback server hears nothing.
func TestHostile_CallbackToLoopback(t *testing.T) {
	MustDocker(t)
	var target hits
	srv := listenOn(t, "127.0.0.1:0", target.handler(nil))
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	m := MustRunUp(t, "", strictCallbacks(""))
	mustDeploy(t, m, "hcb", imageTag("echo"), nil)
	for _, cb := range []string{srv.URL + "/cb", "http://localhost:" + port + "/cb", "http://[::1]:" + port + "/cb",
		"http://169.254.169.254/latest/meta-data/", "http://" + m.GatewayAddr() + "/system/functions"} {
		st, _, body := call(t, http.MethodPost, gw(m)+"/async-function/hcb", "x", gust.HeaderCallbackURL, cb)
		if st != http.StatusBadRequest {
			t.Errorf("callback %s: got %d %s, want 400", cb, st, body)
			continue
		}
		if eb := errorBody(t, body); eb.Field != gust.HeaderCallbackURL {
			t.Errorf("callback %s: error %+v, want it to name %s", cb, eb, gust.HeaderCallbackURL)
		}
	}
	// A sync call proves the function ran meanwhile; still nothing came.
	if st, _, body := call(t, http.MethodPost, gw(m)+"/function/hcb", "x"); st != http.StatusOK {
		t.Fatalf("call hcb: %d %s", st, body)
	}
	if n := target.n.Load(); n != 0 {
		t.Errorf("the loopback server got %d requests, want 0", n)
	}
}

// TestHostile_CallbackLoopbackAdminOnly: with the defaults (no allow
// list), the callback of an async call made as admin may go to a loopback
// test server, as a developer on one machine does, but never to Gust's
// own listeners (the gateway, NATS); the same callback of an anonymous
// call is refused.
func TestHostile_CallbackLoopbackAdminOnly(t *testing.T) {
	MustDocker(t)
	var target hits
	srv := listenOn(t, "127.0.0.1:0", target.handler(nil))
	m := MustRunUp(t, "", strictCallbacks(""), func(m *UpMain) { m.Gateway.CallbackAdminLoopback = true })
	mustDeploy(t, m, "hal", imageTag("echo"), nil)
	admin := []string{"Authorization", basicAuth(gateway.AdminUser, testAdminPassword)}
	natsURL, err := url.Parse(m.nats.Server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	for _, cb := range []string{"http://" + m.GatewayAddr() + "/system/functions", "http://127.0.0.1:" + natsURL.Port() + "/"} {
		st, _, body := call(t, http.MethodPost, gw(m)+"/async-function/hal", "x", append([]string{gust.HeaderCallbackURL, cb}, admin...)...)
		if st != http.StatusBadRequest {
			t.Errorf("admin's callback to Gust's own %s: got %d %s, want 400", cb, st, body)
		}
	}
	if st, _, body := call(t, http.MethodPost, gw(m)+"/async-function/hal", "x", gust.HeaderCallbackURL, srv.URL+"/cb"); st != http.StatusBadRequest {
		t.Errorf("anonymous callback to loopback: got %d %s, want 400", st, body)
	}
	if n := target.n.Load(); n != 0 {
		t.Fatalf("the loopback server got %d requests before the admin's call, want 0", n)
	}
	st, _, body := call(t, http.MethodPost, gw(m)+"/async-function/hal", "x", append([]string{gust.HeaderCallbackURL, srv.URL + "/cb"}, admin...)...)
	if st != http.StatusAccepted {
		t.Fatalf("admin's callback to a loopback server: got %d %s, want 202", st, body)
	}
	check.For(t, 60*time.Second, 100*time.Millisecond, func() error {
		if n := target.n.Load(); n != 1 {
			return fmt.Errorf("the loopback server got %d callbacks, want 1", n)
		}
		return nil
	})
}

// TestHostile_CallbackRedirectToLoopback: a callback to an address the
// operator allows that redirects to a loopback address not allowed is not
// followed there: the redirecting server gets the result, the other
// nothing, and the callback is dropped at once (a retry would lead to the
// same place), not retried.
func TestHostile_CallbackRedirectToLoopback(t *testing.T) {
	MustDocker(t)
	var target, redirector hits
	tsrv := listenOn(t, "127.0.0.2:0", target.handler(nil))
	rsrv := listenOn(t, "127.0.0.1:0", redirector.handler(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, tsrv.URL+"/stolen", http.StatusTemporaryRedirect)
	}))
	m := MustRunUp(t, "", strictCallbacks("127.0.0.1"))
	mustDeploy(t, m, "hrd", imageTag("echo"), nil)
	st, _, body := call(t, http.MethodPost, gw(m)+"/async-function/hrd", "x", gust.HeaderCallbackURL, rsrv.URL+"/cb")
	if st != http.StatusAccepted {
		t.Fatalf("async call with an allowed callback: got %d %s, want 202", st, body)
	}
	check.For(t, 60*time.Second, 100*time.Millisecond, func() error {
		if n := metricValue(t, m, `gust_callbacks_total{result="dropped"}`); n < 1 {
			return fmt.Errorf("callbacks dropped: %g, want 1", n)
		}
		return nil
	})
	if n := redirector.n.Load(); n != 1 {
		t.Errorf("the allowed, redirecting server got %d requests, want 1", n)
	}
	if n := target.n.Load(); n != 0 {
		t.Errorf("the loopback server the redirect named got %d requests, want 0", n)
	}
	if n := metricValue(t, m, `gust_callbacks_total{result="retried"}`); n != 0 {
		t.Errorf("callbacks retried: %g, want 0", n)
	}
}

// metricValue reads one sample of the gateway's /metrics (0 when absent).
func metricValue(t *testing.T, m *UpMain, sample string) float64 {
	t.Helper()
	st, _, body := call(t, http.MethodGet, gw(m)+"/metrics", "")
	if st != http.StatusOK {
		t.Fatalf("GET /metrics: %d", st)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// TestHostile_FloodAtMaxOne: 1000 calls at once on a function of one
// instance taking one call at a time. Past the bound of waiting calls
// they are refused at once with 429 and Retry-After; the ones held run;
// nothing else comes back, every call ends in bounded time, and the
// gateway answers afterwards.
func TestHostile_FloodAtMaxOne(t *testing.T) {
	MustDocker(t)
	const calls, maxWaiting = 1000, 50
	m := MustRunUp(t, "", func(m *UpMain) {
		m.Gateway.MaxWaiting, m.Worker.MaxWaiting = maxWaiting, maxWaiting
	})
	mustDeploy(t, m, "hflood", imageTag("sleep"), map[string]string{
		gust.LabelScaleMin: "1", gust.LabelScaleMax: "1", gust.LabelConcurrency: "1",
	})
	// Every call ends within this, or the test fails: bounded in time.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: calls, MaxConnsPerHost: calls}}
	defer client.CloseIdleConnections()

	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		noRetry  int
		failures []error
		start    = make(chan struct{})
		wg       sync.WaitGroup
	)
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gw(m)+"/function/hflood?ms=20", nil)
			resp, err := client.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[resp.StatusCode]++
			if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
				noRetry++
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d calls got no answer, e.g. %v", len(failures), failures[0])
	}
	t.Logf("statuses of %d calls: %v", calls, statuses)
	if statuses[http.StatusTooManyRequests] == 0 {
		t.Errorf("no call was refused with 429 past %d waiting: %v", maxWaiting, statuses)
	}
	if statuses[http.StatusOK] == 0 {
		t.Errorf("no call ran: %v", statuses)
	}
	if statuses[http.StatusOK]+statuses[http.StatusTooManyRequests] != calls {
		t.Errorf("answers other than 200 and 429: %v", statuses)
	}
	if noRetry > 0 {
		t.Errorf("%d answers 429 without Retry-After", noRetry)
	}
	// The gateway and the function still answer.
	if st, _, body := call(t, http.MethodGet, gw(m)+"/healthz", ""); st != http.StatusOK {
		t.Errorf("healthz after the flood: %d %s", st, body)
	}
	if st, _, body := call(t, http.MethodGet, gw(m)+"/function/hflood?ms=1", ""); st != http.StatusOK {
		t.Errorf("call after the flood: %d %s", st, body)
	}
}

// TestHostile_SlowHeaders: a connection that never finishes its headers
// is closed by the gateway (its read-header timeout), and headers past the
// limit get 431, while a call that takes longer than the server's read
// and write timeouts still gets its whole answer (calls extend their own
// deadlines).
func TestHostile_SlowHeaders(t *testing.T) {
	MustDocker(t)
	m := MustRunUp(t, "", func(m *UpMain) {
		m.Gateway.HTTP.ReadHeaderTimeout = time.Second
		m.Gateway.HTTP.ReadTimeout = time.Second
		m.Gateway.HTTP.WriteTimeout = time.Second
	})

	t.Run("NeverFinished", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", m.GatewayAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
		// Far past the 1 s timeout; the server closes well before.
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the connection was still open after 30 s")
		}
	})

	t.Run("HugeHeaders", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", m.GatewayAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		go func() {
			// The server may answer and close before all of it is sent.
			_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 2<<20)+"\r\n\r\n")
		}()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return // closed without an answer: refused too
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("2 MiB of headers: got %d, want 431", resp.StatusCode)
		}
	})

	t.Run("LongCallOutlivesServerTimeouts", func(t *testing.T) {
		mustDeploy(t, m, "hlong", imageTag("sleep"), nil)
		st, _, body := call(t, http.MethodGet, gw(m)+"/function/hlong?ms=2500", "")
		if st != http.StatusOK || !strings.Contains(body, `"slept_ms"`) {
			t.Errorf("a 2.5 s call behind 1 s server timeouts: %d %s, want 200 and the whole answer", st, body)
		}
	})
}

// basicAuth is the Authorization header value of HTTP Basic for user.
func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}
