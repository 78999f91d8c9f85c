// Package runtimetest is the conformance suite of gust.Runtime: one set of
// tests that every runtime passes, run against the fake (internal/mock) in
// this package's own tests and against the Docker Engine in
// internal/docker's. The worker is tested on the fake; the suite is what
// makes those tests say something about Docker.
//
// The suite states the contract as internal/docker keeps it, where the
// interface's doc leaves room: Remove is idempotent (an unknown id is not
// an error), Stop of an exited container is not an error, an exited
// container stays listed (not running, no Addr) until it is removed, and a
// container that exits as soon as it starts either fails Start with
// gust.ErrContainerExited (and is removed) or is seen exiting by Wait,
// depending on how fast it dies.
package runtimetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
)

// Harness is one runtime under test and what the suite needs to know about
// it.
type Harness struct {
	// Runtime is the runtime under test.
	Runtime gust.Runtime
	// Image is present (EnsureImage needs no pull) and serves the function
	// contract on Port: 200 on /_/health and on /. For the secrets check
	// it also answers /?file=PATH with 200 and the content of the file
	// PATH (any other status when it cannot read it), and /?write=PATH
	// with a 2xx when it could write the file PATH, another status when
	// not.
	Image string
	// Port the image serves on; 8080 when zero. The suite passes it as
	// PORT in the environment, too.
	Port int
	// Labels go on every container the suite starts, so that the
	// harness's own cleanup finds any it leaves.
	Labels map[string]string
	// Crash turns a spec into one whose container exits with CrashCode as
	// soon as it starts.
	Crash     func(spec *gust.ContainerSpec)
	CrashCode int
	// MissingImage is a reference the runtime can neither find nor pull.
	MissingImage string
	// Timeout bounds each wait of the suite (a container becoming healthy,
	// Wait returning); 20s when zero.
	Timeout time.Duration
	// Inspect returns all the runtime shows about container id (for
	// Docker, `docker inspect`'s JSON: environment, labels, mounts). The
	// secrets check looks for the secrets' values in it; nil skips that
	// part.
	Inspect func(ctx context.Context, id string) (string, error)
}

// Run runs the conformance suite. newHarness is called once per subtest
// and registers its own cleanup with t.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"StartServes", testStartServes},
		{"List", testList},
		{"StopWaitRemove", testStopWaitRemove},
		{"RemoveRunning", testRemoveRunning},
		{"UnknownID", testUnknownID},
		{"EnsureImage", testEnsureImage},
		{"ExitAtOnce", testExitAtOnce},
		{"NameConflict", testNameConflict},
		{"InvalidPort", testInvalidPort},
		{"Secrets", testSecrets},
		{"InvalidSecretName", testInvalidSecretName},
		{"InvalidUser", testInvalidUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if h.Port == 0 {
				h.Port = 8080
			}
			if h.Timeout == 0 {
				h.Timeout = 20 * time.Second
			}
			tt.fn(t, h)
		})
	}
}

// spec returns a spec of h's image with a fresh name and instance label.
func (h Harness) spec() gust.ContainerSpec {
	id := randomID()
	labels := map[string]string{
		gust.LabelFunction:  "conformance",
		gust.LabelNamespace: "test",
		gust.LabelInstance:  id,
	}
	for k, v := range h.Labels {
		labels[k] = v
	}
	return gust.ContainerSpec{
		Name:   "gust-conformance-" + id,
		Image:  h.Image,
		Env:    []string{fmt.Sprintf("PORT=%d", h.Port), "GUST_CONFORMANCE=1"},
		Labels: labels,
		Port:   h.Port,
	}
}

func (h Harness) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// mustStart starts spec and removes the container when the test ends.
func (h Harness) mustStart(t *testing.T, spec gust.ContainerSpec) gust.Instance {
	t.Helper()
	inst, err := h.Runtime.Start(h.ctx(t), spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
		defer cancel()
		if err := h.Runtime.Remove(ctx, inst.ID); err != nil {
			t.Errorf("cleanup: remove %s: %v", inst.ID, err)
		}
	})
	return inst
}

var client = &http.Client{Timeout: 2 * time.Second}

func get(url string) (int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// mustHealthy polls inst's readiness path until it answers 200.
func (h Harness) mustHealthy(t *testing.T, inst gust.Instance) {
	t.Helper()
	check.For(t, h.Timeout, 20*time.Millisecond, func() error {
		code, err := get("http://" + inst.Addr + gust.DefaultHealthPath)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("health: got status %d, want 200", code)
		}
		return nil
	})
}

// waitAsync runs Wait in a goroutine the test owns and returns a channel
// of its result.
func (h Harness) waitAsync(t *testing.T, ctx context.Context, id string) <-chan waitResult {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan waitResult, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		exit, err := h.Runtime.Wait(ctx, id)
		ch <- waitResult{exit, err}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ch
}

type waitResult struct {
	exit gust.Exit
	err  error
}

// testStartServes: a started container answers HTTP at Addr and carries
// the spec's name and labels.
func testStartServes(t *testing.T, h Harness) {
	spec := h.spec()
	inst := h.mustStart(t, spec)
	if inst.ID == "" {
		t.Error("ID: got empty")
	}
	if inst.Name != spec.Name {
		t.Errorf("Name: got %q, want %q", inst.Name, spec.Name)
	}
	if !inst.Running {
		t.Error("Running: got false, want true")
	}
	if inst.Created.IsZero() || time.Since(inst.Created) > time.Minute {
		t.Errorf("Created: got %v, want about now", inst.Created)
	}
	for k, want := range spec.Labels {
		if got := inst.Labels[k]; got != want {
			t.Errorf("label %s: got %q, want %q", k, got, want)
		}
	}
	if got := inst.Labels[gust.LabelManaged]; got != "true" {
		t.Errorf("label %s: got %q, want true (the runtime marks what it owns)", gust.LabelManaged, got)
	}
	h.mustHealthy(t, inst)
	code, err := get("http://" + inst.Addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusOK {
		t.Errorf("GET /: got status %d, want 200", code)
	}
}

// testList: List finds containers by all the given labels, and only them.
func testList(t *testing.T, h Harness) {
	ctx := h.ctx(t)
	group := randomID()
	a, b, other := h.spec(), h.spec(), h.spec()
	a.Labels["gust.conformance-group"] = group
	b.Labels["gust.conformance-group"] = group
	ia, ib := h.mustStart(t, a), h.mustStart(t, b)
	h.mustStart(t, other)

	list, err := h.Runtime.List(ctx, map[string]string{gust.LabelInstance: a.Labels[gust.LabelInstance]})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("List by instance label: got %d instances, want 1: %+v", len(list), list)
	}
	if got := list[0]; got.ID != ia.ID || got.Name != ia.Name || got.Addr != ia.Addr || !got.Running {
		t.Errorf("List by instance label: got %+v, want %+v", got, ia)
	}

	list, err = h.Runtime.List(ctx, map[string]string{"gust.conformance-group": group})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, in := range list {
		ids[in.ID] = true
	}
	if len(list) != 2 || !ids[ia.ID] || !ids[ib.ID] {
		t.Errorf("List by group: got %+v, want %s and %s", list, ia.ID, ib.ID)
	}

	list, err = h.Runtime.List(ctx, map[string]string{"gust.conformance-group": group, gust.LabelInstance: b.Labels[gust.LabelInstance]})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != ib.ID {
		t.Errorf("List by group and instance: got %+v, want only %s", list, ib.ID)
	}

	list, err = h.Runtime.List(ctx, map[string]string{gust.LabelInstance: "no-such-instance"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("List of no instance: got %+v, want none", list)
	}
}

// testStopWaitRemove: Wait returns once the container is stopped; it stays
// listed, not running and without Addr, until removed; Stop and Remove are
// idempotent; Wait of a removed container is ErrInstanceNotFound.
func testStopWaitRemove(t *testing.T, h Harness) {
	ctx := h.ctx(t)
	spec := h.spec()
	inst := h.mustStart(t, spec)
	h.mustHealthy(t, inst)
	waited := h.waitAsync(t, ctx, inst.ID)
	select {
	case r := <-waited:
		t.Fatalf("Wait of a running container returned %+v, %v before Stop", r.exit, r.err)
	default:
	}
	if err := h.Runtime.Stop(ctx, inst.ID, time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case r := <-waited:
		if r.err != nil {
			t.Errorf("Wait after Stop: got %v, want an exit", r.err)
		}
	case <-ctx.Done():
		t.Fatal("Wait did not return after Stop")
	}
	if _, err := h.Runtime.Wait(ctx, inst.ID); err != nil {
		t.Errorf("Wait of a stopped container: got %v, want an exit at once", err)
	}
	byInstance := map[string]string{gust.LabelInstance: spec.Labels[gust.LabelInstance]}
	list, err := h.Runtime.List(ctx, byInstance)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Running || list[0].Addr != "" {
		t.Errorf("List after Stop: got %+v, want one instance, not running, without Addr", list)
	}
	if err := h.Runtime.Stop(ctx, inst.ID, time.Second); err != nil {
		t.Errorf("Stop of a stopped container: got %v, want nil", err)
	}
	if err := h.Runtime.Remove(ctx, inst.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := h.Runtime.Remove(ctx, inst.ID); err != nil {
		t.Errorf("second Remove: got %v, want nil", err)
	}
	if _, err := h.Runtime.Wait(ctx, inst.ID); !errors.Is(err, gust.ErrInstanceNotFound) {
		t.Errorf("Wait of a removed container: got %v, want gust.ErrInstanceNotFound", err)
	}
	if list, err := h.Runtime.List(ctx, byInstance); err != nil || len(list) != 0 {
		t.Errorf("List after Remove: got %+v, %v, want none", list, err)
	}
}

// testRemoveRunning: Remove kills a running container; a Wait in progress
// returns.
func testRemoveRunning(t *testing.T, h Harness) {
	ctx := h.ctx(t)
	inst := h.mustStart(t, h.spec())
	h.mustHealthy(t, inst)
	waited := h.waitAsync(t, ctx, inst.ID)
	if err := h.Runtime.Remove(ctx, inst.ID); err != nil {
		t.Fatalf("Remove of a running container: %v", err)
	}
	select {
	case <-waited: // an exit, or not found: either says it is gone
	case <-ctx.Done():
		t.Fatal("Wait did not return after Remove")
	}
	check.For(t, h.Timeout, 20*time.Millisecond, func() error {
		_, err := get("http://" + inst.Addr + gust.DefaultHealthPath)
		if err == nil {
			return errors.New("removed container still answers")
		}
		return nil
	})
}

// testUnknownID: Wait, Stop and TailLogs of an unknown id wrap
// ErrInstanceNotFound; Remove of one is not an error.
func testUnknownID(t *testing.T, h Harness) {
	ctx := h.ctx(t)
	const id = "gust-conformance-no-such-container"
	if _, err := h.Runtime.Wait(ctx, id); !errors.Is(err, gust.ErrInstanceNotFound) {
		t.Errorf("Wait: got %v, want gust.ErrInstanceNotFound", err)
	}
	if err := h.Runtime.Stop(ctx, id, time.Second); !errors.Is(err, gust.ErrInstanceNotFound) {
		t.Errorf("Stop: got %v, want gust.ErrInstanceNotFound", err)
	}
	if lt, ok := h.Runtime.(gust.LogTailer); ok {
		if _, err := lt.TailLogs(ctx, id, 5); !errors.Is(err, gust.ErrInstanceNotFound) {
			t.Errorf("TailLogs: got %v, want gust.ErrInstanceNotFound", err)
		}
	}
	if err := h.Runtime.Remove(ctx, id); err != nil {
		t.Errorf("Remove: got %v, want nil (Remove is idempotent)", err)
	}
}

// testEnsureImage: a present image needs nothing; a missing one is an
// EINVALID *gust.Error on the field "image".
func testEnsureImage(t *testing.T, h Harness) {
	ctx := h.ctx(t)
	if err := h.Runtime.EnsureImage(ctx, h.Image); err != nil {
		t.Errorf("EnsureImage of a present image: %v", err)
	}
	if h.MissingImage == "" {
		t.Skip("the harness names no missing image")
	}
	err := h.Runtime.EnsureImage(ctx, h.MissingImage)
	var ge *gust.Error
	if !errors.As(err, &ge) {
		t.Fatalf("EnsureImage of a missing image: got %v, want a *gust.Error", err)
	}
	if got, want := gust.ErrorCode(err), gust.EINVALID; got != want {
		t.Errorf("code: got %q (%v), want %q", got, err, want)
	}
	if got, want := gust.ErrorField(err), "image"; got != want {
		t.Errorf("field: got %q, want %q", got, want)
	}
}

// testExitAtOnce: a container that exits as soon as it starts fails Start
// with ErrContainerExited and leaves nothing behind, or, if it was still
// running when Start looked, Wait reports its exit code.
func testExitAtOnce(t *testing.T, h Harness) {
	if h.Crash == nil {
		t.Skip("the harness has no crashing spec")
	}
	ctx := h.ctx(t)
	spec := h.spec()
	h.Crash(&spec)
	inst, err := h.Runtime.Start(ctx, spec)
	if err != nil {
		if !errors.Is(err, gust.ErrContainerExited) {
			t.Fatalf("Start: got %v, want gust.ErrContainerExited", err)
		}
		list, err := h.Runtime.List(ctx, map[string]string{gust.LabelInstance: spec.Labels[gust.LabelInstance]})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 0 {
			t.Errorf("containers left by a failed Start: got %+v, want none", list)
		}
		return
	}
	t.Logf("Start returned before the container exited; checking Wait")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
		defer cancel()
		_ = h.Runtime.Remove(ctx, inst.ID)
	})
	exit, err := h.Runtime.Wait(ctx, inst.ID)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if exit.Code != h.CrashCode {
		t.Errorf("exit code: got %d, want %d", exit.Code, h.CrashCode)
	}
}

// testNameConflict: a second Start with a name in use wraps ErrConflict.
func testNameConflict(t *testing.T, h Harness) {
	spec := h.spec()
	h.mustStart(t, spec)
	again := spec
	again.Labels = map[string]string{gust.LabelInstance: randomID()}
	for k, v := range h.Labels {
		again.Labels[k] = v
	}
	inst, err := h.Runtime.Start(h.ctx(t), again)
	if err == nil {
		_ = h.Runtime.Remove(context.Background(), inst.ID)
	}
	if !errors.Is(err, gust.ErrConflict) {
		t.Errorf("second Start with one name: got %v, want gust.ErrConflict", err)
	}
}

// testInvalidPort: a spec without a valid port is an EINVALID error on the
// field "port", before anything is created.
func testInvalidPort(t *testing.T, h Harness) {
	spec := h.spec()
	spec.Port = 0
	inst, err := h.Runtime.Start(h.ctx(t), spec)
	if err == nil {
		_ = h.Runtime.Remove(context.Background(), inst.ID)
	}
	if got, want := gust.ErrorField(err), "port"; got != want {
		t.Errorf("field: got %q (%v), want %q", got, err, want)
	}
}

// testInvalidUser: a User that is not a numeric UID or UID:GID (a name
// would leave the owner of the secrets unknown) is an EINVALID error on
// the gust.user label's field, before anything is created.
func testInvalidUser(t *testing.T, h Harness) {
	for _, user := range []string{"nobody", "1000:", "-1"} {
		spec := h.spec()
		spec.User = user
		inst, err := h.Runtime.Start(h.ctx(t), spec)
		if err == nil {
			_ = h.Runtime.Remove(context.Background(), inst.ID)
		}
		if got, want := gust.ErrorField(err), "labels."+gust.LabelUser; got != want {
			t.Errorf("user %q: field: got %q (%v), want %q", user, got, err, want)
		}
	}
}

// testSecrets: a container started with Secrets reads each as a file
// under gust.SecretsDir, cannot write them or add files there, and the
// values are nowhere in what the runtime shows about the container (its
// environment and labels included); the mount's path is.
func testSecrets(t *testing.T, h Harness) {
	ctx := h.ctx(t)
	spec := h.spec()
	token := randomID()
	secrets := map[string][]byte{
		"db-password": []byte("conformance-db-" + token),
		"api.key":     []byte("conformance-api-" + token + "\nsecond line\n"),
	}
	spec.Secrets = secrets
	inst := h.mustStart(t, spec)
	h.mustHealthy(t, inst)
	base := "http://" + inst.Addr + "/?"
	for name, want := range secrets {
		path := gust.SecretsDir + "/" + name
		code, body, err := getBody(base + url.Values{"file": {path}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusOK || body != string(want) {
			t.Errorf("read %s in the container: got %d %q, want 200 %q", path, code, body, want)
		}
		code, body, err = getBody(base + url.Values{"write": {path}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if code/100 == 2 {
			t.Errorf("write %s in the container: got %d, want it refused (read-only)", path, code)
		} else {
			t.Logf("write %s refused: %d %s", path, code, strings.TrimSpace(body))
		}
	}
	added := gust.SecretsDir + "/added"
	if code, _, err := getBody(base + url.Values{"write": {added}}.Encode()); err != nil || code/100 == 2 {
		t.Errorf("create %s in the container: got %d, %v, want it refused (read-only)", added, code, err)
	}
	if code, _, err := getBody(base + url.Values{"file": {gust.SecretsDir + "/no-such-secret"}}.Encode()); err != nil || code == http.StatusOK {
		t.Errorf("read a secret the spec did not give: got %d, %v, want a failure", code, err)
	}
	for k, v := range inst.Labels {
		for name, s := range secrets {
			if strings.Contains(k+"="+v, string(s)) {
				t.Errorf("label %s shows the value of secret %s", k, name)
			}
		}
	}
	if h.Inspect == nil {
		t.Log("the harness cannot inspect containers: not checking what the runtime shows")
		return
	}
	shown, err := h.Inspect(ctx, inst.ID)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	for name, s := range secrets {
		for _, part := range []string{string(s), token} {
			if strings.Contains(shown, part) {
				t.Errorf("inspect shows the value of secret %s", name)
			}
		}
	}
	if !strings.Contains(shown, gust.SecretsDir) {
		t.Errorf("inspect: no mount at %s in %s", gust.SecretsDir, shown)
	}
}

// testInvalidSecretName: a secret whose name is not a plain file name is
// an EINVALID error on the field "secrets", and nothing is started.
func testInvalidSecretName(t *testing.T, h Harness) {
	for _, name := range []string{"../escape", "a/b", "..", ""} {
		spec := h.spec()
		spec.Secrets = map[string][]byte{name: []byte("x")}
		inst, err := h.Runtime.Start(h.ctx(t), spec)
		if err == nil {
			_ = h.Runtime.Remove(context.Background(), inst.ID)
		}
		if got, want := gust.ErrorField(err), "secrets"; got != want || gust.ErrorCode(err) != gust.EINVALID {
			t.Errorf("secret name %q: got %v, want an EINVALID error on %q", name, err, want)
		}
	}
}

func getBody(url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
