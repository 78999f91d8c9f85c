package docker

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/docker/docker/api/types/container"
	"go.uber.org/zap"

	"github.com/gustfaas/gust"
)

// Prepared containers (issue 11, a faster cold start): Prepare does all of
// a Start but the ContainerStart, in a network holder (holder.go), so a
// later Start of the same spec is one Engine call: no image inspect, no
// create, no inspect.

var _ gust.Preparer = (*Runtime)(nil)

// prepared is a container created for a spec and not started.
type prepared struct {
	id   string
	hash [32]byte
	inst gust.Instance // what Start returns once it runs
}

// specHash identifies a spec, its environment in any order (a worker
// builds it from a map).
func specHash(spec gust.ContainerSpec) [32]byte {
	spec.Env = slices.Clone(spec.Env)
	slices.Sort(spec.Env)
	b, _ := json.Marshal(spec)
	return sha256.Sum256(b)
}

// Prepare creates the container of spec in a network holder without
// starting it, for a later Start of the same spec (gust.Preparer). It
// needs holders (Config.Holders not negative, an amd64 Engine). A spec
// with secrets is an EINVALID error: their values are read at each
// start. Preparing a name again replaces what was prepared under it.
func (r *Runtime) Prepare(ctx context.Context, spec gust.ContainerSpec) (err error) {
	if len(spec.Secrets) > 0 {
		return gust.Invalidf("secrets", "a container with secrets is not prepared ahead: they are read at each start")
	}
	if spec.Port <= 0 || spec.Port > 65535 {
		return gust.Invalidf("port", "port %d is not between 1 and 65535", spec.Port)
	}
	if spec.User != "" && !gust.ValidUser(spec.User) {
		return gust.Invalidf("labels."+gust.LabelUser, "user %q is not a numeric UID or UID:GID", spec.User)
	}
	if r.cfg.Holders < 0 {
		return fmt.Errorf("prepare container %s: network holders are off", spec.Name)
	}
	hash := specHash(spec)
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	if err := r.Unprepare(ctx, spec.Name); err != nil {
		return err
	}
	if spec.User == "" {
		imageUser, err := r.imageUser(ctx, spec.Image)
		if err != nil {
			return fmt.Errorf("prepare container %s: %w", spec.Name, err)
		}
		spec.User = cmp.Or(imageUser, gust.DefaultUser)
	}
	ns := spec.Labels[gust.LabelNamespace]
	netName, nw, err := r.ensureNetwork(ctx, ns)
	if err != nil {
		return fmt.Errorf("prepare container %s: %w", spec.Name, err)
	}
	cfg, host, _ := r.createConfig(spec, netName, nw)
	cfg.Labels[LabelPrepared] = "true"
	h, ok := r.holderFor(netName, ns, nw, spec.Labels)
	if !ok {
		// Preparing runs ahead of need: it can wait for a holder.
		if err := r.ensureHolderImage(ctx); err != nil {
			return fmt.Errorf("prepare container %s: %w", spec.Name, err)
		}
		h, err = r.makeHolder(ctx, holderKeyOf(netName, ns, spec.Labels), nw.gateway)
		if err != nil {
			return fmt.Errorf("prepare container %s: %w", spec.Name, err)
		}
	}
	inst, err := r.createInHolder(ctx, spec, cfg, host, h)
	if err != nil {
		return fmt.Errorf("prepare container %s: %w", spec.Name, err)
	}
	r.holders.mu.Lock()
	closed := r.holders.closed
	if !closed {
		r.holders.prepared[spec.Name] = &prepared{id: inst.ID, hash: hash, inst: inst}
	}
	r.holders.mu.Unlock()
	if closed {
		return r.Remove(context.WithoutCancel(ctx), inst.ID)
	}
	r.logger.Debug("prepared container", zap.String("container_id", inst.ID), zap.String("addr", inst.Addr))
	return nil
}

// Unprepare removes the container prepared under name, if any and not
// started (gust.Preparer).
func (r *Runtime) Unprepare(ctx context.Context, name string) error {
	p := r.takePrepared(name)
	if p == nil {
		return nil
	}
	return r.Remove(ctx, p.id)
}

// takePrepared returns and forgets what was prepared under name.
func (r *Runtime) takePrepared(name string) *prepared {
	r.holders.mu.Lock()
	defer r.holders.mu.Unlock()
	p := r.holders.prepared[name]
	delete(r.holders.prepared, name)
	return p
}

// startPrepared starts the container prepared for spec, if there is one:
// ok is false when there is none (or none for this very spec, which is
// then removed), and Start goes on as without.
func (r *Runtime) startPrepared(ctx context.Context, spec gust.ContainerSpec) (_ gust.Instance, ok bool) {
	p := r.takePrepared(spec.Name)
	if p == nil {
		return gust.Instance{}, false
	}
	if p.hash == specHash(spec) {
		err := r.client.ContainerStart(ctx, p.id, container.StartOptions{})
		if err == nil {
			inst := p.inst
			inst.Running, inst.Created = true, time.Now()
			r.logger.Debug("started prepared container", zap.String("container_id", inst.ID), zap.String("addr", inst.Addr))
			return inst, true
		}
		if ctx.Err() == nil { // else the caller gave up (the worker closing): Start says so
			r.logger.Warn("start prepared container failed; starting afresh", zap.String("container", spec.Name), zap.Error(err))
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
	defer cancel()
	if err := r.Remove(rctx, p.id); err != nil {
		r.logger.Warn("remove prepared container", zap.String("container_id", p.id), zap.Error(err))
	}
	return gust.Instance{}, false
}

// removePrepared removes every prepared container (Close).
func (r *Runtime) removePrepared(ctx context.Context) {
	r.holders.mu.Lock()
	ps := r.holders.prepared
	r.holders.prepared = map[string]*prepared{}
	r.holders.mu.Unlock()
	for _, p := range ps {
		if err := r.Remove(ctx, p.id); err != nil {
			r.logger.Warn("remove prepared container", zap.String("container_id", p.id), zap.Error(err))
		}
	}
}
