package docker

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/netns"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// TestHolderELF checks the hand-assembled holder program: a valid static
// amd64 executable whose one segment holds the whole file and whose entry
// point is the pause loop.
func TestHolderELF(t *testing.T) {
	f, err := elf.NewFile(bytes.NewReader(holderELF))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC || f.Data != elf.ELFDATA2LSB {
		t.Errorf("header: class %v machine %v type %v data %v", f.Class, f.Machine, f.Type, f.Data)
	}
	if len(f.Progs) != 1 {
		t.Fatalf("program headers: got %d, want 1", len(f.Progs))
	}
	p := f.Progs[0]
	if p.Type != elf.PT_LOAD || p.Flags != elf.PF_R|elf.PF_X || p.Off != 0 || p.Filesz != uint64(len(holderELF)) || p.Memsz != p.Filesz {
		t.Errorf("segment: %+v", p.ProgHeader)
	}
	if f.Entry < p.Vaddr || f.Entry >= p.Vaddr+p.Filesz {
		t.Fatalf("entry %#x outside the segment", f.Entry)
	}
	code := holderELF[f.Entry-p.Vaddr:]
	// mov eax, 34 (pause); syscall; jmp back to the mov.
	want := []byte{0xb8, 0x22, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7}
	if !bytes.Equal(code, want) {
		t.Errorf("code: got % x, want % x", code, want)
	}
	if !strings.HasPrefix(holderImage, "gust-holder:") {
		t.Errorf("image tag %q", holderImage)
	}
}

// waitHolders waits until r has n idle holders for the key of spec.
func waitHolders(t *testing.T, r *Runtime, spec gust.ContainerSpec, n int) []holder {
	t.Helper()
	ns := spec.Labels[gust.LabelNamespace]
	key := holderKey{network: r.NetworkOf(ns), ns: ns, worker: spec.Labels[gust.LabelWorker]}
	var idle []holder
	check.For(t, time.Minute, 20*time.Millisecond, func() error {
		r.holders.mu.Lock()
		defer r.holders.mu.Unlock()
		p := r.holders.pools[key]
		if p == nil || len(p.idle) < n {
			return fmt.Errorf("idle holders: want %d", n)
		}
		idle = append([]holder(nil), p.idle...)
		return nil
	})
	return idle
}

// TestHolderStart: a start through a network holder keeps every sandbox
// setting, answers on the holder's address, resolves the gateway host
// names, is listed with that address; the holder is sandboxed and carries
// the worker's label; holders are made again after use; removing the
// instance removes its holder, and Close removes the idle ones.
func TestHolderStart(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	worker := "holder-test-" + runID
	spec := func() gust.ContainerSpec {
		s := workerSpec(t, worker)
		s.ReadOnly = true
		s.MemoryBytes = 64 << 20
		s.PidsLimit = 50
		s.Secrets = map[string][]byte{"token": []byte("held")}
		return s
	}
	// The first start of a key finds no holder: it attaches itself, and
	// the runtime makes holders for the next.
	first, err := r.Start(ctx, spec())
	if err != nil {
		t.Fatalf("first Start: %v", err)
	}
	defer r.Remove(ctx, first.ID)
	if first.Labels[labelHolderOf] != "" {
		t.Errorf("first start used a holder: none should have been ready")
	}
	s := spec()
	idle := waitHolders(t, r, s, DefaultHolders)

	inst, err := r.Start(ctx, s)
	if err != nil {
		t.Fatalf("Start in a holder: %v", err)
	}
	hid := inst.Labels[labelHolderOf]
	if hid == "" {
		t.Fatalf("Start did not use a holder: labels %v", inst.Labels)
	}
	var h holder
	for _, x := range idle {
		if x.id == hid {
			h = x
		}
	}
	if want := h.ip + ":8080"; inst.Addr != want {
		t.Errorf("Addr: got %s, want the holder's %s", inst.Addr, want)
	}
	MustHealthy(t, inst)

	// The function's sandbox is the one of any start.
	c, err := r.client.ContainerInspect(ctx, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	hc := c.HostConfig
	if got := string(hc.NetworkMode); got != "container:"+hid {
		t.Errorf("network mode: got %s", got)
	}
	if len(hc.CapDrop) != 1 || hc.CapDrop[0] != "ALL" || len(hc.CapAdd) != 0 || hc.Privileged {
		t.Errorf("capabilities: drop %v add %v privileged %v", hc.CapDrop, hc.CapAdd, hc.Privileged)
	}
	if !strings.Contains(strings.Join(hc.SecurityOpt, ","), "no-new-privileges") {
		t.Errorf("security options: %v", hc.SecurityOpt)
	}
	if !hc.ReadonlyRootfs || hc.Tmpfs["/tmp"] == "" || hc.Memory != 64<<20 || hc.MemorySwap != 64<<20 ||
		hc.PidsLimit == nil || *hc.PidsLimit != 50 || hc.NanoCPUs != gust.DefaultNanoCPUs {
		t.Errorf("limits: ro %v tmpfs %v mem %d swap %d pids %v cpus %d", hc.ReadonlyRootfs, hc.Tmpfs, hc.Memory, hc.MemorySwap, hc.PidsLimit, hc.NanoCPUs)
	}
	if hc.LogConfig.Type != "json-file" || hc.LogConfig.Config["max-size"] != logMaxSize {
		t.Errorf("log config: %+v", hc.LogConfig)
	}
	for _, l := range []string{gust.LabelManaged, gust.LabelWorker, gust.LabelInstance, labelPort, labelIP} {
		if c.Config.Labels[l] == "" {
			t.Errorf("label %s missing: %v", l, c.Config.Labels)
		}
	}
	if code, body, err := get("http://" + inst.Addr + "/?caps=1"); err != nil || code != 200 || body != "0000000000000000" {
		t.Errorf("?caps=1: got %d %q, %v, want no capability", code, body, err)
	}
	if code, body, err := get("http://" + inst.Addr + "/?file=" + gust.SecretsDir + "/token"); err != nil || code != 200 || body != "held" {
		t.Errorf("secret: got %d %q, %v", code, body, err)
	}
	if code, _, err := get("http://" + inst.Addr + "/?write=/etc/x"); err != nil || code/100 == 2 {
		t.Errorf("write to the read-only root: got %d, %v, want a refusal", code, err)
	}
	if code, body, err := get("http://" + inst.Addr + "/?file=/etc/hosts"); err != nil || code != 200 || !strings.Contains(body, "gateway.openfaas") {
		t.Errorf("/etc/hosts: got %d %q, %v, want the gateway host names", code, body, err)
	}

	// The holder: no capability, no new privileges, tiny limits, the
	// worker's label.
	hcn, err := r.client.ContainerInspect(ctx, hid)
	if err != nil {
		t.Fatal(err)
	}
	hh := hcn.HostConfig
	if len(hh.CapDrop) != 1 || hh.CapDrop[0] != "ALL" || !strings.Contains(strings.Join(hh.SecurityOpt, ","), "no-new-privileges") ||
		hh.Memory != holderMemory || hh.PidsLimit == nil || *hh.PidsLimit != holderPids || !hh.ReadonlyRootfs || hh.Privileged {
		t.Errorf("holder sandbox: drop %v sec %v mem %d pids %v ro %v", hh.CapDrop, hh.SecurityOpt, hh.Memory, hh.PidsLimit, hh.ReadonlyRootfs)
	}
	if l := hcn.Config.Labels; l[gust.LabelManaged] != "true" || l[gust.LabelWorker] != worker || l[LabelHolder] != "true" {
		t.Errorf("holder labels: %v", l)
	}
	if hcn.Config.User != holderUser {
		t.Errorf("holder user: got %q", hcn.Config.User)
	}

	// Listed with its address; the worker's label finds the holders too
	// (what a worker's leftovers and orphans removal relies on).
	list, err := r.List(ctx, map[string]string{gust.LabelInstance: s.Labels[gust.LabelInstance]})
	if err != nil || len(list) != 1 || list[0].Addr != inst.Addr {
		t.Errorf("List: got %+v, %v, want it with Addr %s", list, err, inst.Addr)
	}
	byWorker, err := r.List(ctx, map[string]string{gust.LabelWorker: worker})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range byWorker {
		found = found || l.ID == hid
	}
	if !found {
		t.Errorf("List by worker label: holder %s missing", hid)
	}

	// Refilled after use.
	waitHolders(t, r, s, DefaultHolders)

	// Removing the instance removes its holder.
	if err := r.Remove(ctx, inst.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := r.client.ContainerInspect(ctx, hid); err == nil {
		t.Errorf("holder %s left after its instance was removed", hid)
	}
	if err := r.Remove(ctx, first.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}

	// Close removes the idle holders (MustRuntime's cleanup closes again,
	// which is harmless).
	r.closeHolders()
	left, err := r.List(ctx, map[string]string{gust.LabelWorker: worker})
	if err != nil || len(left) != 0 {
		t.Errorf("containers of the worker after closing: got %d, %v, want none", len(left), err)
	}
}

// TestHolderStart_HolderGone: a start whose holder was removed behind the
// runtime's back still starts, attached to the network itself, and leaves
// no container of the failed try.
func TestHolderStart_HolderGone(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	first, err := r.Start(ctx, testSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, first.ID)
	s := testSpec(t)
	for _, h := range waitHolders(t, r, s, DefaultHolders) {
		r.removeHolder(ctx, h.id)
	}
	inst, err := r.Start(ctx, s)
	if err != nil {
		t.Fatalf("Start with its holder gone: %v", err)
	}
	defer r.Remove(ctx, inst.ID)
	if inst.Labels[labelHolderOf] != "" {
		t.Errorf("started in a holder that was gone")
	}
	MustHealthy(t, inst)
	list, err := r.List(ctx, map[string]string{gust.LabelInstance: s.Labels[gust.LabelInstance]})
	if err != nil || len(list) != 1 {
		t.Errorf("List: got %+v, %v, want the one container", list, err)
	}
}

// TestPrepare: a prepared container is created in a holder and not
// started; a Start of the same spec starts it (same id, address known),
// and it answers; a Start of a different spec under that name removes it
// and starts afresh; Unprepare removes one not started, with its holder;
// a spec with secrets is not prepared.
func TestPrepare(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	spec := workerSpec(t, "prepare-test-"+runID)
	spec.ReadOnly = true
	if err := r.Prepare(ctx, spec); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	r.holders.mu.Lock()
	p := r.holders.prepared[spec.Name]
	r.holders.mu.Unlock()
	if p == nil {
		t.Fatal("nothing prepared")
	}
	c, err := r.client.ContainerInspect(ctx, p.id)
	if err != nil {
		t.Fatal(err)
	}
	if c.State.Running || c.State.Status != "created" || !strings.HasPrefix(string(c.HostConfig.NetworkMode), "container:") ||
		c.Config.Labels[gust.LabelWorker] != spec.Labels[gust.LabelWorker] || !c.HostConfig.ReadonlyRootfs || c.HostConfig.CapDrop[0] != "ALL" {
		t.Errorf("prepared container: status %s mode %s labels %v", c.State.Status, c.HostConfig.NetworkMode, c.Config.Labels)
	}
	// The environment in another order is the same spec.
	again := spec
	again.Env = append([]string{"B=2"}, spec.Env...)
	spec.Env = append(spec.Env, "B=2")
	if err := r.Prepare(ctx, spec); err != nil {
		t.Fatalf("Prepare again: %v", err)
	}
	r.holders.mu.Lock()
	p2 := r.holders.prepared[spec.Name]
	r.holders.mu.Unlock()
	if _, err := r.client.ContainerInspect(ctx, p.id); err == nil {
		t.Errorf("preparing a name again left the first container")
	}
	inst, err := r.Start(ctx, again)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer r.Remove(ctx, inst.ID)
	if inst.ID != p2.id || !inst.Running || inst.Addr == "" {
		t.Errorf("Start: got %+v, want the prepared container %s running", inst, p2.id)
	}
	MustHealthy(t, inst)

	// A different spec under a prepared name: the prepared one goes.
	other := testSpec(t)
	if err := r.Prepare(ctx, other); err != nil {
		t.Fatal(err)
	}
	r.holders.mu.Lock()
	p3 := r.holders.prepared[other.Name]
	r.holders.mu.Unlock()
	changed := other
	changed.Env = append(slicesClone(other.Env), "CHANGED=1")
	inst2, err := r.Start(ctx, changed)
	if err != nil {
		t.Fatalf("Start of a changed spec: %v", err)
	}
	defer r.Remove(ctx, inst2.ID)
	if inst2.ID == p3.id {
		t.Errorf("a changed spec started the container prepared for another")
	}
	MustHealthy(t, inst2)
	if code, body, err := get("http://" + inst2.Addr + "/?env=CHANGED"); err == nil && code == 200 && body != "1" {
		t.Logf("?env=CHANGED: %d %q", code, body)
	}

	// Unprepare removes the container and its holder.
	third := testSpec(t)
	if err := r.Prepare(ctx, third); err != nil {
		t.Fatal(err)
	}
	r.holders.mu.Lock()
	p4 := r.holders.prepared[third.Name]
	r.holders.mu.Unlock()
	c4, err := r.client.ContainerInspect(ctx, p4.id)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Unprepare(ctx, third.Name); err != nil {
		t.Fatalf("Unprepare: %v", err)
	}
	for _, id := range []string{p4.id, c4.Config.Labels[labelHolderOf]} {
		if _, err := r.client.ContainerInspect(ctx, id); err == nil {
			t.Errorf("container %s left after Unprepare", id)
		}
	}

	secret := testSpec(t)
	secret.Secrets = map[string][]byte{"a": []byte("b")}
	if err := r.Prepare(ctx, secret); gust.ErrorCode(err) != gust.EINVALID {
		t.Errorf("Prepare with secrets: got %v, want EINVALID", err)
	}
}

// workerSpec is testSpec labelled as worker's: the runtime keeps holders
// and prepared containers per worker, and a test's own worker id keeps
// them apart from other tests'.
func workerSpec(tb testing.TB, worker string) gust.ContainerSpec {
	s := testSpec(tb)
	s.Labels[gust.LabelWorker] = worker
	return s
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// TestHolder_Reconcile: after a crash (a runtime never closed), removing
// every container that carries the worker's label, as a worker's
// removal of leftovers does with a fresh runtime, leaves nothing of the
// holders, the prepared container and the instance started in a holder,
// and the network can go.
func TestHolder_Reconcile(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	worker := "reconcile-test-" + runID
	spec := func() gust.ContainerSpec { return workerSpec(t, worker) }
	if _, err := r.Start(ctx, spec()); err != nil {
		t.Fatal(err)
	}
	s := spec()
	waitHolders(t, r, s, DefaultHolders)
	if inst, err := r.Start(ctx, s); err != nil || inst.Labels[labelHolderOf] == "" {
		t.Fatalf("Start in a holder: %+v, %v", inst, err)
	}
	if err := r.Prepare(ctx, spec()); err != nil {
		t.Fatal(err)
	}
	waitHolders(t, r, s, DefaultHolders)

	// The "crash": r is dropped; a new runtime reconciles by label.
	r.holders.mu.Lock()
	r.holders.closed = true // no refill behind the reconcile's back
	r.holders.mu.Unlock()
	r.holders.wg.Wait()
	fresh, err := New(r.cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	left, err := fresh.List(ctx, map[string]string{gust.LabelWorker: worker})
	if err != nil {
		t.Fatal(err)
	}
	var holders, prep, running int
	for _, c := range left {
		switch {
		case c.Labels[LabelHolder] == "true":
			holders++
		case c.Labels[LabelPrepared] == "true":
			prep++
		case c.Running:
			running++
		}
	}
	// The idle holders, the holders of the instance and of the prepared
	// container (the first start went without one), the prepared
	// container and the 2 instances.
	if holders < DefaultHolders+2 || prep != 1 || running != 2 {
		t.Errorf("listed by worker label: %d holders, %d prepared, %d running; want at least %d, 1, 2", holders, prep, running, DefaultHolders+2)
	}
	for _, c := range left {
		if err := fresh.Remove(ctx, c.ID); err != nil {
			t.Errorf("remove %s: %v", c.ID, err)
		}
	}
	if again, err := fresh.List(ctx, map[string]string{gust.LabelWorker: worker}); err != nil || len(again) != 0 {
		t.Errorf("after the reconcile: %d containers, %v; want none", len(again), err)
	}
	r.holders.mu.Lock()
	r.holders.pools = map[holderKey]*holderPool{} // removed above
	r.holders.prepared = map[string]*prepared{}
	r.holders.mu.Unlock()
	if err := fresh.RemoveNetwork(ctx); err != nil {
		t.Errorf("RemoveNetwork after the reconcile: %v", err)
	}
}

// TestHolders_MadeWhenStartsQuiet: no holder is made while a start runs
// (in a burst it would load the Engine the starts wait for; a start that
// finds none attaches its container itself), the holders wanted are made
// once starts have been quiet, and closing the runtime does not wait for
// a start to end to give up the holders it has not begun making.
func TestHolders_MadeWhenStartsQuiet(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	worker := "holder-quiet-" + runID
	spec := workerSpec(t, worker)
	ns := spec.Labels[gust.LabelNamespace]
	netName, nw, err := r.ensureNetwork(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	made := func() int {
		t.Helper()
		cs, err := r.client.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
			filters.Arg("label", LabelHolder+"=true"), filters.Arg("label", gust.LabelWorker+"="+worker))})
		if err != nil {
			t.Fatal(err)
		}
		return len(cs)
	}

	end := r.beginStart() // a start in flight
	if _, ok := r.holderFor(netName, ns, nw, spec.Labels); ok {
		t.Fatal("a holder was idle before any was made")
	}
	time.Sleep(2 * time.Second) // well past startsQuiet and a holder's making
	if n := made(); n != 0 {
		t.Errorf("%d holders made while a start ran, want none", n)
	}
	end()
	waitHolders(t, r, spec, DefaultHolders)
	if n := made(); n != DefaultHolders {
		t.Errorf("%d holders once starts were quiet, want %d", n, DefaultHolders)
	}

	// Take them, with a start in flight again: the holders wanted in
	// their place wait, and closing gives them up at once.
	end = r.beginStart()
	defer end()
	for range DefaultHolders {
		h, ok := r.holderFor(netName, ns, nw, spec.Labels)
		if !ok {
			t.Fatal("an idle holder was not given")
		}
		defer r.removeHolder(context.WithoutCancel(ctx), h.id)
	}
	closed := make(chan struct{})
	go func() {
		r.closeHolders()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("closing waited for the start in flight")
	}
	if n := made(); n != DefaultHolders {
		t.Errorf("%d holders after closing, want the %d taken", n, DefaultHolders)
	}
}

// TestStart_NetNS: an instance started in a holder and one attached to
// its network itself each come with a network namespace the host can
// enter, in which the function answers on 127.0.0.1 and sees its calls
// come from there.
func TestStart_NetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("entering a network namespace takes root")
	}
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	worker := "netns-test-" + runID
	spec := func() gust.ContainerSpec { return workerSpec(t, worker) }
	first, err := r.Start(ctx, spec()) // no holder is ready yet
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, first.ID)
	waitHolders(t, r, spec(), 1)
	held, err := r.Start(ctx, spec())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, held.ID)
	if held.Labels[labelHolderOf] == "" || first.Labels[labelHolderOf] != "" {
		t.Fatalf("holders: first %q, second %q; want none, then one", first.Labels[labelHolderOf], held.Labels[labelHolderOf])
	}
	for _, inst := range []gust.Instance{first, held} {
		MustHealthy(t, inst)
		if inst.NetNS == "" {
			t.Fatalf("%s: no network namespace", inst.Name)
		}
		c, err := netns.Dial(ctx, &net.Dialer{}, inst.NetNS, "127.0.0.1:8080")
		if err != nil {
			t.Fatalf("%s: %v", inst.Name, err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		req, _ := http.NewRequest(http.MethodGet, "http://fn/?peer=1", nil)
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			t.Fatalf("%s: %v", inst.Name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = c.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(b), "127.0.0.1:") {
			t.Errorf("%s over its loopback: %d %q, want 200 from 127.0.0.1", inst.Name, resp.StatusCode, b)
		}
	}
}

// TestHolders_TriedAgain: a holder the Engine refuses to make (here: its
// network is gone) is tried holderTries times, then no more until the
// next start asks.
func TestHolders_TriedAgain(t *testing.T) {
	r := MustRuntime(t)
	core, logs := observer.New(zap.InfoLevel)
	r.logger = zap.New(core)
	spec := workerSpec(t, "holder-retry-"+runID)
	ns := spec.Labels[gust.LabelNamespace]
	gone := "gust-test-gone-" + runID
	if _, ok := r.holderFor(gone, ns, netInfo{}, spec.Labels); ok {
		t.Fatal("a holder was idle on a network that does not exist")
	}
	count := func() (retries, failures int) {
		return logs.FilterMessage("make network holder: trying again").Len(), logs.FilterMessage("make network holder").Len()
	}
	check.For(t, time.Minute, 50*time.Millisecond, func() error {
		if retries, failures := count(); failures < DefaultHolders {
			return fmt.Errorf("%d tries again and %d holders given up so far", retries, failures)
		}
		return nil
	})
	time.Sleep(2 * holderTries * holderRetry) // what another round would take
	if retries, failures := count(); retries != DefaultHolders*(holderTries-1) || failures != DefaultHolders {
		t.Errorf("%d tries again and %d holders given up, want %d and %d", retries, failures, DefaultHolders*(holderTries-1), DefaultHolders)
	}
}
