package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"go.uber.org/zap"

	"github.com/gustfaas/gust"
)

// Network-namespace holders (issue 11, a faster cold start).
//
// Most of a container's start on Docker is its network: a veth pair, the
// bridge port, an address, the firewall rules. A container started in a
// network namespace that already exists (NetworkMode "container:<id>")
// skips all of it and answers in about half the time. So the runtime
// keeps, per namespace network (and worker), a few tiny holder containers
// already attached to it, each running a process that only blocks. Start
// takes one, creates the function container in its namespace and gives
// the holder's address as the instance's (known ahead: no inspect); a
// holder is made again in the background for the next start, once no
// start has run for a moment (in a burst, making holders would load the
// Engine that the starts wait for). Removing an instance removes its
// holder. When no holder is ready, or on an Engine that is not amd64 (the
// holder binary is amd64 code), Start attaches the container to the
// network itself, as before.
//
// Holders carry gust.managed=true and the gust.worker of the specs they
// serve, so that a worker's removal of its leftovers and of a gone
// worker's orphans reconciles them after a crash like any container; and
// gust.holder=true, which tells them apart. The joined container shares
// the holder's /etc/hosts, so the holder carries the gateway host names.

// Labels of holders and of the containers started in one.
const (
	// LabelHolder is "true" on a holder: a sandbox kept ahead, not an
	// instance.
	LabelHolder = "gust.holder"
	// labelHolderOf is the holder's id on a container started in it.
	labelHolderOf = "gust.holder-id"
	// labelIP is the IP address of a container started in a holder (its
	// own network settings show none), so that List can rebuild Addr.
	labelIP = "gust.ip"
	// LabelPrepared is "true" on a container created by Prepare
	// (prepare.go): until it is started, it is a sandbox made ahead, not
	// an instance.
	LabelPrepared = "gust.prepared"
)

// DefaultHolders is Config.Holders when it is zero.
const DefaultHolders = 2

// Limits of a holder: its one process only blocks.
const (
	holderMemory = 16 << 20   // runc init runs in it before the program: 6 MiB (the Engine minimum) failed under load
	holderPids   = 4          // runc's set-up forks before the program runs
	holderCPUs   = 10_000_000 // 0.01 CPU
	holderUser   = "65534:65534"
)

// holderELF is the whole holder program, a static Linux amd64 ELF
// executable of 129 bytes: a 64-byte file header, one 56-byte program
// header that maps the file read+execute at 0x400000, and 9 bytes of code
// at its entry point 0x400078:
//
//	loop: mov eax, 34   ; b8 22 00 00 00   pause(2)
//	      syscall       ; 0f 05
//	      jmp loop      ; eb f7            a signal ends pause: block again
//
// As PID 1 of its container it ignores the signals it has no handler
// for, so it ends only when killed (Remove kills it). Hand-assembled
// because no toolchain runs where Gust does, and no registry is at hand;
// TestHolderELF checks the layout and TestHolderStart runs it.
var holderELF = func() []byte {
	code := []byte{0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7}
	const (
		base    = 0x400000
		ehsize  = 64
		phsize  = 56
		codeOff = ehsize + phsize
	)
	le := binary.LittleEndian
	b := make([]byte, codeOff+len(code))
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little-endian */, 1 /* version */, 0 /* System V */})
	le.PutUint16(b[16:], 2)            // e_type: executable
	le.PutUint16(b[18:], 0x3e)         // e_machine: x86-64
	le.PutUint32(b[20:], 1)            // e_version
	le.PutUint64(b[24:], base+codeOff) // e_entry
	le.PutUint64(b[32:], ehsize)       // e_phoff
	le.PutUint16(b[52:], ehsize)       // e_ehsize
	le.PutUint16(b[54:], phsize)       // e_phentsize
	le.PutUint16(b[56:], 1)            // e_phnum
	ph := b[ehsize:]
	le.PutUint32(ph[0:], 1)               // p_type: PT_LOAD
	le.PutUint32(ph[4:], 5)               // p_flags: read + execute
	le.PutUint64(ph[8:], 0)               // p_offset
	le.PutUint64(ph[16:], base)           // p_vaddr
	le.PutUint64(ph[24:], base)           // p_paddr
	le.PutUint64(ph[32:], uint64(len(b))) // p_filesz
	le.PutUint64(ph[40:], uint64(len(b))) // p_memsz
	le.PutUint64(ph[48:], 0x1000)         // p_align
	copy(b[codeOff:], code)
	return b
}()

// holderImage is the tag of the holder image: the program's hash, so that
// a changed program gets an image of its own.
var holderImage = func() string {
	sum := sha256.Sum256(holderELF)
	return "gust-holder:" + hex.EncodeToString(sum[:6])
}()

// holder is a holder container, running and attached to its network.
type holder struct {
	id    string
	ip    string
	netns string // its network namespace (gust.Instance.NetNS)
}

// holderKey says which holders can serve a start: those on its network,
// carrying its worker's label.
type holderKey struct {
	network string
	ns      string
	worker  string
}

// holderPool is the idle holders of one key and how many are being made.
type holderPool struct {
	idle    []holder
	filling int
	gateway string // the network's gateway, for the host names
}

// holders is the runtime's state of holders.
type holders struct {
	mu    sync.Mutex
	pools map[holderKey]*holderPool
	// ok says whether holders can run on this Engine: nil until checked
	// (then the image exists), false for good when they cannot.
	ok     *bool
	closed bool
	wg     sync.WaitGroup // holders being made
	// prepared are the containers created ahead and not started, by
	// name (prepare.go).
	prepared map[string]*prepared
	// starting counts the Starts in flight; quiet is closed while it is
	// zero (nil before the first). Holders are made only then
	// (refillLocked).
	starting int
	quiet    chan struct{}
	closing  chan struct{} // closed by closeHolders
}

// beginStart counts a Start in flight until the function it returns is
// called.
func (r *Runtime) beginStart() (end func()) {
	r.holders.mu.Lock()
	if r.holders.starting == 0 {
		r.holders.quiet = make(chan struct{})
	}
	r.holders.starting++
	r.holders.mu.Unlock()
	return func() {
		r.holders.mu.Lock()
		if r.holders.starting--; r.holders.starting == 0 {
			close(r.holders.quiet)
		}
		r.holders.mu.Unlock()
	}
}

// startsQuiet is how long no Start has to run before holders are made:
// in a burst, one start follows another within it (the worker's start
// limit hands a freed slot to the next at once).
const startsQuiet = 50 * time.Millisecond

// whenStartsQuiet waits until no Start has run for startsQuiet, or until
// the runtime closes (false).
func (r *Runtime) whenStartsQuiet() bool {
	for {
		r.holders.mu.Lock()
		ch := r.holders.quiet
		r.holders.mu.Unlock()
		if ch != nil {
			select {
			case <-ch:
			case <-r.holders.closing:
				return false
			}
		}
		if !r.holdersWait(startsQuiet) {
			return false
		}
		r.holders.mu.Lock()
		quiet := r.holders.starting == 0
		r.holders.mu.Unlock()
		if quiet {
			return true
		}
	}
}

// holderKeyOf is the key of the holders that can serve a start on network
// netName of namespace ns with labels.
func holderKeyOf(netName, ns string, labels map[string]string) holderKey {
	return holderKey{network: netName, ns: ns, worker: labels[gust.LabelWorker]}
}

// holderFor returns an idle holder for a start on network netName of
// namespace ns with labels, and makes another in the background. ok is
// false when none is ready: the start then attaches its container to the
// network itself.
func (r *Runtime) holderFor(netName, ns string, nw netInfo, labels map[string]string) (h holder, ok bool) {
	if r.cfg.Holders < 0 {
		return holder{}, false
	}
	key := holderKeyOf(netName, ns, labels)
	r.holders.mu.Lock()
	defer r.holders.mu.Unlock()
	if r.holders.closed || (r.holders.ok != nil && !*r.holders.ok) {
		return holder{}, false
	}
	p := r.holders.pools[key]
	if p == nil {
		p = &holderPool{}
		r.holders.pools[key] = p
	}
	p.gateway = nw.gateway
	if n := len(p.idle); n > 0 {
		h, ok = p.idle[n-1], true
		p.idle = p.idle[:n-1]
	}
	r.refillLocked(key, p)
	return h, ok
}

// refillLocked makes holders in the background until key has
// Config.Holders of them, idle or being made. Called with holders.mu held.
func (r *Runtime) refillLocked(key holderKey, p *holderPool) {
	gateway := p.gateway // read under the lock; holderFor sets it
	for len(p.idle)+p.filling < r.cfg.Holders && !r.holders.closed {
		p.filling++
		r.holders.wg.Add(1)
		go func() {
			defer r.holders.wg.Done()
			h, err := r.makeHolderWhenQuiet(key, gateway)
			r.holders.mu.Lock()
			p.filling--
			keep := err == nil && !r.holders.closed
			if keep {
				p.idle = append(p.idle, h)
			}
			r.holders.mu.Unlock()
			switch {
			case errors.Is(err, errHoldersClosed):
			case err != nil:
				// The next start tries again (without one: no busy loop
				// against an Engine that refuses).
				r.logger.Warn("make network holder", zap.String("network", key.network), zap.Error(err))
			case !keep:
				ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), r.cfg.CallTimeout)
				r.removeHolder(ctx, h.id)
				cancel()
			}
		}()
	}
}

// holdersWait waits d, or until the runtime closes (false).
func (r *Runtime) holdersWait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.holders.closing:
		return false
	}
}

// errHoldersClosed ends the making of a holder that had not begun when
// the runtime closed.
var errHoldersClosed = errors.New("runtime closed")

// holderTries is how many times a holder is tried before the next start
// tries again, holderRetry how long after the first failure: a loaded
// Engine fails a start now and then ("cannot start a stopped process"),
// and one that keeps refusing is not asked again and again.
const (
	holderTries = 3
	holderRetry = 500 * time.Millisecond
)

// makeHolderWhenQuiet makes a holder for key once no start runs, up to
// holderTries times.
func (r *Runtime) makeHolderWhenQuiet(key holderKey, gateway string) (holder, error) {
	var err error
	for try := 1; try <= holderTries; try++ {
		// A holder made while starts run would load the Engine they
		// wait for: in a burst, a start that finds no holder attaches
		// its container to the network itself, the same work done once
		// instead of twice.
		if !r.whenStartsQuiet() {
			return holder{}, errHoldersClosed
		}
		// Not cancelled by Close, which waits for it: a creation cut
		// short could leave a holder nobody knows of.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), r.cfg.CallTimeout)
		var h holder
		h, err = r.makeHolder(ctx, key, gateway)
		cancel()
		if err == nil || try == holderTries {
			return h, err
		}
		r.logger.Info("make network holder: trying again", zap.String("network", key.network), zap.Int("try", try), zap.Error(err))
		if !r.holdersWait(time.Duration(try) * holderRetry) {
			return holder{}, errHoldersClosed
		}
	}
	return holder{}, err
}

// makeHolder creates and starts a holder for key and returns it with its
// IP address on the network.
func (r *Runtime) makeHolder(ctx context.Context, key holderKey, gateway string) (holder, error) {
	if err := r.ensureHolderImage(ctx); err != nil {
		return holder{}, err
	}
	labels := map[string]string{
		gust.LabelManaged:   "true",
		gust.LabelNamespace: key.ns,
		LabelHolder:         "true",
	}
	if key.worker != "" {
		labels[gust.LabelWorker] = key.worker
	}
	pids := int64(holderPids)
	cfg := &container.Config{Image: holderImage, User: holderUser, Labels: labels}
	host := &container.HostConfig{
		NetworkMode:    container.NetworkMode(key.network),
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
		ReadonlyRootfs: true,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		LogConfig:      container.LogConfig{Type: "none"},
		Resources: container.Resources{
			Memory:     holderMemory,
			MemorySwap: holderMemory,
			NanoCPUs:   holderCPUs,
			PidsLimit:  &pids,
		},
	}
	if gateway != "" {
		for _, h := range gatewayHosts {
			host.ExtraHosts = append(host.ExtraHosts, h+":"+gateway)
		}
	}
	netCfg := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{key.network: {}}}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "gust-holder-" + key.ns + "-" + hex.EncodeToString(b[:])
	resp, err := r.client.ContainerCreate(ctx, cfg, host, netCfg, nil, name)
	if err != nil {
		return holder{}, fmt.Errorf("create holder: %w", err)
	}
	h, err := r.startHolder(ctx, resp.ID, key.network)
	if err != nil {
		r.removeHolder(ctx, resp.ID)
		return holder{}, err
	}
	return h, nil
}

func (r *Runtime) startHolder(ctx context.Context, id, netName string) (holder, error) {
	if err := r.client.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return holder{}, fmt.Errorf("start holder: %w", err)
	}
	c, err := r.client.ContainerInspect(ctx, id)
	if err != nil {
		return holder{}, fmt.Errorf("inspect holder: %w", err)
	}
	if c.State == nil || !c.State.Running {
		return holder{}, fmt.Errorf("start holder: it does not run")
	}
	if c.NetworkSettings == nil || c.NetworkSettings.Networks[netName] == nil || c.NetworkSettings.Networks[netName].IPAddress == "" {
		return holder{}, fmt.Errorf("inspect holder: no IP address on network %s", netName)
	}
	return holder{id: id, ip: c.NetworkSettings.Networks[netName].IPAddress, netns: c.NetworkSettings.SandboxKey}, nil
}

// removeHolder removes a holder, logging what fails.
func (r *Runtime) removeHolder(ctx context.Context, id string) {
	err := r.client.ContainerRemove(ctx, id, container.RemoveOptions{Force: true})
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		r.logger.Warn("remove network holder", zap.String("container_id", id), zap.Error(err))
	}
}

// ensureHolderImage makes sure the holder image exists, importing it from
// memory (no registry, no build) on first use. On an Engine that is not
// amd64 it fails, and holders are off for good.
func (r *Runtime) ensureHolderImage(ctx context.Context) error {
	r.holders.mu.Lock()
	ok := r.holders.ok
	r.holders.mu.Unlock()
	if ok != nil {
		if !*ok {
			return fmt.Errorf("holders do not run on this Engine")
		}
		return nil
	}
	// Holders are made one pool at a time at most at first: two imports
	// of one image are harmless.
	good, err := r.importHolderImage(ctx)
	if err != nil {
		return err
	}
	r.holders.mu.Lock()
	r.holders.ok = &good
	r.holders.mu.Unlock()
	if !good {
		r.logger.Info("network holders are off: the Docker Engine is not amd64; cold starts attach containers to their network")
		return fmt.Errorf("holders do not run on this Engine")
	}
	return nil
}

// importHolderImage imports the holder image unless it exists. It
// reports false, and no error, when the Engine is not amd64.
func (r *Runtime) importHolderImage(ctx context.Context) (bool, error) {
	v, err := r.client.ServerVersion(ctx)
	if err != nil {
		return false, fmt.Errorf("engine version: %w", err)
	}
	if v.Arch != "amd64" || v.Os != "linux" {
		return false, nil
	}
	if _, err := r.client.ImageInspect(ctx, holderImage); err == nil {
		return true, nil
	} else if !cerrdefs.IsNotFound(err) {
		return false, fmt.Errorf("inspect holder image: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: "holder", Mode: 0o555, Size: int64(len(holderELF)), ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return false, err
	}
	if _, err := tw.Write(holderELF); err != nil {
		return false, err
	}
	if err := tw.Close(); err != nil {
		return false, err
	}
	rc, err := r.client.ImageImport(ctx, image.ImportSource{Source: &buf, SourceName: "-"}, holderImage, image.ImportOptions{
		Changes: []string{`ENTRYPOINT ["/holder"]`, `LABEL ` + gust.LabelManaged + `=true`},
	})
	if err != nil {
		return false, fmt.Errorf("import holder image: %w", err)
	}
	defer rc.Close()
	if err := readStream(rc, func(streamMessage) {}); err != nil {
		return false, fmt.Errorf("import holder image: %w", err)
	}
	r.logger.Info("imported network holder image", zap.String("image", holderImage))
	return true, nil
}

// removeIdleHolders removes the idle holders, after waiting for those
// being made when wait is set. Holders in use go with their containers.
func (r *Runtime) removeIdleHolders(ctx context.Context, wait bool) {
	if wait {
		r.holders.wg.Wait()
	}
	r.holders.mu.Lock()
	var ids []string
	for _, p := range r.holders.pools {
		for _, h := range p.idle {
			ids = append(ids, h.id)
		}
		p.idle = nil
	}
	r.holders.mu.Unlock()
	for _, id := range ids {
		r.removeHolder(ctx, id)
	}
}

// closeHolders stops making holders, waits for those being made and
// removes every idle one, and every prepared container.
func (r *Runtime) closeHolders() {
	r.holders.mu.Lock()
	if !r.holders.closed {
		close(r.holders.closing)
	}
	r.holders.closed = true
	r.holders.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CallTimeout)
	defer cancel()
	r.removePrepared(ctx)
	r.removeIdleHolders(ctx, true)
}
