package docker

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"go.uber.org/zap/zaptest"

	"github.com/gustfaas/gust"
)

// startIn starts the test function in namespace ns and waits until it
// answers.
func startIn(t *testing.T, r *Runtime, ns string) gust.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := testSpec(t)
	spec.Labels[gust.LabelNamespace] = ns
	inst, err := r.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start in %s: %v", ns, err)
	}
	t.Cleanup(func() { _ = r.Remove(context.Background(), inst.ID) })
	MustHealthy(t, inst)
	return inst
}

// dial asks the function at inst to open a TCP connection to addr from
// inside its container; nil when it connected.
func dial(t *testing.T, inst gust.Instance, addr string) error {
	t.Helper()
	resp, err := dialClient.Get("http://" + inst.Addr + "/?dial=" + url.QueryEscape(addr))
	if err != nil {
		t.Fatalf("ask %s to dial %s: %v", inst.Addr, addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("ask %s to dial %s: %v", inst.Addr, addr, err)
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return errors.New(strings.TrimSpace(string(body)))
}

// dialClient waits longer than the function's own dial timeout (2s), so
// that a dial that is dropped, not refused, answers in time.
var dialClient = &http.Client{Timeout: 15 * time.Second}

// host returns the IP of inst.Addr.
func host(t *testing.T, inst gust.Instance) string {
	t.Helper()
	h, _, err := net.SplitHostPort(inst.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustInspectNetwork(t *testing.T, r *Runtime, name string) network.Inspect {
	t.Helper()
	n, err := r.client.NetworkInspect(context.Background(), name, network.InspectOptions{})
	if err != nil {
		t.Fatalf("inspect network %s: %v", name, err)
	}
	return n
}

// TestNetworks_Namespaces: each namespace gets a bridge network of its
// own, named and labelled by Gust, with traffic between its containers
// off; a function reaches no container of another namespace, nor one of
// its own, while the worker (this test, on the host) reaches them all.
func TestNetworks_Namespaces(t *testing.T) {
	r := MustRuntime(t)
	a1 := startIn(t, r, "team-a")
	a2 := startIn(t, r, "team-a")
	b := startIn(t, r, "team-b")

	for _, ns := range []string{"team-a", "team-b"} {
		n := mustInspectNetwork(t, r, r.NetworkOf(ns))
		if got, want := n.Name, r.Network()+"-"+ns; got != want {
			t.Errorf("network of %s: got %q, want %q", ns, got, want)
		}
		for k, want := range map[string]string{gust.LabelManaged: "true", gust.LabelNamespace: ns} {
			if got := n.Labels[k]; got != want {
				t.Errorf("network of %s: label %s: got %q, want %q", ns, k, got, want)
			}
		}
		if got := n.Options[optBridgeName]; !strings.HasPrefix(got, r.BridgePrefix()) || len(got) > 15 {
			t.Errorf("network of %s: bridge %q, want a name of at most 15 characters starting with %q", ns, got, r.BridgePrefix())
		}
		if got, want := n.Options[optICC], "false"; got != want {
			t.Errorf("network of %s: %s: got %q, want %q", ns, optICC, got, want)
		}
	}
	if got := mustInspectNetwork(t, r, r.NetworkOf(gust.DefaultNamespace)).Name; got != r.Network() {
		t.Errorf("network of %s: got %q, want %q", gust.DefaultNamespace, got, r.Network())
	}

	// Addresses are on the namespace's network, in Start and in List.
	for _, inst := range []gust.Instance{a1, b} {
		ns := inst.Labels[gust.LabelNamespace]
		c, err := r.client.ContainerInspect(context.Background(), inst.ID)
		if err != nil {
			t.Fatal(err)
		}
		ep := c.NetworkSettings.Networks[r.NetworkOf(ns)]
		if ep == nil || len(c.NetworkSettings.Networks) != 1 {
			t.Fatalf("container in %s: networks %v, want only %s", ns, c.NetworkSettings.Networks, r.NetworkOf(ns))
		}
		if got, want := host(t, inst), ep.IPAddress; got != want {
			t.Errorf("Start address in %s: got %s, want %s", ns, got, want)
		}
		list, err := r.List(context.Background(), map[string]string{gust.LabelInstance: inst.Labels[gust.LabelInstance]})
		if err != nil || len(list) != 1 || list[0].Addr != inst.Addr {
			t.Errorf("List address in %s: got %+v, %v, want %s", ns, list, err, inst.Addr)
		}
	}

	if err := dial(t, a1, b.Addr); err == nil {
		t.Errorf("team-a reached team-b's container at %s", b.Addr)
	} else {
		t.Logf("team-a → team-b: %v", err)
	}
	if err := dial(t, b, a1.Addr); err == nil {
		t.Errorf("team-b reached team-a's container at %s", a1.Addr)
	}
	if err := dial(t, a1, a2.Addr); err == nil {
		t.Errorf("a container reached another of its namespace at %s with traffic between containers off", a2.Addr)
	}
	// Each dial above failed because of the rules, not because nothing
	// listens: the function dials itself fine.
	if err := dial(t, a1, a1.Addr); err != nil {
		t.Errorf("a function dialling itself: %v", err)
	}
}

// TestNetworks_ConcurrentCreation: runtimes that know nothing of each
// other (as two workers) starting the first functions of a namespace at
// once all succeed, on one network.
func TestNetworks_ConcurrentCreation(t *testing.T) {
	first := MustRuntime(t)
	var rts []*Runtime
	for range 3 {
		r, err := New(first.cfg, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		rts = append(rts, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(rts))
	for i, r := range rts {
		spec := testSpec(t)
		spec.Labels[gust.LabelNamespace] = "race"
		wg.Go(func() {
			inst, err := r.Start(ctx, spec)
			if err == nil {
				t.Cleanup(func() { _ = r.Remove(context.Background(), inst.ID) })
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Start %d: %v", i, err)
		}
	}
	list, err := first.client.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", first.NetworkOf("race")))})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Errorf("networks named %s: got %d, want 1", first.NetworkOf("race"), len(list))
	}
}

// TestNetworks_Attach: a worker in a container joins every function
// network, those that exist and those made later (with traffic between
// containers on, so that it reaches functions), and leaves them on
// RemoveNetwork, which then removes them.
func TestNetworks_Attach(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The "worker": a container of the test image on Docker's default
	// bridge, which dials for us.
	w := testSpec(t)
	created, err := r.client.ContainerCreate(ctx, &container.Config{Image: w.Image, Env: w.Env, Labels: w.Labels}, nil, nil, nil, w.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Remove(context.Background(), created.ID) })
	if err := r.client.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Attach(ctx, w.Name); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	// Open made the default namespace's network, with traffic between
	// containers off and nothing on it: Attach made it go, to be made
	// again with that traffic on.
	if _, err := r.client.NetworkInspect(ctx, r.Network(), network.InspectOptions{}); err == nil {
		t.Errorf("after Attach: %s, empty and with traffic between containers off, still there", r.Network())
	}
	def := startIn(t, r, "")
	if n := mustInspectNetwork(t, r, r.Network()); n.Containers[created.ID].Name == "" || n.Options[optICC] != "true" {
		t.Errorf("after Attach: %s: containers %v, %s %q, want %s on it with traffic between containers on", r.Network(), n.Containers, optICC, n.Options[optICC], w.Name)
	}
	// A network that exists when the worker attaches is joined.
	r2, err := New(r.cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r.client.NetworkDisconnect(ctx, r.Network(), created.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := r2.Attach(ctx, w.Name); err != nil {
		t.Fatalf("Attach of a second runtime: %v", err)
	}
	if n := mustInspectNetwork(t, r, r.Network()); n.Containers[created.ID].Name == "" {
		t.Errorf("after a second Attach: %s not on %s, which existed", w.Name, r.Network())
	}
	fn := startIn(t, r, "later")
	n := mustInspectNetwork(t, r, r.NetworkOf("later"))
	if _, ok := n.Containers[created.ID]; !ok {
		t.Errorf("%s not on %s, made after Attach", w.Name, n.Name)
	}
	if got, want := n.Options[optICC], "true"; got != want {
		t.Errorf("network made after Attach: %s: got %q, want %q", optICC, got, want)
	}
	c, err := r.client.ContainerInspect(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	ep := c.NetworkSettings.Networks[n.Name]
	if ep == nil {
		t.Fatalf("worker container has no endpoint on %s", n.Name)
	}
	worker := gust.Instance{Addr: net.JoinHostPort(c.NetworkSettings.Networks[n.Name].IPAddress, "8080")}
	if err := dial(t, worker, fn.Addr); err != nil {
		t.Errorf("the worker's container did not reach the function at %s: %v", fn.Addr, err)
	}

	for _, id := range []string{fn.ID, def.ID} {
		if err := r.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.RemoveNetwork(ctx); err != nil {
		t.Fatalf("RemoveNetwork: %v", err)
	}
	for _, name := range []string{r.Network(), r.NetworkOf("later")} {
		if _, err := r.client.NetworkInspect(ctx, name, network.InspectOptions{}); err == nil {
			t.Errorf("network %s still there after RemoveNetwork", name)
		}
	}
}

// TestNetworks_RecreatesStale: an unused network of Gust's made before
// bridges were named by Gust is made again on Open.
func TestNetworks_RecreatesStale(t *testing.T) {
	r := MustRuntime(t)
	ctx := context.Background()
	if err := r.RemoveNetwork(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.NetworkCreate(ctx, r.Network(), network.CreateOptions{
		Driver: "bridge", Labels: map[string]string{gust.LabelManaged: "true"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.Open(ctx); err != nil {
		t.Fatalf("Open: %v", err)
	}
	n := mustInspectNetwork(t, r, r.Network())
	if got, want := n.Options[optBridgeName], r.bridgeName(r.Network()); got != want {
		t.Errorf("bridge: got %q, want %q", got, want)
	}
}

// TestNetworks_BridgeName: bridge names fit Linux's 15 characters and
// differ between networks.
func TestNetworks_BridgeName(t *testing.T) {
	r, err := New(Config{SecretsRoot: filepath.Join(t.TempDir(), "s")}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a, b := r.bridgeName(r.NetworkOf("a")), r.bridgeName(r.NetworkOf("b"))
	if len(a) != 15 || !strings.HasPrefix(a, DefaultBridgePrefix) || a == b {
		t.Errorf("bridge names: got %q and %q, want two different 15-character names starting with %q", a, b, DefaultBridgePrefix)
	}
	if _, err := New(Config{BridgePrefix: "toolongpfx"}, zaptest.NewLogger(t)); err == nil {
		t.Errorf("New with a 10-character bridge prefix: got nil, want an error")
	}
}
