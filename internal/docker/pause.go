package docker

import (
	"context"

	"github.com/gustfaas/gust"
)

var _ gust.Pauser = (*Runtime)(nil)

// Pause implements gust.Pauser with the Engine's pause (the cgroup
// freezer). Stop and Remove work on a paused container as on a running
// one: the Engine thaws it to deliver the signal.
func (r *Runtime) Pause(ctx context.Context, id string) (err error) {
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	if err := r.client.ContainerPause(ctx, id); err != nil {
		return instanceErr("pause container", err)
	}
	return nil
}

// Unpause implements gust.Pauser.
func (r *Runtime) Unpause(ctx context.Context, id string) (err error) {
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	if err := r.client.ContainerUnpause(ctx, id); err != nil {
		return instanceErr("unpause container", err)
	}
	return nil
}
