package docker

import (
	"context"

	"github.com/gustfaas/gust"
)

var _ gust.Pauser = (*Runtime)(nil)

// Pause implements gust.Pauser with the cgroup freezer: written directly
// when the runtime can reach it (freezer.go), through the Engine's pause
// otherwise. Stop and Remove work on a paused container as on a running
// one.
func (r *Runtime) Pause(ctx context.Context, id string) (err error) {
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	if r.freezeDirect(ctx, id) {
		return nil
	}
	if err := r.client.ContainerPause(ctx, id); err != nil {
		return instanceErr("pause container", err)
	}
	return nil
}

// Unpause implements gust.Pauser: it thaws the way Pause froze.
func (r *Runtime) Unpause(ctx context.Context, id string) (err error) {
	if ok, err := r.thawDirect(id); ok {
		return err
	}
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	if err := r.client.ContainerUnpause(ctx, id); err != nil {
		return instanceErr("unpause container", err)
	}
	return nil
}
