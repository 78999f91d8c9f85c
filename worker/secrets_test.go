package worker

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
)

// newSecretStore returns the real secret store (natsbus.OpenTenancy's,
// AES-GCM in JetStream KV) on a NATS server of its own.
func newSecretStore(t *testing.T) gust.SecretStore {
	t.Helper()
	key := make([]byte, natsbus.SecretsKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ten, err := natsbus.OpenTenancy(ctx, natsbustest.MustOpenBus(t), key)
	if err != nil {
		t.Fatalf("open tenancy: %v", err)
	}
	return ten.Secrets
}

func mustPut(t *testing.T, store gust.SecretStore, ns, name, value string, create bool) {
	t.Helper()
	if err := store.Put(context.Background(), ns, name, []byte(value), create); err != nil {
		t.Fatalf("put secret %s/%s: %v", ns, name, err)
	}
}

// deployWithSecrets deploys a function of namespace "ns" listing secrets.
func (e *testEnv) deployWithSecrets(name string, secrets ...string) *gust.Function {
	e.t.Helper()
	fn := &gust.Function{
		Spec: gust.FunctionSpec{
			Service: name, Namespace: "ns", Image: "img:1", Secrets: secrets,
			Labels: map[string]string{gust.LabelTimeout: "20s"},
		},
		Version: 1,
	}
	e.put(fn)
	return fn
}

// fileQuery is the fake function's query that answers the file at
// gust.SecretsDir/name (mock.DefaultHandler).
func fileQuery(name string) string {
	return "/?" + url.Values{"file": {gust.SecretsDir + "/" + name}}.Encode()
}

// TestSecrets_ReachFunction: the secrets a function lists are files in its
// container, read from its namespace, and not in its environment.
func TestSecrets_ReachFunction(t *testing.T) {
	store := newSecretStore(t)
	mustPut(t, store, "ns", "dbpass", "s3cr3t-worker", true)
	mustPut(t, store, "ns", "apikey", "k3y-worker", true)
	mustPut(t, store, "other", "dbpass", "other-namespace", true)
	e := newEnvWithSecrets(t, nil, store)
	fn := e.deployWithSecrets("fs", "dbpass", "apikey")

	for name, want := range map[string]string{"dbpass": "s3cr3t-worker", "apikey": "k3y-worker"} {
		res := e.call(fn, fileQuery(name))
		if res.code != http.StatusOK || res.body != want {
			t.Errorf("the function read %s: got %d %q (%v), want 200 %q", name, res.code, res.body, res.err, want)
		}
	}
	running := e.rt.Running()
	if len(running) != 1 {
		t.Fatalf("running: got %d containers, want 1", len(running))
	}
	shown, err := e.rt.Inspect(running[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"s3cr3t-worker", "k3y-worker"} {
		if strings.Contains(shown, v) {
			t.Errorf("the container's inspect shows the secret value %q: %s", v, shown)
		}
	}
}

// TestSecrets_Missing: a function naming a secret its namespace does not
// have does not start: the scheduler's prepare, which a deploy waits for,
// gets an EINVALID error on the field "secrets" naming it (the deploy
// answers 400); a call gets the start's failure (503) naming it.
func TestSecrets_Missing(t *testing.T) {
	store := newSecretStore(t)
	mustPut(t, store, "other", "nosuch", "in another namespace", true)
	e := newEnvWithSecrets(t, nil, store)
	fn := e.deployWithSecrets("fm", "nosuch")

	reply := e.prepare(fn)
	if reply.ErrCode != gust.EINVALID || reply.ErrField != "secrets" || !strings.Contains(reply.ErrMsg, `"nosuch"`) {
		t.Errorf("prepare: got %+v, want EINVALID on field secrets naming \"nosuch\"", reply)
	}
	if got := gust.HTTPStatus(reply.Err()); got != http.StatusBadRequest {
		t.Errorf("prepare's error as an HTTP status: got %d, want 400", got)
	}
	res := e.call(fn, "/")
	if res.err == nil || !strings.Contains(gust.ErrorMessage(res.err), `secret "nosuch" does not exist`) {
		t.Errorf("call: got %d %v, want the start's failure naming the secret", res.code, res.err)
	}
	if got := e.rt.Starts(); got != 0 {
		t.Errorf("container starts: got %d, want 0", got)
	}
}

// TestSecrets_NotEnabled: a worker without a secret store does not start a
// function that lists secrets.
func TestSecrets_NotEnabled(t *testing.T) {
	e := newEnv(t, nil)
	fn := e.deployWithSecrets("fn", "dbpass")
	reply := e.prepare(fn)
	if reply.ErrCode != gust.EINVALID || reply.ErrField != "secrets" || !strings.Contains(reply.ErrMsg, "secrets are not enabled") {
		t.Errorf("prepare: got %+v, want EINVALID on field secrets saying secrets are not enabled", reply)
	}
	if got := e.rt.Starts(); got != 0 {
		t.Errorf("container starts: got %d, want 0", got)
	}
}

// prepare asks the worker to prepare fn, as the scheduler does when a
// function is deployed, and returns its reply.
func (e *testEnv) prepare(fn *gust.Function) gust.Reply {
	e.t.Helper()
	req, err := json.Marshal(gust.PrepareRequest{Function: *fn})
	if err != nil {
		e.t.Fatal(err)
	}
	reply, ok := e.w.handlePrepare(context.Background(), req).(gust.Reply)
	if !ok {
		e.t.Fatalf("prepare: got a %T, want a gust.Reply", reply)
	}
	return reply
}

// TestSecrets_Updated: an updated secret reaches the instances started
// after the update; a running instance keeps the value it started with.
func TestSecrets_Updated(t *testing.T) {
	store := newSecretStore(t)
	mustPut(t, store, "ns", "dbpass", "first", true)
	e := newEnvWithSecrets(t, nil, store)
	fn := e.deployWithSecrets("fu", "dbpass")

	res := e.call(fn, fileQuery("dbpass"))
	if res.body != "first" {
		t.Fatalf("before the update: got %d %q (%v), want \"first\"", res.code, res.body, res.err)
	}
	old := res.container
	mustPut(t, store, "ns", "dbpass", "second", false)
	res = e.call(fn, fileQuery("dbpass"))
	if res.container != old || res.body != "first" {
		t.Errorf("running instance after the update: got %q from %s, want \"first\" from %s", res.body, res.container, old)
	}
	if !e.rt.Exit(old, 1) {
		t.Fatal("the instance was not running")
	}
	check.For(t, testWait, testPoll, func() error {
		if st := e.pool(fn).status(); st.Replicas != 0 {
			return fmt.Errorf("status: got %+v, want the exited instance gone", st)
		}
		return nil
	})
	res = e.call(fn, fileQuery("dbpass"))
	if res.container == old || res.body != "second" {
		t.Errorf("new instance after the update: got %d %q from %s, want \"second\" from a new one", res.code, res.body, res.container)
	}
}
