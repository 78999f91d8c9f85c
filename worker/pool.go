package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// Instance states.
const (
	stateStarting = iota
	stateReady
	stateStopping
)

// instance is one container of one function version in a pool. Its fields
// are guarded by the pool's mutex, except the immutable ones.
type instance struct {
	id      string // gust instance id (immutable)
	version uint64 // function version (immutable)

	cid      string // container id, set once started
	addr     string // base URL "http://ip:port", set once started
	host     string // "ip:port"
	state    int
	inflight int
	lastUsed time.Time
	readyAt  time.Time
	initDur  time.Duration // container start until ready
	// suspect instances get no new calls until a health check clears them.
	suspect bool
	// retiring instances (older version) get no new calls and stop when idle.
	retiring bool
}

// pool keeps the warm instances of one function on this worker.
//
// Lock order: Worker.mu before pool.mu; never the reverse (see LOCKS.md).
type pool struct {
	w      *Worker
	key    string
	logger *zap.Logger

	mu sync.Mutex
	fn *gust.Function
	// cfg is fn.Config() with Min and Max narrowed to this worker's share.
	cfg       gust.FunctionConfig
	instances []*instance
	waiting   int
	// changed is closed (and replaced) whenever a slot frees or an
	// instance becomes ready or fails, waking every waiting call.
	changed     chan struct{}
	lastFailErr error
	lastFailAt  time.Time
	inflight    int
	invocations uint64
	closed      bool
}

func newPool(w *Worker, fn *gust.Function) *pool {
	p := &pool{
		w:       w,
		key:     fn.Key(),
		logger:  w.logger.With(zap.String("function", fn.Key())),
		changed: make(chan struct{}),
	}
	p.fn = fn
	p.cfg = fn.Config()
	return p
}

// setFunctionLocked applies a new function record and this worker's share
// of its scale. Instances of an older version retire.
func (p *pool) setFunctionLocked(fn *gust.Function, minShare, maxShare int) {
	if fn.Version != p.fn.Version {
		for _, in := range p.instances {
			if in.version != fn.Version {
				in.retiring = true
			}
		}
	}
	p.fn = fn
	p.cfg = fn.Config()
	p.cfg.Min, p.cfg.Max = minShare, maxShare
	if p.cfg.Max < 1 {
		p.cfg.Max = 1
	}
	if p.cfg.Min > p.cfg.Max {
		p.cfg.Min = p.cfg.Max
	}
	p.broadcastLocked()
}

func (p *pool) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// errStartFailed marks a call that waited for an instance that did not
// start.
var errStartFailed = errors.New("instance failed to start")

// startError is what acquire returns for a start that failed: it is
// errStartFailed, and unwraps (errors.Unwrap) to the start's own error.
// (fmt.Errorf with two %w would not: Unwrap then gives nil, and the
// caller's message lost its cause.)
type startError struct{ err error }

func (e *startError) Error() string        { return errStartFailed.Error() + ": " + e.err.Error() }
func (e *startError) Unwrap() error        { return e.err }
func (e *startError) Is(target error) bool { return target == errStartFailed }

// errNoSlot is returned by acquire when no slot came free within its wait.
var errNoSlot = errors.New("no free instance in time")

// acquire takes a concurrency slot on a ready instance, starting one if
// the pool has no free slot and is below its max. It waits at most
// maxWait (the timer is made only when it must wait) or until ctx ends.
// cold reports that the call waited for an instance to start.
func (p *pool) acquire(ctx context.Context, maxWait time.Duration) (in *instance, cold bool, err error) {
	p.mu.Lock()
	waitStart := time.Time{}
	var timeout <-chan time.Time
	for {
		if p.closed {
			p.mu.Unlock()
			return nil, false, gust.ErrDraining
		}
		if in = p.pickLocked(); in != nil {
			in.inflight++
			p.inflight++
			p.invocations++
			cold = !waitStart.IsZero() && in.readyAt.After(waitStart)
			p.mu.Unlock()
			return in, cold, nil
		}
		if !waitStart.IsZero() && p.lastFailAt.After(waitStart) {
			err := p.lastFailErr
			p.mu.Unlock()
			return nil, false, &startError{err}
		}
		if waitStart.IsZero() {
			// A function whose last start failed a moment ago fails fast
			// rather than starting container after container.
			if p.readyCountLocked() == 0 && time.Since(p.lastFailAt) < time.Second {
				err := p.lastFailErr
				p.mu.Unlock()
				return nil, false, &startError{err}
			}
			waitStart = time.Now()
			t := time.NewTimer(maxWait)
			defer t.Stop()
			timeout = t.C
		}
		p.waiting++
		if !p.scaleUpLocked() {
			p.waiting--
			p.mu.Unlock()
			return nil, false, gust.ErrDraining
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
			p.mu.Lock()
			p.waiting--
		case <-ctx.Done():
			p.mu.Lock()
			p.waiting--
			p.mu.Unlock()
			return nil, false, ctx.Err()
		case <-timeout:
			p.mu.Lock()
			p.waiting--
			p.mu.Unlock()
			return nil, false, errNoSlot
		}
	}
}

// pickLocked returns the least-loaded ready instance with a free slot.
func (p *pool) pickLocked() *instance {
	var best *instance
	for _, in := range p.instances {
		if in.state != stateReady || in.suspect || in.retiring || in.inflight >= p.cfg.Concurrency {
			continue
		}
		if best == nil || in.inflight < best.inflight {
			best = in
		}
	}
	return best
}

func (p *pool) readyCountLocked() int {
	n := 0
	for _, in := range p.instances {
		if in.state == stateReady {
			n++
		}
	}
	return n
}

// liveLocked counts instances that count towards max: starting or ready,
// not retiring.
func (p *pool) liveLocked() (starting, ready int) {
	for _, in := range p.instances {
		if in.retiring || in.state == stateStopping {
			continue
		}
		switch in.state {
		case stateStarting:
			starting++
		case stateReady:
			ready++
		}
	}
	return
}

// scaleUpLocked starts instances for waiting calls: enough that the slots
// of instances being started cover the calls waiting for them, up to max.
// One start serves every call that waits for it. It reports false if the
// worker refused a start (it is shutting down).
func (p *pool) scaleUpLocked() bool {
	starting, ready := p.liveLocked()
	need := (p.waiting + p.cfg.Concurrency - 1) / p.cfg.Concurrency
	for starting < need && starting+ready < p.cfg.Max {
		if p.startLocked() == nil {
			return false
		}
		starting++
	}
	return true
}

// ensureMinLocked starts instances until the pool holds its minimum.
func (p *pool) ensureMinLocked() {
	starting, ready := p.liveLocked()
	for n := starting + ready; n < p.cfg.Min; n++ {
		if p.startLocked() == nil {
			return
		}
	}
}

// startLocked adds a starting instance and starts its container in a
// goroutine of the worker's. It returns nil, and starts nothing, once the
// worker has stopped starting goroutines (Drain).
func (p *pool) startLocked() *instance {
	in := &instance{id: newID(), version: p.fn.Version, state: stateStarting}
	fn := p.fn
	cfg := p.cfg
	if !p.w.spawn(func() { p.w.startInstance(p, in, fn, cfg) }) {
		return nil
	}
	// The start cannot touch the pool before this: it needs p.mu, which
	// the caller holds.
	p.instances = append(p.instances, in)
	return in
}

// started records the outcome of an instance start. It reports whether
// the instance must be stopped at once: it started, but its pool closed
// meanwhile (its function was deleted, or the worker drains), and nothing
// else would ever stop it.
func (p *pool) started(in *instance, err error) (stop bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil && p.closed {
		p.removeLocked(in)
		in.state = stateStopping
		p.broadcastLocked()
		return true
	}
	if err != nil {
		p.removeLocked(in)
		p.lastFailErr, p.lastFailAt = err, time.Now()
		p.w.metrics.InstanceStart(p.key, "failed")
	} else {
		p.w.metrics.InstanceStart(p.key, "ok")
		in.state = stateReady
		in.readyAt = time.Now()
		in.lastUsed = in.readyAt
		p.w.kickStatus()
	}
	p.broadcastLocked()
	return false
}

// release gives back the slot taken by acquire.
func (p *pool) release(in *instance) {
	p.mu.Lock()
	in.inflight--
	p.inflight--
	in.lastUsed = time.Now()
	if p.waiting > 0 {
		p.broadcastLocked()
	}
	closed := p.closed
	p.mu.Unlock()
	if closed {
		p.w.reapPool(p)
	}
}

func (p *pool) removeLocked(in *instance) bool {
	for i, x := range p.instances {
		if x == in {
			p.instances = append(p.instances[:i], p.instances[i+1:]...)
			return true
		}
	}
	return false
}

// reapLocked returns the instances to stop now: retiring or surplus idle
// ones (above the minimum, idle longer than the idle timeout). It never
// picks an instance with a call in flight.
func (p *pool) reapLocked(now time.Time) []*instance {
	var out []*instance
	starting, ready := p.liveLocked()
	live := starting + ready
	for _, in := range p.instances {
		if in.state != stateReady || in.inflight > 0 {
			continue
		}
		switch {
		case p.closed, in.retiring:
		case live > p.cfg.Min && now.Sub(in.lastUsed) >= p.cfg.IdleTimeout:
			live--
		case live > p.cfg.Max:
			live--
		default:
			continue
		}
		in.state = stateStopping
		out = append(out, in)
	}
	for _, in := range out {
		p.removeLocked(in)
	}
	return out
}

// status reports the pool for the status table.
func (p *pool) status() gust.PoolStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	starting, ready := p.liveLocked()
	return gust.PoolStatus{
		Replicas:    starting + ready,
		Available:   ready,
		InFlight:    p.inflight,
		Invocations: p.invocations,
	}
}

// waitReady blocks until the pool has a ready instance, starting one if it
// has none. It serves deploys: the first instance starts at once, so a
// broken image shows up at deploy time and the first call is warm.
func (p *pool) waitReady(ctx context.Context) error {
	p.mu.Lock()
	start := time.Now()
	for {
		if p.closed {
			p.mu.Unlock()
			return gust.ErrDraining
		}
		starting, ready := p.liveLocked()
		if ready > 0 {
			p.mu.Unlock()
			return nil
		}
		if p.lastFailAt.After(start) || starting == 0 && time.Since(p.lastFailAt) < time.Second {
			err := p.lastFailErr
			p.mu.Unlock()
			return err
		}
		if starting == 0 && p.startLocked() == nil {
			p.mu.Unlock()
			return gust.ErrDraining
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
	}
}

// containerSpec is the container of one instance.
func (w *Worker) containerSpec(fn *gust.Function, cfg gust.FunctionConfig, in *instance) gust.ContainerSpec {
	env := make([]string, 0, len(fn.Spec.EnvVars)+2)
	for k, v := range fn.Spec.EnvVars {
		env = append(env, k+"="+v)
	}
	env = append(env, "PORT="+strconv.Itoa(functionPort))
	if fn.Spec.EnvProcess != "" {
		env = append(env, "fprocess="+fn.Spec.EnvProcess)
	}
	return gust.ContainerSpec{
		Name:  "gust-" + fn.Spec.Namespace + "-" + fn.Spec.Service + "-" + in.id,
		Image: fn.Spec.Image,
		Env:   env,
		Labels: map[string]string{
			gust.LabelFunction:  fn.Spec.Service,
			gust.LabelNamespace: fn.Spec.Namespace,
			gust.LabelVersion:   strconv.FormatUint(fn.Version, 10),
			gust.LabelInstance:  in.id,
			gust.LabelWorker:    w.cfg.ID,
		},
		Port:        functionPort,
		MemoryBytes: cfg.MemoryBytes,
		NanoCPUs:    cfg.NanoCPUs,
		PidsLimit:   gust.DefaultPidsLimit,
		ReadOnly:    fn.Spec.ReadOnlyRootFilesystem,
	}
}

// functionPort is the port every function serves on inside its container
// (the OpenFaaS watchdog's port).
const functionPort = 8080

// startInstance starts the container of in and waits until it is ready.
// It runs in a goroutine of the worker's (startLocked).
func (w *Worker) startInstance(p *pool, in *instance, fn *gust.Function, cfg gust.FunctionConfig) {
	logger := p.logger.With(zap.String("instance_id", in.id))
	err := w.startContainer(p, in, fn, cfg, logger)
	if err != nil {
		logger.Warn("instance did not start", zap.Error(err))
	}
	if p.started(in, err) {
		// in.cid was set by startContainer, on this goroutine.
		logger = logger.With(zap.String("container_id", shortID(in.cid)))
		logger.Info("stopping instance: its function is gone")
		w.stopContainer(in.cid, logger)
	}
}

func (w *Worker) startContainer(p *pool, in *instance, fn *gust.Function, cfg gust.FunctionConfig, logger *zap.Logger) error {
	// Cold starts are rate-limited per worker: past ~10 per second Docker
	// slows every one of them down (DESIGN.md §10).
	select {
	case w.startSlots <- struct{}{}:
	case <-w.ctx.Done():
		return gust.ErrDraining
	}
	defer func() { <-w.startSlots }()
	t0 := time.Now()
	if err := w.ensureImage(w.ctx, fn.Spec.Image); err != nil {
		return err
	}
	c, err := w.rt.Start(w.ctx, w.containerSpec(fn, cfg, in))
	if errors.Is(err, gust.ErrContainerExited) {
		return gust.Invalidf("image", "function %s (image %s) did not become ready: %v", fn.Key(), fn.Spec.Image, err)
	}
	if err != nil {
		return fmt.Errorf("start container: %w", err)
	}
	p.mu.Lock()
	in.cid, in.addr, in.host = c.ID, "http://"+c.Addr, c.Addr
	p.mu.Unlock()
	logger = logger.With(zap.String("container_id", shortID(c.ID)))
	exited := make(chan gust.Exit, 1)
	// Not spawned only when the worker is closing: waitHealthy then
	// returns at once.
	w.spawn(func() { w.watchExit(p, in, c.ID, exited, logger) })
	if err := w.waitHealthy(w.ctx, "http://"+c.Addr, cfg, exited); err != nil {
		msg := err.Error()
		if lt, ok := w.rt.(gust.LogTailer); ok {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 5*time.Second)
			if tail, lerr := lt.TailLogs(tctx, c.ID, 5); lerr == nil && tail != "" {
				msg += "; last output: " + tail
			}
			cancel()
		}
		w.removeContainer(c.ID, logger)
		return gust.Invalidf("image", "function %s (image %s) did not become ready: %s", fn.Key(), fn.Spec.Image, msg)
	}
	p.mu.Lock()
	in.initDur = time.Since(t0)
	p.mu.Unlock()
	logger.Info("instance ready", zap.Duration("start", time.Since(t0)))
	return nil
}

// watchExit removes an instance whose container exits on its own (a crash,
// an out-of-memory kill) so that new calls go elsewhere and the pool
// starts a replacement when calls need one.
func (w *Worker) watchExit(p *pool, in *instance, cid string, exited chan<- gust.Exit, logger *zap.Logger) {
	exit, err := w.rt.Wait(w.ctx, cid)
	if err != nil {
		return // worker shutting down, or the container was removed
	}
	exited <- exit
	p.mu.Lock()
	// An instance still starting is the starter's to clean up: it reads
	// the exit from the channel and records the failed start.
	live := in.state == stateReady && p.removeLocked(in)
	if live {
		in.state = stateStopping
		p.broadcastLocked()
	}
	p.mu.Unlock()
	if live {
		logger.Warn("instance exited", zap.Int("exit_code", exit.Code), zap.Bool("oom_killed", exit.OOMKilled))
		w.instanceStopped(p, in)
		w.kickStatus()
		w.removeContainer(cid, logger)
	}
}

// waitHealthy polls the readiness check until it passes, the container
// exits or the ready timeout passes.
func (w *Worker) waitHealthy(ctx context.Context, base string, cfg gust.FunctionConfig, exited <-chan gust.Exit) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ReadyTimeout)
	defer cancel()
	delay := 2 * time.Millisecond
	for {
		if w.probe(ctx, base, cfg) == nil {
			return nil
		}
		select {
		case exit := <-exited:
			if exit.OOMKilled {
				return fmt.Errorf("container was killed for exceeding its memory limit")
			}
			return fmt.Errorf("container exited with code %d", exit.Code)
		case <-ctx.Done():
			if w.ctx.Err() != nil {
				return gust.ErrDraining
			}
			return fmt.Errorf("no answer on %s within %s", cfg.HealthPath, w.cfg.ReadyTimeout)
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay += delay / 2
		}
	}
}

// probe runs one readiness check.
func (w *Worker) probe(ctx context.Context, base string, cfg gust.FunctionConfig) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if cfg.HealthTCP {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", base[len("http://"):])
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+cfg.HealthPath, nil)
	if err != nil {
		return err
	}
	resp, err := w.probeClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("readiness answered %d", resp.StatusCode)
	}
	return nil
}
