package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/fnbuild"
)

// labelTest marks everything one run of this test binary creates.
const labelTest = "gust.test"

var (
	runID = randomID()

	dockerOnce sync.Once
	dockerErr  error // why Docker tests skip; nil when a daemon answers

	imageOnce sync.Once
	imageRef  string // the test function image, once built
	imageErr  error

	networkSeq atomic.Int64
	nameSeq    atomic.Int64
)

func randomID() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if err := cleanupRun(); err != nil {
		fmt.Fprintln(os.Stderr, "cleanup:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// testBridgePrefix names the bridges of this run's networks, so that a
// firewall a test installs matches them and no one else's.
var testBridgePrefix = "gt" + runID[:6]

// testSecretsRoot is where this run's runtimes write secrets, so that
// their checks and clean-up see only this run's directories.
var testSecretsRoot = filepath.Join("/dev/shm", "gust-test-"+runID)

// cleanupRun removes what this run left behind: containers, networks,
// the test image and the secrets' root.
func cleanupRun() error {
	if dockerErr != nil || (imageRef == "" && networkSeq.Load() == 0) {
		return nil
	}
	defer os.RemoveAll(testSecretsRoot)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer c.Close()
	var errs []error
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", labelTest+"="+runID))})
	errs = append(errs, err)
	for _, ct := range cs {
		errs = append(errs, c.ContainerRemove(ctx, ct.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}))
	}
	ns, err := c.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", "gust-test-"+runID))})
	errs = append(errs, err)
	for _, n := range ns {
		// Network holders left on it (holder.go) carry no test label.
		hs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("network", n.ID), filters.Arg("label", LabelHolder+"=true"))})
		errs = append(errs, err)
		for _, h := range hs {
			errs = append(errs, c.ContainerRemove(ctx, h.ID, container.RemoveOptions{Force: true}))
		}
		errs = append(errs, c.NetworkRemove(ctx, n.ID))
	}
	if imageRef != "" {
		_, err := c.ImageRemove(ctx, imageRef, image.RemoveOptions{Force: true, PruneChildren: true})
		if !cerrdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// MustDocker skips tb in -short mode and when no Docker daemon answers.
func MustDocker(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs a Docker Engine; skipped in -short mode")
	}
	dockerOnce.Do(func() {
		c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			dockerErr = err
			return
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, dockerErr = c.Ping(ctx)
	})
	if dockerErr != nil {
		if os.Getenv("GUST_REQUIRE_DOCKER") != "" {
			tb.Fatalf("no Docker daemon, and GUST_REQUIRE_DOCKER is set: %v", dockerErr)
		}
		tb.Skipf("no Docker daemon: %v", dockerErr)
	}
}

// MustRuntime returns an open Runtime on a network of its own. Cleanup
// removes the run's containers and the network.
func MustRuntime(tb testing.TB) *Runtime {
	tb.Helper()
	MustDocker(tb)
	cfg := Config{
		Network:      fmt.Sprintf("gust-test-%s-%d", runID, networkSeq.Add(1)),
		BridgePrefix: testBridgePrefix,
		PullTimeout:  30 * time.Second,
		SecretsRoot:  testSecretsRoot,
	}
	r, err := New(cfg, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, err := r.List(ctx, map[string]string{labelTest: runID})
		if err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		for _, inst := range list {
			if err := r.Remove(ctx, inst.ID); err != nil {
				tb.Errorf("cleanup: %v", err)
			}
		}
		if err := r.RemoveNetwork(ctx); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		if err := r.Close(); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Open(ctx); err != nil {
		tb.Fatal(err)
	}
	return r
}

// MustImage returns the test function image, building it from
// testdata/fn the first time. TestMain removes it.
func MustImage(tb testing.TB) string {
	tb.Helper()
	MustDocker(tb)
	imageOnce.Do(func() {
		r, err := New(Config{}, zap.NewNop())
		if err != nil {
			imageErr = err
			return
		}
		defer r.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		ref := "gust-test-" + runID + ":latest"
		var progress strings.Builder
		if err := fnbuild.Build(ctx, r, "testdata/fn", ref, &progress); err != nil {
			imageErr = fmt.Errorf("%w\n%s", err, progress.String())
			return
		}
		imageRef = ref
	})
	if imageErr != nil {
		tb.Fatalf("build test image: %v", imageErr)
	}
	return imageRef
}

// testSpec returns a spec for the test function image.
func testSpec(tb testing.TB) gust.ContainerSpec {
	tb.Helper()
	return gust.ContainerSpec{
		Name:  fmt.Sprintf("gust-test-%s-%d", runID, nameSeq.Add(1)),
		Image: MustImage(tb),
		Env:   []string{"PORT=8080"},
		Labels: map[string]string{
			labelTest:          runID,
			gust.LabelFunction: "fn",
			gust.LabelInstance: randomID(),
		},
		Port: 8080,
	}
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

func get(url string) (int, string, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// MustHealthy waits until inst answers 200 on /_/health.
func MustHealthy(tb testing.TB, inst gust.Instance) {
	tb.Helper()
	check.For(tb, 10*time.Second, 50*time.Millisecond, func() error {
		code, _, err := get("http://" + inst.Addr + gust.DefaultHealthPath)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("health: got status %d, want 200", code)
		}
		return nil
	})
}

func TestOpen(t *testing.T) {
	t.Run("CreatesNetwork", func(t *testing.T) {
		r := MustRuntime(t)
		ctx := context.Background()
		n, err := r.client.NetworkInspect(ctx, r.Network(), network.InspectOptions{})
		if err != nil {
			t.Fatalf("inspect network: %v", err)
		}
		if got, want := n.Labels[gust.LabelManaged], "true"; got != want {
			t.Errorf("label %s: got %q, want %q", gust.LabelManaged, got, want)
		}
		if got, want := n.Driver, "bridge"; got != want {
			t.Errorf("driver: got %q, want %q", got, want)
		}
		if err := r.Open(ctx); err != nil {
			t.Errorf("second Open: got %v, want nil", err)
		}
		if err := r.RemoveNetwork(ctx); err != nil {
			t.Fatalf("RemoveNetwork: %v", err)
		}
		if _, err := r.client.NetworkInspect(ctx, r.Network(), network.InspectOptions{}); !cerrdefs.IsNotFound(err) {
			t.Errorf("inspect removed network: got %v, want not found", err)
		}
		if err := r.RemoveNetwork(ctx); err != nil {
			t.Errorf("RemoveNetwork of a missing network: got %v, want nil", err)
		}
	})

	t.Run("LeavesForeignNetwork", func(t *testing.T) {
		MustDocker(t)
		r, err := New(Config{Network: fmt.Sprintf("gust-test-%s-%d", runID, networkSeq.Add(1))}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx := context.Background()
		resp, err := r.client.NetworkCreate(ctx, r.Network(), network.CreateOptions{Driver: "bridge"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := r.client.NetworkRemove(context.Background(), resp.ID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		if err := r.Open(ctx); err != nil {
			t.Fatalf("Open on an existing network: %v", err)
		}
		if err := r.RemoveNetwork(ctx); err != nil {
			t.Fatalf("RemoveNetwork: %v", err)
		}
		if _, err := r.client.NetworkInspect(ctx, resp.ID, network.InspectOptions{}); err != nil {
			t.Errorf("unlabelled network: got %v, want it kept", err)
		}
	})

	t.Run("NoDaemon", func(t *testing.T) {
		t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
		r, err := New(Config{}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		err = r.Open(context.Background())
		if want := "no Docker Engine answers at unix:///nonexistent/docker.sock"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open: got %v, want an error containing %q", err, want)
		}
	})
}

// countingImageClient counts the pulls it passes on.
type countingImageClient struct {
	imageClient
	pulls atomic.Int64
}

func (c *countingImageClient) ImagePull(ctx context.Context, ref string, opts image.PullOptions) (io.ReadCloser, error) {
	c.pulls.Add(1)
	return c.imageClient.ImagePull(ctx, ref, opts)
}

func TestEnsureImage(t *testing.T) {
	t.Run("Local", func(t *testing.T) {
		r := MustRuntime(t)
		ref := MustImage(t)
		counter := &countingImageClient{imageClient: r.client}
		r.pulls.client = counter
		if err := r.EnsureImage(context.Background(), ref); err != nil {
			t.Fatalf("EnsureImage: %v", err)
		}
		if got := counter.pulls.Load(); got != 0 {
			t.Errorf("pulls: got %d, want 0", got)
		}
	})

	t.Run("Missing", func(t *testing.T) {
		r := MustRuntime(t)
		counter := &countingImageClient{imageClient: r.client}
		r.pulls.client = counter
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ref := "gust-test-" + runID + "-missing:latest"
		start := time.Now()
		err := r.EnsureImage(ctx, ref)
		t.Logf("EnsureImage: %v", err)
		if got, want := gust.ErrorCode(err), gust.EINVALID; got != want {
			t.Fatalf("code: got %q (%v), want %q", got, err, want)
		}
		if got, want := gust.ErrorField(err), "image"; got != want {
			t.Errorf("field: got %q, want %q", got, want)
		}
		if msg := gust.ErrorMessage(err); !strings.Contains(msg, ref) {
			t.Errorf("message: got %q, want it to name %q", msg, ref)
		}
		if got := counter.pulls.Load(); got != 1 {
			t.Errorf("pulls: got %d, want 1", got)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("took %s, want the pull timeout to bound it", d)
		}
	})
}

func TestRuntime(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	spec := testSpec(t)
	spec.MemoryBytes = 64 << 20
	spec.NanoCPUs = 500_000_000
	spec.ReadOnly = true
	inst, err := r.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("started %s at %s", inst.ID[:12], inst.Addr)

	t.Run("Healthy", func(t *testing.T) {
		MustHealthy(t, inst)
		code, body, err := get("http://" + inst.Addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusOK {
			t.Errorf("status: got %d, want 200", code)
		}
		if got, want := strings.TrimSpace(body), inst.ID[:12]; got != want {
			t.Errorf("hostname: got %q, want %q", got, want)
		}
	})

	t.Run("Instance", func(t *testing.T) {
		if got, want := inst.Name, spec.Name; got != want {
			t.Errorf("name: got %q, want %q", got, want)
		}
		if !inst.Running {
			t.Errorf("running: got false, want true")
		}
		if inst.Created.IsZero() || time.Since(inst.Created) > time.Minute {
			t.Errorf("created: got %v, want about now", inst.Created)
		}
		for k, want := range map[string]string{
			gust.LabelManaged:  "true",
			gust.LabelFunction: "fn",
			gust.LabelInstance: spec.Labels[gust.LabelInstance],
			labelTest:          runID,
		} {
			if got := inst.Labels[k]; got != want {
				t.Errorf("label %s: got %q, want %q", k, got, want)
			}
		}
	})

	t.Run("HostConfig", func(t *testing.T) {
		c, err := r.client.ContainerInspect(ctx, inst.ID)
		if err != nil {
			t.Fatal(err)
		}
		h := c.HostConfig
		if got, want := h.Memory, spec.MemoryBytes; got != want {
			t.Errorf("memory: got %d, want %d", got, want)
		}
		if got, want := h.NanoCPUs, spec.NanoCPUs; got != want {
			t.Errorf("nano cpus: got %d, want %d", got, want)
		}
		if h.PidsLimit == nil || *h.PidsLimit != gust.DefaultPidsLimit {
			t.Errorf("pids limit: got %v, want %d", h.PidsLimit, gust.DefaultPidsLimit)
		}
		if !h.ReadonlyRootfs {
			t.Errorf("readonly rootfs: got false, want true")
		}
		if !slices.Contains(h.SecurityOpt, "no-new-privileges") {
			t.Errorf("security opt: got %q, want no-new-privileges", h.SecurityOpt)
		}
		if len(h.CapAdd) != 0 {
			t.Errorf("cap add: got %q, want none", h.CapAdd)
		}
		if !slices.Equal(h.CapDrop, []string{"ALL"}) {
			t.Errorf("cap drop: got %q, want [ALL]", h.CapDrop)
		}
		if h.Privileged || len(h.Binds) != 0 || len(h.Devices) != 0 || h.NetworkMode.IsHost() || h.PidMode.IsHost() || h.IpcMode.IsHost() || h.UsernsMode.IsHost() {
			t.Errorf("host access: privileged %v binds %q devices %v network %q pid %q ipc %q userns %q, want none",
				h.Privileged, h.Binds, h.Devices, h.NetworkMode, h.PidMode, h.IpcMode, h.UsernsMode)
		}
		for _, m := range c.Mounts {
			t.Errorf("mount: got %+v, want none (no secrets in this spec)", m)
		}
		if got, want := h.Tmpfs["/tmp"], "rw,nosuid,nodev,size=64m,mode=1777"; got != want {
			t.Errorf("tmpfs /tmp: got %q, want %q", got, want)
		}
		if got, want := c.Config.User, gust.DefaultUser; got != want {
			t.Errorf("user: got %q, want %q (the image names none)", got, want)
		}
		if got, want := h.LogConfig.Config["max-file"], "3"; got != want {
			t.Errorf("log max-file: got %q, want %q", got, want)
		}
		if got, want := h.RestartPolicy.Name, container.RestartPolicyDisabled; got != want {
			t.Errorf("restart policy: got %q, want %q", got, want)
		}
		if got, want := h.LogConfig.Type, "json-file"; got != want {
			t.Errorf("log driver: got %q, want %q", got, want)
		}
		if got, want := h.LogConfig.Config["max-size"], "10m"; got != want {
			t.Errorf("log max-size: got %q, want %q", got, want)
		}
		if len(h.PortBindings) != 0 || h.PublishAllPorts {
			t.Errorf("ports: got bindings %v, publish all %v, want none", h.PortBindings, h.PublishAllPorts)
		}
		var nets []string
		for name := range c.NetworkSettings.Networks {
			nets = append(nets, name)
		}
		if want := []string{r.Network()}; !slices.Equal(nets, want) {
			t.Errorf("networks: got %q, want %q", nets, want)
		}
	})

	// From the inside: not root, no capability, / read-only with a
	// writable /tmp.
	t.Run("Sandbox", func(t *testing.T) {
		MustHealthy(t, inst)
		for _, c := range []struct{ query, want string }{
			{"id=1", "65534:65534"},
			{"caps=1", "0000000000000000"},
		} {
			if code, body, err := get("http://" + inst.Addr + "/?" + c.query); err != nil || code != 200 || body != c.want {
				t.Errorf("?%s: got %d %q, %v, want 200 %q", c.query, code, body, err, c.want)
			}
		}
		if code, body, err := get("http://" + inst.Addr + "/?write=/tmp/.lock"); err != nil || code != 204 {
			t.Errorf("write /tmp/.lock: got %d %q, %v, want 204", code, body, err)
		}
		if code, body, err := get("http://" + inst.Addr + "/?write=/fn-was-here"); err != nil || code != 409 || !strings.Contains(body, "read-only") {
			t.Errorf("write /fn-was-here: got %d %q, %v, want 409 read-only file system", code, body, err)
		}
	})

	t.Run("List", func(t *testing.T) {
		list, err := r.List(ctx, map[string]string{gust.LabelInstance: spec.Labels[gust.LabelInstance]})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 {
			t.Fatalf("list: got %d instances, want 1", len(list))
		}
		got := list[0]
		if got.ID != inst.ID || got.Name != inst.Name || got.Addr != inst.Addr || !got.Running {
			t.Errorf("list: got %+v, want %+v", got, inst)
		}
		none, err := r.List(ctx, map[string]string{gust.LabelInstance: "no-such-instance"})
		if err != nil {
			t.Fatal(err)
		}
		if len(none) != 0 {
			t.Errorf("list of another instance: got %d, want 0", len(none))
		}
	})

	t.Run("NameConflict", func(t *testing.T) {
		_, err := r.Start(ctx, spec)
		if !errors.Is(err, gust.ErrConflict) {
			t.Errorf("second Start with one name: got %v, want gust.ErrConflict", err)
		}
	})

	t.Run("Exit", func(t *testing.T) {
		MustHealthy(t, inst)
		get("http://" + inst.Addr + "/?exit=1") // the function exits mid-answer
		exit, err := r.Wait(ctx, inst.ID)
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if want := (gust.Exit{Code: 3}); exit != want {
			t.Errorf("exit: got %+v, want %+v", exit, want)
		}
		list, err := r.List(ctx, map[string]string{gust.LabelInstance: spec.Labels[gust.LabelInstance]})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Running || list[0].Addr != "" {
			t.Errorf("list after exit: got %+v, want one stopped instance without Addr", list)
		}
	})

	t.Run("TailLogs", func(t *testing.T) {
		logs, err := r.TailLogs(ctx, inst.ID, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"fn: starting", "fn: listening on :8080", "fn: exiting with code 3"} {
			if !strings.Contains(logs, want) {
				t.Errorf("logs: got %q, want it to contain %q", logs, want)
			}
		}
		last, err := r.TailLogs(ctx, inst.ID, 1)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := last, "fn: exiting with code 3\n"; got != want {
			t.Errorf("last line: got %q, want %q", got, want)
		}
	})

	t.Run("Remove", func(t *testing.T) {
		if err := r.Stop(ctx, inst.ID, time.Second); err != nil {
			t.Errorf("Stop of an exited container: got %v, want nil", err)
		}
		if err := r.Remove(ctx, inst.ID); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if err := r.Remove(ctx, inst.ID); err != nil {
			t.Errorf("second Remove: got %v, want nil", err)
		}
		if _, err := r.client.ContainerInspect(ctx, inst.ID); !cerrdefs.IsNotFound(err) {
			t.Errorf("inspect removed container: got %v, want not found", err)
		}
	})
}

// TestSandbox_Defaults: a spec that sets no CPU limit and no read-only
// root gets DefaultNanoCPUs and no /tmp tmpfs; a spec with User runs as
// that user, with its secrets readable by it.
func TestSandbox_Defaults(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	spec := testSpec(t)
	inst, err := r.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer r.Remove(ctx, inst.ID)
	c, err := r.client.ContainerInspect(ctx, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	if hc := c.Config.Healthcheck; hc == nil || len(hc.Test) != 1 || hc.Test[0] != "NONE" {
		t.Errorf("healthcheck %+v, want the image's disabled (NONE)", hc)
	}
	if got, want := c.HostConfig.NanoCPUs, int64(gust.DefaultNanoCPUs); got != want {
		t.Errorf("nano cpus: got %d, want %d", got, want)
	}
	if c.HostConfig.ReadonlyRootfs || len(c.HostConfig.Tmpfs) != 0 {
		t.Errorf("read-only %v tmpfs %v, want neither", c.HostConfig.ReadonlyRootfs, c.HostConfig.Tmpfs)
	}
	MustHealthy(t, inst)
	if code, body, err := get("http://" + inst.Addr + "/?id=1"); err != nil || code != 200 || body != "65534:65534" {
		t.Errorf("?id=1: got %d %q, %v, want 200 65534:65534", code, body, err)
	}

	for _, user := range []string{"1000:1000", "0"} {
		spec := testSpec(t)
		spec.User = user
		spec.Secrets = map[string][]byte{"token": []byte("for-" + user)}
		inst, err := r.Start(ctx, spec)
		if err != nil {
			t.Fatalf("Start as %s: %v", user, err)
		}
		defer r.Remove(ctx, inst.ID)
		MustHealthy(t, inst)
		want := user
		if !strings.Contains(want, ":") {
			want += ":0" // Docker's group of a bare uid without a passwd entry
		}
		if code, body, err := get("http://" + inst.Addr + "/?id=1"); err != nil || code != 200 || body != want {
			t.Errorf("?id=1 as %s: got %d %q, %v, want 200 %q", user, code, body, err, want)
		}
		// Root without capabilities is root in name only.
		if code, body, err := get("http://" + inst.Addr + "/?caps=1"); err != nil || code != 200 || body != "0000000000000000" {
			t.Errorf("?caps=1 as %s: got %d %q, %v, want no capability", user, code, body, err)
		}
		if code, body, err := get("http://" + inst.Addr + "/?file=" + gust.SecretsDir + "/token"); err != nil || code != 200 || body != "for-"+user {
			t.Errorf("secret as %s: got %d %q, %v", user, code, body, err)
		}
	}

	spec = testSpec(t)
	spec.User = "nobody"
	if _, err := r.Start(ctx, spec); gust.ErrorCode(err) != gust.EINVALID {
		t.Errorf("Start as a user name: got %v, want EINVALID", err)
	}
}

func TestStop(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := r.Start(ctx, testSpec(t))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	MustHealthy(t, inst)
	start := time.Now()
	if err := r.Stop(ctx, inst.ID, 1500*time.Millisecond); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Stop took %s, want it bounded by the grace", d)
	}
	if _, err := r.Wait(ctx, inst.ID); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	c, err := r.client.ContainerInspect(ctx, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.State.Running {
		t.Errorf("running after Stop: got true, want false")
	}
	if err := r.Remove(ctx, inst.ID); err != nil {
		t.Errorf("Remove: %v", err)
	}
}

func TestStart_RemovesFailedContainer(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := testSpec(t)
	// The network the container would join is gone behind the runtime's
	// back: create succeeds, start fails.
	if err := r.client.NetworkRemove(ctx, r.Network()); err != nil {
		t.Fatal(err)
	}
	_, err := r.Start(ctx, spec)
	if err == nil {
		t.Fatal("Start without the network: got nil, want an error")
	}
	if want := "start container"; !strings.Contains(err.Error(), want) {
		t.Fatalf("Start without the network: got %v, want the start (not the create) to fail", err)
	}
	list, err := r.List(ctx, map[string]string{gust.LabelInstance: spec.Labels[gust.LabelInstance]})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("containers left after a failed Start: got %d, want 0", len(list))
	}
	// The failed start made the runtime forget the network: the next
	// start makes it again.
	inst, err := r.Start(ctx, testSpec(t))
	if err != nil {
		t.Fatalf("Start after the network was removed: %v", err)
	}
	if err := r.Remove(ctx, inst.ID); err != nil {
		t.Error(err)
	}
}

func TestStart_InvalidPort(t *testing.T) {
	r, err := New(Config{}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = r.Start(context.Background(), gust.ContainerSpec{Name: "x", Image: "x"})
	if got, want := gust.ErrorField(err), "port"; got != want {
		t.Errorf("field: got %q (%v), want %q", got, err, want)
	}
}

func TestUnknownID(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const id = "gust-test-no-such-container"
	for name, fn := range map[string]func() error{
		"Wait":     func() error { _, err := r.Wait(ctx, id); return err },
		"Stop":     func() error { return r.Stop(ctx, id, time.Second) },
		"TailLogs": func() error { _, err := r.TailLogs(ctx, id, 10); return err },
	} {
		t.Run(name, func(t *testing.T) {
			if err := fn(); !errors.Is(err, gust.ErrInstanceNotFound) {
				t.Errorf("got %v, want gust.ErrInstanceNotFound", err)
			}
		})
	}
	t.Run("Remove", func(t *testing.T) {
		if err := r.Remove(ctx, id); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})
}
