package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gustfaas/gust"
)

// The cgroup freezer, written directly (issue 11, the paused tier): the
// Engine's unpause goes dockerd → containerd → shim → a new runc process
// → the freezer file, about 10-15 ms on two cores, all of it on the path
// of the call that waits for the instance. Writing the container's
// freezer file from the worker thaws it in microseconds (OpenWhisk
// bypasses dockerd for the same reason, with runc pause/resume).
//
// When the worker shares the Engine's host (its /proc shows the
// container's process and /sys/fs/cgroup is the host's), Pause freezes
// the container through its cgroup and Unpause thaws it there; the Engine
// is not told, and lists the container as running, which Gust already
// reports for a paused one (gust.Instance.Running). Stop thaws a frozen
// container first, so that SIGTERM is handled rather than left pending,
// and Remove too; the leftovers of a worker that crashed with frozen
// containers, which no runtime knows as frozen, go as any other (runc
// thaws a container after SIGKILL). Anywhere else (a worker in a container of its own, a cgroup the
// process may not write, Config.EnginePause), the Engine's pause is used.

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// freezeWait bounds how long a freeze may stay FREEZING (a task in an
// uninterruptible sleep delays it) before the Engine's pause is used.
const freezeWait = time.Second

// freezer is the control file of one container's cgroup freezer.
type freezer struct {
	path string // freezer.state (v1) or cgroup.freeze (v2)
	v2   bool
}

// freezerOf finds the freezer of the container whose init process is pid,
// from /proc/<pid>/cgroup. The cgroup's path must name the container's id
// (a worker in a PID namespace of its own could read another process
// under that pid) and its control file must exist.
func freezerOf(id string, pid int) (freezer, error) {
	if pid <= 0 {
		return freezer{}, errors.New("no process")
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return freezer{}, err
	}
	var f freezer
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		// hierarchy-id:controllers:path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case strings.Contains(","+parts[1]+",", ",freezer,"):
			f = freezer{path: filepath.Join(cgroupRoot, "freezer", parts[2], "freezer.state")}
		case parts[0] == "0" && parts[1] == "" && f.path == "":
			// cgroup v2's unified hierarchy, used only when no v1
			// freezer is mounted.
			f = freezer{path: filepath.Join(cgroupRoot, parts[2], "cgroup.freeze"), v2: true}
		}
	}
	if f.path == "" {
		return freezer{}, errors.New("no freezer cgroup")
	}
	if !strings.Contains(f.path, id) {
		return freezer{}, fmt.Errorf("cgroup %s is not the container's", f.path)
	}
	if _, err := os.Stat(f.path); err != nil {
		return freezer{}, err
	}
	return f, nil
}

// freeze freezes every process of the cgroup and waits until they are.
// A freeze that does not complete within freezeWait is undone.
func (f freezer) freeze(ctx context.Context) error {
	value := "FROZEN"
	if f.v2 {
		value = "1"
	}
	if err := os.WriteFile(f.path, []byte(value), 0); err != nil {
		return err
	}
	deadline := time.Now().Add(freezeWait)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		frozen, err := f.frozen()
		if err != nil {
			_ = f.thaw()
			return err
		}
		if frozen {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = f.thaw()
			return fmt.Errorf("cgroup still freezing after %s", freezeWait)
		}
		time.Sleep(delay)
	}
}

// frozen reports whether the freeze has completed.
func (f freezer) frozen() (bool, error) {
	if f.v2 {
		data, err := os.ReadFile(filepath.Join(filepath.Dir(f.path), "cgroup.events"))
		if err != nil {
			return false, err
		}
		return strings.Contains(string(data), "frozen 1"), nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(data)) == "FROZEN", nil
}

// thaw thaws the cgroup; it is done when the write returns.
func (f freezer) thaw() error {
	value := "THAWED"
	if f.v2 {
		value = "0"
	}
	return os.WriteFile(f.path, []byte(value), 0)
}

// freezeDirect freezes container id through its cgroup, if it can: ok is
// false when the freezer is out of reach, and the caller pauses through
// the Engine.
func (r *Runtime) freezeDirect(ctx context.Context, id string) (ok bool) {
	if r.cfg.EnginePause {
		return false
	}
	c, err := r.client.ContainerInspect(ctx, id)
	if err != nil || c.State == nil || !c.State.Running || c.State.Paused {
		return false // the Engine's pause says why
	}
	f, err := freezerOf(c.ID, c.State.Pid)
	if err == nil {
		err = f.freeze(ctx)
	}
	if err != nil {
		r.logger.Debug("cgroup freezer out of reach; pausing through the Engine", zap.String("container_id", c.ID), zap.Error(err))
		return false
	}
	r.mu.Lock()
	if r.frozen == nil {
		r.frozen = map[string]freezer{}
	}
	r.frozen[id] = f
	r.mu.Unlock()
	return true
}

// thawDirect thaws container id if freezeDirect froze it: ok is false when
// it did not, and the caller unpauses through the Engine.
func (r *Runtime) thawDirect(id string) (ok bool, err error) {
	r.mu.Lock()
	f, ok := r.frozen[id]
	delete(r.frozen, id)
	r.mu.Unlock()
	if !ok {
		return false, nil
	}
	if err := f.thaw(); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			// The cgroup went with its process.
			return true, fmt.Errorf("thaw container: %w: %w", gust.ErrInstanceNotFound, err)
		}
		return true, fmt.Errorf("thaw container: %w", err)
	}
	return true, nil
}

// forgetFrozen thaws container id if freezeDirect froze it, and drops
// what the runtime knew of its freezer: it is being removed. (runc thaws
// a frozen container after SIGKILL too, as a worker that crashed relies
// on; thawing first does not depend on that.)
func (r *Runtime) forgetFrozen(id string) {
	if _, err := r.thawDirect(id); err != nil && !errors.Is(err, gust.ErrInstanceNotFound) {
		r.logger.Warn("thaw before removal", zap.String("container_id", id), zap.Error(err))
	}
	r.mu.Lock()
	delete(r.freezers, id)
	r.mu.Unlock()
}

// Paused reports whether container id is paused, either way: its cgroup
// freezer says frozen (the Engine's pause freezes it too), or, where the
// freezer is out of reach, the Engine says paused. The freezer's place is
// looked up once per container (one inspect); later calls read one file.
func (r *Runtime) Paused(ctx context.Context, id string) (_ bool, err error) {
	r.mu.Lock()
	f, ok := r.freezers[id]
	r.mu.Unlock()
	if ok {
		if frozen, err := f.frozen(); err == nil {
			return frozen, nil
		}
		// The cgroup went with its process: ask the Engine.
	}
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	c, err := r.client.ContainerInspect(ctx, id)
	if err != nil {
		return false, instanceErr("inspect container", err)
	}
	if c.State == nil || !c.State.Running {
		return false, nil
	}
	if f, err := freezerOf(c.ID, c.State.Pid); err == nil {
		if frozen, err := f.frozen(); err == nil {
			r.mu.Lock()
			if r.freezers == nil {
				r.freezers = map[string]freezer{}
			}
			r.freezers[id] = f
			r.mu.Unlock()
			return frozen, nil
		}
	}
	return c.State.Paused, nil
}
