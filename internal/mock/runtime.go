// Package mock holds function-field fakes of Gust's interfaces, for tests
// that need a narrow seam instead of a real dependency (STYLE.md §6).
//
// The main one is Runtime, a gust.Runtime that runs no containers: each
// "container" it starts is an HTTP server on 127.0.0.1 serving a handler
// the test chooses. It behaves as internal/docker does (the conformance
// suite in internal/runtimetest runs against both), so that the worker's
// pool can be tested in seconds without a Docker Engine.
package mock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gustfaas/gust"
)

var (
	_ gust.Runtime    = (*Runtime)(nil)
	_ gust.LogTailer  = (*Runtime)(nil)
	_ gust.CPUSampler = (*Runtime)(nil)
)

// Exit codes the fake reports, as Docker does for a Go function killed by
// a signal.
const (
	ExitStopped = 143 // SIGTERM: Stop of a running container
	ExitKilled  = 137 // SIGKILL: Remove of a running container
)

// Runtime is a gust.Runtime whose methods call the matching ...Fn field.
// NewRuntime wires every field to a working in-memory runtime; a test
// replaces one field to inject a failure, keeping the old value to call
// through:
//
//	rt := mock.NewRuntime(nil)
//	t.Cleanup(rt.Close)
//	start := rt.StartFn
//	rt.StartFn = func(ctx context.Context, spec gust.ContainerSpec) (gust.Instance, error) {
//		if failing.Load() {
//			return gust.Instance{}, errors.New("boom")
//		}
//		return start(ctx, spec)
//	}
//
// Set the fields before the code under test runs: they are read without a
// lock. A zero Runtime (no constructor) panics on any call whose field is
// nil, as wtf's mocks do.
type Runtime struct {
	EnsureImageFn func(ctx context.Context, ref string) error
	StartFn       func(ctx context.Context, spec gust.ContainerSpec) (gust.Instance, error)
	WaitFn        func(ctx context.Context, id string) (gust.Exit, error)
	StopFn        func(ctx context.Context, id string, grace time.Duration) error
	RemoveFn      func(ctx context.Context, id string) error
	ListFn        func(ctx context.Context, labels map[string]string) ([]gust.Instance, error)
	TailLogsFn    func(ctx context.Context, id string, lines int) (string, error)
	// CPUUsageFn is gust.CPUSampler's; the default reports no CPU used
	// (0) for a known container.
	CPUUsageFn func(ctx context.Context, id string) (time.Duration, error)
	// PauseFn and UnpauseFn are gust.Pauser's. A paused fake container
	// takes connections but answers nothing until it is unpaused, as a
	// frozen process.
	PauseFn, UnpauseFn func(ctx context.Context, id string) error

	handler func(spec gust.ContainerSpec) http.Handler

	mu          sync.Mutex
	containers  map[string]*container // by id; removed ones are gone
	names       map[string]string     // container name → id
	missing     map[string]bool       // images EnsureImage cannot have
	exitOnStart map[string]int        // image → exit code of a container that exits at once
	starts      int                   // calls of the default Start
	removes     int                   // containers the default Remove removed
	closed      bool

	// wg counts the servers' Serve goroutines and the handlers they run;
	// it is added to only under mu while !closed, so never after Close
	// began to wait.
	wg sync.WaitGroup
}

// container is one fake container: an HTTP server while it runs.
type container struct {
	inst    gust.Instance
	image   string
	env     []string
	srv     *http.Server
	exit    gust.Exit
	exited  chan struct{} // closed when it stops running
	logs    []string
	stopped bool
	// thawed is closed while the container is not paused; a paused one
	// has a fresh open channel, closed when it is unpaused.
	thawed chan struct{}
	// secrets is the temporary directory holding the files of
	// spec.Secrets (what the container sees at gust.SecretsDir); "" when
	// it has none. Removed with the container, or by Close.
	secrets string
}

// NewRuntime returns a Runtime whose fields run an in-memory runtime.
// Every container it starts serves handler(spec) on its own 127.0.0.1 port
// (Instance.Addr); a nil handler serves DefaultHandler. Register Close with
// t.Cleanup.
func NewRuntime(handler func(spec gust.ContainerSpec) http.Handler) *Runtime {
	if handler == nil {
		handler = func(gust.ContainerSpec) http.Handler { return DefaultHandler() }
	}
	r := &Runtime{
		handler:     handler,
		containers:  map[string]*container{},
		names:       map[string]string{},
		missing:     map[string]bool{},
		exitOnStart: map[string]int{},
	}
	r.EnsureImageFn = r.ensureImage
	r.StartFn = r.start
	r.WaitFn = r.wait
	r.StopFn = r.stop
	r.RemoveFn = r.remove
	r.ListFn = r.list
	r.TailLogsFn = r.tailLogs
	r.CPUUsageFn = r.cpuUsage
	r.PauseFn = r.pause
	r.UnpauseFn = r.unpause
	return r
}

// Pause calls PauseFn.
func (r *Runtime) Pause(ctx context.Context, id string) error { return r.PauseFn(ctx, id) }

// Unpause calls UnpauseFn.
func (r *Runtime) Unpause(ctx context.Context, id string) error { return r.UnpauseFn(ctx, id) }

// Paused reports whether container id is paused.
func (r *Runtime) Paused(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil {
		return false
	}
	select {
	case <-c.thawed:
		return false
	default:
		return true
	}
}

// pause freezes a running container; pausing a paused one is an error,
// as with Docker.
func (r *Runtime) pause(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pause container: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	switch {
	case c == nil:
		return fmt.Errorf("pause container: %w: %s", gust.ErrInstanceNotFound, id)
	case c.stopped:
		return fmt.Errorf("pause container: container %s is not running", id)
	}
	select {
	case <-c.thawed:
		c.thawed = make(chan struct{})
		return nil
	default:
		return fmt.Errorf("pause container: container %s is already paused", id)
	}
}

// unpause thaws a paused container.
func (r *Runtime) unpause(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("unpause container: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil {
		return fmt.Errorf("unpause container: %w: %s", gust.ErrInstanceNotFound, id)
	}
	select {
	case <-c.thawed:
		return fmt.Errorf("unpause container: container %s is not paused", id)
	default:
		close(c.thawed)
		return nil
	}
}

// CPUUsage calls CPUUsageFn.
func (r *Runtime) CPUUsage(ctx context.Context, id string) (time.Duration, error) {
	return r.CPUUsageFn(ctx, id)
}

func (r *Runtime) cpuUsage(_ context.Context, id string) (time.Duration, error) {
	if _, err := r.lookup("cpu usage", id); err != nil {
		return 0, err
	}
	return 0, nil
}

// EnsureImage calls EnsureImageFn.
func (r *Runtime) EnsureImage(ctx context.Context, ref string) error {
	return r.EnsureImageFn(ctx, ref)
}

// Start calls StartFn.
func (r *Runtime) Start(ctx context.Context, spec gust.ContainerSpec) (gust.Instance, error) {
	return r.StartFn(ctx, spec)
}

// Wait calls WaitFn.
func (r *Runtime) Wait(ctx context.Context, id string) (gust.Exit, error) {
	return r.WaitFn(ctx, id)
}

// Stop calls StopFn.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	return r.StopFn(ctx, id, grace)
}

// Remove calls RemoveFn.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	return r.RemoveFn(ctx, id)
}

// List calls ListFn.
func (r *Runtime) List(ctx context.Context, labels map[string]string) ([]gust.Instance, error) {
	return r.ListFn(ctx, labels)
}

// TailLogs calls TailLogsFn.
func (r *Runtime) TailLogs(ctx context.Context, id string, lines int) (string, error) {
	return r.TailLogsFn(ctx, id, lines)
}

// SetMissing makes EnsureImage fail for ref (and Start of it), as for an
// image that is neither local nor pullable.
func (r *Runtime) SetMissing(ref string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.missing[ref] = true
}

// ExitOnStart makes every container of image exit with code as soon as it
// starts: Start returns an error wrapping gust.ErrContainerExited, as
// internal/docker does for a container that is gone by the time it is
// inspected.
func (r *Runtime) ExitOnStart(image string, code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exitOnStart[image] = code
}

// Exit makes the running container id exit with code, as a crash would:
// its connections are cut, Wait returns, and it stays listed, not running,
// until removed. It reports whether id was running.
func (r *Runtime) Exit(id string, code int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil || c.stopped {
		return false
	}
	r.exitLocked(c, gust.Exit{Code: code})
	return true
}

// Starts returns how many times the default Start was called, failed
// starts included.
func (r *Runtime) Starts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.starts
}

// Removes returns how many containers the default Remove removed.
func (r *Runtime) Removes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removes
}

// Running returns the instances that run now, in no particular order.
func (r *Runtime) Running() []gust.Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []gust.Instance
	for _, c := range r.containers {
		if !c.stopped {
			out = append(out, c.inst)
		}
	}
	return out
}

// Close stops every container, waits for their servers and handlers to
// return, and removes their secrets' directories. Handlers must return
// once their request's context ends.
func (r *Runtime) Close() {
	r.mu.Lock()
	r.closed = true
	var dirs []string
	for _, c := range r.containers {
		if !c.stopped {
			r.exitLocked(c, gust.Exit{Code: ExitKilled})
		}
		if c.secrets != "" {
			dirs = append(dirs, c.secrets)
			c.secrets = ""
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
	for _, d := range dirs {
		removeSecrets(d)
	}
}

func (r *Runtime) ensureImage(ctx context.Context, ref string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pull image %s: %w", ref, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.missing[ref] {
		return gust.Invalidf("image", "image %s is not present and cannot be pulled", ref)
	}
	return nil
}

func (r *Runtime) start(ctx context.Context, spec gust.ContainerSpec) (gust.Instance, error) {
	r.mu.Lock()
	r.starts++
	r.mu.Unlock()
	if spec.Port <= 0 || spec.Port > 65535 {
		return gust.Instance{}, gust.Invalidf("port", "port %d is not between 1 and 65535", spec.Port)
	}
	// As the Docker runtime: a user must be numeric.
	if spec.User != "" && !gust.ValidUser(spec.User) {
		return gust.Instance{}, gust.Invalidf("labels."+gust.LabelUser, "user %q is not a numeric UID or UID:GID", spec.User)
	}
	for name := range spec.Secrets {
		if !validSecretName(name) {
			return gust.Instance{}, gust.Invalidf("secrets", "secret name %q is not a plain file name", name)
		}
	}
	if err := ctx.Err(); err != nil {
		return gust.Instance{}, fmt.Errorf("create container %s: %w", spec.Name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return gust.Instance{}, fmt.Errorf("create container %s: runtime closed", spec.Name)
	case r.missing[spec.Image]:
		return gust.Instance{}, fmt.Errorf("create container %s: no such image: %s", spec.Name, spec.Image)
	case r.names[spec.Name] != "":
		return gust.Instance{}, fmt.Errorf("create container %s: %w: name in use", spec.Name, gust.ErrConflict)
	}
	if code, ok := r.exitOnStart[spec.Image]; ok {
		// Docker removes a container whose start failed.
		return gust.Instance{}, fmt.Errorf("container exited at once with code %d: %w", code, gust.ErrContainerExited)
	}
	secrets, err := writeSecrets(spec.Secrets)
	if err != nil {
		return gust.Instance{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		removeSecrets(secrets)
		return gust.Instance{}, fmt.Errorf("start container: %w", err)
	}
	labels := make(map[string]string, len(spec.Labels)+1)
	for k, v := range spec.Labels {
		labels[k] = v
	}
	labels[gust.LabelManaged] = "true"
	id := newID()
	c := &container{
		inst: gust.Instance{
			ID: id, Name: spec.Name, Labels: labels, Addr: ln.Addr().String(),
			Running: true, Created: time.Now(),
		},
		image:   spec.Image,
		env:     slices.Clone(spec.Env),
		exited:  make(chan struct{}),
		thawed:  closedChan(),
		logs:    []string{"mock: starting " + spec.Image},
		secrets: secrets,
	}
	h := r.handler(spec)
	c.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			// Counted so that Close waits for handlers, not only servers.
			r.mu.Lock()
			if r.closed {
				r.mu.Unlock()
				panic(http.ErrAbortHandler)
			}
			r.wg.Add(1)
			thawed := c.thawed
			r.mu.Unlock()
			defer r.wg.Done()
			select {
			case <-thawed:
			case <-c.exited:
				panic(http.ErrAbortHandler)
			}
			h.ServeHTTP(w, req)
		}),
		BaseContext: func(net.Listener) context.Context {
			return context.WithValue(context.Background(), containerKey{}, served{r, id})
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	r.containers[id] = c
	r.names[spec.Name] = id
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		_ = c.srv.Serve(ln) // ErrServerClosed once stopped
	}()
	return c.inst, nil
}

// exitLocked ends a running container: its server closes (cutting calls
// in flight, as a dying process does) and Wait returns exit.
func (r *Runtime) exitLocked(c *container, exit gust.Exit) {
	c.stopped = true
	c.exit = exit
	c.inst.Running = false
	c.inst.Addr = ""
	c.logs = append(c.logs, "mock: exiting with code "+strconv.Itoa(exit.Code))
	_ = c.srv.Close()
	close(c.exited)
}

func (r *Runtime) lookup(op, id string) (*container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil {
		return nil, fmt.Errorf("%s: %w: %s", op, gust.ErrInstanceNotFound, id)
	}
	return c, nil
}

func (r *Runtime) wait(ctx context.Context, id string) (gust.Exit, error) {
	c, err := r.lookup("wait container", id)
	if err != nil {
		return gust.Exit{}, err
	}
	select {
	case <-c.exited:
		r.mu.Lock()
		defer r.mu.Unlock()
		return c.exit, nil
	case <-ctx.Done():
		return gust.Exit{}, fmt.Errorf("wait container: %w", ctx.Err())
	}
}

// stop ends a running container at once: a fake has nothing to shut down
// gracefully. Stopping one that has exited is not an error (as Docker).
func (r *Runtime) stop(ctx context.Context, id string, grace time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stop container: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil {
		return fmt.Errorf("stop container: %w: %s", gust.ErrInstanceNotFound, id)
	}
	if !c.stopped {
		r.exitLocked(c, gust.Exit{Code: ExitStopped})
	}
	return nil
}

// remove kills and forgets a container. Removing an unknown one is not an
// error, as with internal/docker (Remove is idempotent).
func (r *Runtime) remove(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove container: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil {
		return nil
	}
	if !c.stopped {
		r.exitLocked(c, gust.Exit{Code: ExitKilled})
	}
	delete(r.containers, id)
	delete(r.names, c.inst.Name)
	r.removes++
	removeSecrets(c.secrets)
	return nil
}

func (r *Runtime) list(ctx context.Context, labels map[string]string) ([]gust.Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []gust.Instance
next:
	for _, c := range r.containers {
		for k, v := range labels {
			if c.inst.Labels[k] != v {
				continue next
			}
		}
		out = append(out, c.inst)
	}
	return out, nil
}

func (r *Runtime) tailLogs(ctx context.Context, id string, lines int) (string, error) {
	c, err := r.lookup("container logs", id)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	logs := c.logs
	if lines > 0 && len(logs) > lines {
		logs = logs[len(logs)-lines:]
	}
	return strings.Join(logs, "\n") + "\n", nil
}

type containerKey struct{}

// served is what a fake container's requests carry in their context.
type served struct {
	rt *Runtime
	id string
}

// ContainerID returns the id of the fake container serving r, for handlers
// that make their container exit (Runtime.Exit) or tell instances apart.
func ContainerID(r *http.Request) string {
	s, _ := r.Context().Value(containerKey{}).(served)
	return s.id
}

// RuntimeOf returns the fake Runtime serving r (nil outside one).
func RuntimeOf(r *http.Request) *Runtime {
	s, _ := r.Context().Value(containerKey{}).(served)
	return s.rt
}

// Headers DefaultHandler answers with.
const (
	HeaderPath      = "X-Mock-Path"
	HeaderCallID    = "X-Mock-Call-Id"
	HeaderContainer = "X-Mock-Container"
)

// DefaultHandler is the function fake containers serve unless told
// otherwise: 200 on any path, /_/health included, with the request body
// echoed back and the path, the X-Call-Id and the container id in
// HeaderPath, HeaderCallID and HeaderContainer. The query exit=N makes the
// container exit with code N before it answers, as a crash would (the
// caller sees its connection closed). The query file=PATH answers the
// content of the file PATH inside the container (only its secrets exist
// in the fake), 404 with the error when it cannot be read; write=PATH
// tries to write PATH and answers 204, or 409 with the error (files under
// gust.SecretsDir are read-only). Those are the conformance suite's
// queries (internal/runtimetest).
func DefaultHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if v := q.Get("exit"); v != "" {
			if code, err := strconv.Atoi(v); err == nil {
				if rt := RuntimeOf(r); rt != nil {
					rt.Exit(ContainerID(r), code)
				}
				panic(http.ErrAbortHandler) // no answer: the process died
			}
		}
		w.Header().Set(HeaderPath, r.URL.Path)
		w.Header().Set(HeaderCallID, r.Header.Get(gust.HeaderCallID))
		w.Header().Set(HeaderContainer, ContainerID(r))
		if rt := RuntimeOf(r); rt != nil && q.Has("file") {
			b, err := rt.readFile(ContainerID(r), q.Get("file"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			_, _ = w.Write(b)
			return
		}
		if q.Has("write") {
			if err := writeFile(q.Get("write")); err != nil {
				http.Error(w, err.Error(), http.StatusConflict)
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if r.Body != nil {
			if _, err := io.Copy(w, r.Body); err != nil && !errors.Is(err, io.EOF) {
				return
			}
		}
	})
}

func closedChan() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

func newID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
