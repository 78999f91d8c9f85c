package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/proxy"
	"go.uber.org/zap"
)

// Instance states. An idle instance above the warm minimum may go ready
// → pausing → paused (pause.go); a call it is needed for takes it through
// resuming back to ready.
const (
	stateStarting = iota
	stateReady
	stateStopping
	statePausing
	statePaused
	stateResuming
)

// instance is one container of one function version in a pool. Its fields
// are guarded by the pool's mutex, except the immutable ones.
type instance struct {
	id      string // gust instance id (immutable)
	version uint64 // function version (immutable)

	cid  string // container id, set once started
	addr string // base URL "http://ip:port", set once started
	host string // "ip:port"
	// client sends its calls, on connections of its own (set with host,
	// its idle connections closed when it leaves its pool).
	client   *proxy.Client
	state    int
	inflight int
	lastUsed time.Time
	readyAt  time.Time
	initDur  time.Duration // container start until ready
	// suspect instances get no new calls until a health check clears them.
	suspect bool
	// retiring instances (older version) get no new calls and stop when idle.
	retiring bool
	// pausedAt is when it was last paused (zero while it is not);
	// pausedFor sums its earlier pauses, for its instance record. wake
	// asks a pause in progress to resume at once (a call needs it).
	pausedAt  time.Time
	pausedFor time.Duration
	wake      bool
	// cpuTotal is its cumulative CPU time read at cpuAt (cpu.go).
	cpuTotal time.Duration
	cpuAt    time.Time
	// prepared: its container was prepared ahead (prepare.go).
	prepared bool
	// calls are its last calls' spans, to tie its log lines to them
	// (logs.go); they have their own lock.
	calls callSpans
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
	cpus := cfg.NanoCPUs
	if cpus == 0 {
		cpus = gust.DefaultNanoCPUs
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
		NanoCPUs:    cpus,
		PidsLimit:   gust.DefaultPidsLimit,
		ReadOnly:    fn.Spec.ReadOnlyRootFilesystem,
		User:        cfg.User,
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
	// The instance's init time, metered with its cold start: all the
	// start took, from its secrets and image to its first readiness.
	begun := time.Now()
	secrets, err := w.readSecrets(w.ctx, fn)
	if err != nil {
		return err
	}
	if err := w.ensureImage(w.ctx, fn.Spec.Image); err != nil {
		return err
	}
	spec := w.containerSpec(fn, cfg, in)
	spec.Secrets = secrets
	// Engine starts are limited per worker by their measured pace
	// (startlimit.go): past a few at once, each one only gets slower.
	t0, err := w.starts.acquire(w.ctx)
	if err != nil {
		return gust.ErrDraining
	}
	kind := startFresh
	if in.prepared {
		kind = startPrepared
	}
	c, err := w.rt.Start(w.ctx, spec)
	// A start the Engine did not finish in time is the slowest sample of
	// all; other failures say nothing of its pace.
	w.starts.release(t0, kind, time.Since(t0), err == nil || errors.Is(err, context.DeadlineExceeded))
	if errors.Is(err, gust.ErrContainerExited) {
		return gust.Invalidf("image", "function %s (image %s) did not become ready: %v", fn.Key(), fn.Spec.Image, err)
	}
	if err != nil {
		return fmt.Errorf("start container: %w", err)
	}
	p.mu.Lock()
	in.cid, in.addr, in.host = c.ID, "http://"+c.Addr, c.Addr
	logger = logger.With(zap.String("container_id", shortID(c.ID)))
	if dial := w.instanceDial(c.NetNS, c.Addr, logger); dial != nil {
		in.client = proxy.NewClientDial(c.Addr, w.transport, dial)
	} else {
		in.client = proxy.NewClient(c.Addr, w.transport)
	}
	p.mu.Unlock()
	w.collectLogs(fn, in, c.ID, logger)
	exited := make(chan gust.Exit, 1)
	// Not spawned only when the worker is closing: waitHealthy then
	// returns at once.
	w.tasks.Go(func(context.Context) { w.watchExit(p, in, c.ID, exited, logger) })
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
	in.initDur = time.Since(begun)
	p.mu.Unlock()
	logger.Info("instance ready", zap.Duration("start", time.Since(begun)))
	// The next start of this pool finds its container ready (prepare.go).
	w.tasks.Go(func(context.Context) { w.prepareNext(p, fn, cfg) })
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
	live := in.state != stateStarting && in.state != stateStopping && p.removeLocked(in)
	if live {
		in.state = stateStopping
		p.broadcastLocked()
	}
	p.mu.Unlock()
	if live {
		logger.Warn("instance exited", zap.Int("exit_code", exit.Code), zap.Bool("oom_killed", exit.OOMKilled))
		w.instanceStopped(p, in)
		w.kickStatus()
		w.awaitLogs(cid)
		w.removeContainer(cid, logger)
	}
}

// Readiness polling: every readyPoll for the first readyFast, then less
// and less often, up to every 50 ms. A container started in a network
// holder has its address before its process runs, so a probe that comes
// too early is refused at once and costs little; polling fast while a
// start usually ends is what keeps a cold start's first answer early.
const (
	readyPoll = 2 * time.Millisecond
	readyFast = time.Second
)

// waitHealthy polls the readiness check until it passes, the container
// exits or the ready timeout passes.
func (w *Worker) waitHealthy(ctx context.Context, base string, cfg gust.FunctionConfig, exited <-chan gust.Exit) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ReadyTimeout)
	defer cancel()
	t0 := time.Now()
	delay := readyPoll
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
		if delay < 50*time.Millisecond && time.Since(t0) > readyFast {
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

// instanceStopped meters the life of an instance that was ready: the
// capacity its function held from ready until now.
func (w *Worker) instanceStopped(p *pool, in *instance) {
	now := time.Now()
	p.mu.Lock()
	readyAt := in.readyAt
	mib := p.cfg.MemoryBytes >> 20
	fn := p.fn
	paused := in.pausedFor
	if !in.pausedAt.IsZero() {
		paused += now.Sub(in.pausedAt)
	}
	p.mu.Unlock()
	if readyAt.IsZero() || w.meter == nil {
		return
	}
	w.meter.RecordInstance(&gust.InstanceRecord{
		Instance: in.id, Namespace: fn.Spec.Namespace, Function: fn.Spec.Service, Worker: w.cfg.ID,
		MemoryMiB: mib, Ready: readyAt.UTC(), Stopped: now.UTC(), PausedMs: paused.Milliseconds(),
	})
}

// stopContainer stops a container gracefully and removes it. It runs to
// the end even when the worker closes: what it stops must not be left.
func (w *Worker) stopContainer(cid string, logger *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), w.cfg.StopGrace+30*time.Second)
	defer cancel()
	if err := w.rt.Stop(ctx, cid, w.cfg.StopGrace); err != nil && !errors.Is(err, gust.ErrInstanceNotFound) {
		logger.Warn("stop container", zap.Error(err))
	}
	w.awaitLogs(cid) // its last lines, before they go with the container
	w.removeContainer(cid, logger)
}

func (w *Worker) removeContainer(cid string, logger *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 30*time.Second)
	defer cancel()
	if err := w.rt.Remove(ctx, cid); err != nil {
		logger.Warn("remove container", zap.Error(err))
	}
}

// readSecrets reads the values of the secrets fn's spec lists, from its
// namespace, now: each instance start reads them again, so that an
// updated secret reaches new instances. A secret that does not exist, or
// secrets on a worker without a store, is an EINVALID error on the field
// "secrets" (a deploy answers 400).
func (w *Worker) readSecrets(ctx context.Context, fn *gust.Function) (map[string][]byte, error) {
	if len(fn.Spec.Secrets) == 0 {
		return nil, nil
	}
	if w.secrets == nil {
		return nil, gust.Invalidf("secrets", "function %s lists secrets, but secrets are not enabled on worker %s", fn.Key(), w.cfg.ID)
	}
	out := make(map[string][]byte, len(fn.Spec.Secrets))
	for _, name := range fn.Spec.Secrets {
		v, err := w.secrets.Get(ctx, fn.Spec.Namespace, name)
		if errors.Is(err, gust.ErrNotFound) {
			return nil, gust.Invalidf("secrets", "secret %q does not exist in namespace %s", name, fn.Spec.Namespace)
		}
		if err != nil {
			return nil, fmt.Errorf("read secret %s of namespace %s: %w", name, fn.Spec.Namespace, err)
		}
		out[name] = v
	}
	return out, nil
}

// maxParallelPulls bounds the image pulls a worker runs at once, as the
// start slots bounded them before starts had a measured limit.
const maxParallelPulls = 4

// ensureImage makes an image present, once per worker run.
func (w *Worker) ensureImage(ctx context.Context, ref string) error {
	w.mu.Lock()
	ok := w.images[ref]
	w.mu.Unlock()
	if ok {
		return nil
	}
	// Pulls of different images at once are bounded (those of one image
	// are one pull already, the runtime's): a worker taking over many
	// functions would otherwise pull all their images together.
	select {
	case w.pulls <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	err := w.rt.EnsureImage(ctx, ref)
	<-w.pulls
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.images[ref] = true
	w.mu.Unlock()
	return nil
}
