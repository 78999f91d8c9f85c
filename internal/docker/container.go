package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"
	"go.uber.org/zap"

	"github.com/gustfaas/gust"
)

// labelPort records ContainerSpec.Port on the container so that List can
// rebuild Instance.Addr.
const labelPort = "gust.port"

// removeTimeout bounds the clean-up of a container whose start failed; it
// runs even when the caller's ctx has ended.
const removeTimeout = 30 * time.Second

// Start creates and starts a container for spec, attached only to the
// network of its namespace (label gust.namespace; NetworkOf), which is
// created on first use, and returns it with Addr set to its IP on that
// network and spec.Port. No port is published on the host. The container
// joins the network namespace of an idle network holder when one is
// ready (holder.go: Addr is then the holder's IP, known ahead), and a
// container prepared for this very spec (Prepare) is only started. If
// the container cannot be started it is removed before Start returns the
// error. Secrets are files in a read-only bind mount of a host tmpfs
// (secrets.go). The Engine calls of a Start take at most CallTimeout.
func (r *Runtime) Start(ctx context.Context, spec gust.ContainerSpec) (_ gust.Instance, err error) {
	if spec.Port <= 0 || spec.Port > 65535 {
		return gust.Instance{}, gust.Invalidf("port", "port %d is not between 1 and 65535", spec.Port)
	}
	if err := checkSecretNames(spec.Secrets); err != nil {
		return gust.Instance{}, err
	}
	if spec.User != "" && !gust.ValidUser(spec.User) {
		return gust.Instance{}, gust.Invalidf("labels."+gust.LabelUser, "user %q is not a numeric UID or UID:GID", spec.User)
	}
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	defer r.beginStart()()
	if inst, ok := r.startPrepared(ctx, spec); ok {
		return inst, nil
	}
	if err := ctx.Err(); err != nil {
		// A prepared start cut short (the worker closing): a fresh
		// one would fail the same way, call after call.
		return gust.Instance{}, fmt.Errorf("start container %s: %w", spec.Name, err)
	}
	if spec.User == "" {
		// Not root when the image names no user (gust.DefaultUser).
		imageUser, err := r.imageUser(ctx, spec.Image)
		if err != nil {
			return gust.Instance{}, fmt.Errorf("create container %s: %w", spec.Name, err)
		}
		if imageUser == "" {
			spec.User = gust.DefaultUser
		} else {
			spec.User = imageUser
		}
	}
	ns := spec.Labels[gust.LabelNamespace]
	netName, nw, err := r.ensureNetwork(ctx, ns)
	if err != nil {
		return gust.Instance{}, fmt.Errorf("create container %s: %w", spec.Name, err)
	}
	cfg, host, netCfg := r.createConfig(spec, netName, nw)
	var created string // the container's id once it exists
	if len(spec.Secrets) > 0 {
		// Owned by the user the container runs as (-1 for a user name
		// only the image resolves: then readable by everyone in it).
		uid := parseUID(spec.User)
		dir, err := writeSecrets(r.cfg.SecretsRoot, spec.Name, uid, spec.Secrets)
		if err != nil {
			return gust.Instance{}, fmt.Errorf("create container %s: %w", spec.Name, err)
		}
		host.Mounts = append(host.Mounts, secretsMount(dir))
		// Until the container exists, nothing else would remove it.
		defer func() {
			if created == "" {
				if err := removeSecretsDir(dir); err != nil {
					r.logger.Error("remove secrets of a container not created", zap.Error(err))
				}
			}
		}()
	}
	if h, ok := r.holderFor(netName, ns, nw, spec.Labels); ok {
		inst, err := r.startInHolder(ctx, spec, cfg, host, h)
		if err == nil {
			created = inst.ID
			r.logger.Debug("started container in a network holder", zap.String("container_id", inst.ID), zap.String("addr", inst.Addr))
			return inst, nil
		}
		if errors.Is(err, gust.ErrConflict) || ctx.Err() != nil {
			return gust.Instance{}, err
		}
		// The holder may have gone (an Engine restart, a removal by
		// hand): attach the container to the network itself.
		r.logger.Warn("start in a network holder failed; starting on the network", zap.String("container", spec.Name), zap.Error(err))
	}
	resp, err := r.client.ContainerCreate(ctx, cfg, host, netCfg, nil, spec.Name)
	if err != nil {
		if cerrdefs.IsConflict(err) {
			return gust.Instance{}, fmt.Errorf("create container %s: %w: %w", spec.Name, gust.ErrConflict, err)
		}
		return gust.Instance{}, fmt.Errorf("create container %s: %w", spec.Name, err)
	}
	created = resp.ID
	logger := r.logger.With(zap.String("container_id", created), zap.String("image", spec.Image))
	for _, w := range resp.Warnings {
		logger.Warn("create container", zap.String("warning", w))
	}

	inst, err := r.start(ctx, created, netName, spec.Port)
	if err != nil {
		// The network may have been removed behind the runtime's back:
		// the next start makes sure it exists again.
		r.forgetNetwork(netName)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
		defer cancel()
		if rerr := r.Remove(rctx, created); rerr != nil {
			logger.Error("remove container after failed start", zap.Error(rerr))
		}
		return gust.Instance{}, err
	}
	logger.Debug("started container", zap.String("addr", inst.Addr))
	return inst, nil
}

// startInHolder creates and starts the container of spec in the network
// namespace of holder h (createInHolder) and returns it. On failure the
// container and the holder are removed, but not the secrets' directory:
// the caller may start the container without a holder.
func (r *Runtime) startInHolder(ctx context.Context, spec gust.ContainerSpec, cfg *container.Config, host *container.HostConfig, h holder) (gust.Instance, error) {
	inst, err := r.createInHolder(ctx, spec, cfg, host, h)
	if err != nil {
		return gust.Instance{}, err
	}
	if err := r.client.ContainerStart(ctx, inst.ID, container.StartOptions{}); err != nil {
		r.removeTried(ctx, inst.ID, h.id)
		return gust.Instance{}, fmt.Errorf("start container: %w", err)
	}
	inst.Running, inst.Created = true, time.Now()
	return inst, nil
}

// createInHolder creates the container of spec in the network namespace
// of holder h, with every other setting of cfg and host, and returns it
// with h's address: no inspect is needed. The container shares h's
// /etc/hosts (Docker refuses host names of its own there). On failure the
// container and the holder are removed, but not the secrets' directory.
func (r *Runtime) createInHolder(ctx context.Context, spec gust.ContainerSpec, cfg *container.Config, host *container.HostConfig, h holder) (gust.Instance, error) {
	hcfg := *cfg
	hcfg.Labels = make(map[string]string, len(cfg.Labels)+2)
	for k, v := range cfg.Labels {
		hcfg.Labels[k] = v
	}
	hcfg.Labels[labelHolderOf] = h.id
	hcfg.Labels[labelIP] = h.ip
	hhost := *host
	hhost.NetworkMode = container.NetworkMode("container:" + h.id)
	hhost.ExtraHosts = nil
	resp, err := r.client.ContainerCreate(ctx, &hcfg, &hhost, nil, nil, spec.Name)
	if err != nil {
		r.removeTried(ctx, "", h.id)
		if cerrdefs.IsConflict(err) {
			return gust.Instance{}, fmt.Errorf("create container %s: %w: %w", spec.Name, gust.ErrConflict, err)
		}
		return gust.Instance{}, fmt.Errorf("create container %s: %w", spec.Name, err)
	}
	for _, w := range resp.Warnings {
		r.logger.Warn("create container", zap.String("container_id", resp.ID), zap.String("warning", w))
	}
	return gust.Instance{
		ID:     resp.ID,
		Name:   spec.Name,
		Labels: hcfg.Labels,
		Addr:   net.JoinHostPort(h.ip, strconv.Itoa(spec.Port)),
		NetNS:  h.netns,
	}, nil
}

// removeTried removes container id (if not "") and holder hid after a
// failed try, leaving the secrets' directory alone.
func (r *Runtime) removeTried(ctx context.Context, id, hid string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
	defer cancel()
	if id != "" {
		if err := r.client.ContainerRemove(rctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			r.logger.Error("remove container after failed start", zap.String("container_id", id), zap.Error(err))
		}
	}
	r.removeHolder(rctx, hid)
}

func (r *Runtime) start(ctx context.Context, id, netName string, port int) (gust.Instance, error) {
	if err := r.client.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return gust.Instance{}, fmt.Errorf("start container: %w", err)
	}
	c, err := r.client.ContainerInspect(ctx, id)
	if err != nil {
		return gust.Instance{}, fmt.Errorf("inspect container: %w", err)
	}
	inst := gust.Instance{
		ID:      c.ID,
		Name:    strings.TrimPrefix(c.Name, "/"),
		Running: c.State != nil && c.State.Running,
	}
	if c.Config != nil {
		inst.Labels = c.Config.Labels
	}
	if t, err := time.Parse(time.RFC3339Nano, c.Created); err == nil {
		inst.Created = t
	}
	var ip string
	if c.NetworkSettings != nil {
		if ep := c.NetworkSettings.Networks[netName]; ep != nil {
			ip = ep.IPAddress
		}
	}
	if ip == "" && c.State != nil && !c.State.Running {
		// It exited as soon as it started: say why, with its last words
		// (the container is removed next).
		msg := fmt.Sprintf("container exited at once with code %d", c.State.ExitCode)
		if c.State.OOMKilled {
			msg = "container was killed for exceeding its memory limit at once"
		}
		if tail, err := r.TailLogs(ctx, id, 5); err == nil && tail != "" {
			msg += "; last output: " + tail
		}
		return gust.Instance{}, fmt.Errorf("%s: %w", msg, gust.ErrContainerExited)
	}
	if ip == "" {
		return gust.Instance{}, fmt.Errorf("inspect container: no IP address on network %s", netName)
	}
	inst.Addr = net.JoinHostPort(ip, strconv.Itoa(port))
	inst.NetNS = c.NetworkSettings.SandboxKey
	return inst, nil
}

// tmpSize is the size of the tmpfs at /tmp of a container with a read-only
// root: enough for lock files and small scratch files (OpenFaaS's watchdog
// writes /tmp/.lock), and counted against the container's memory limit.
const tmpSize = "64m"

// Log files of a container are capped at logFiles files of logMaxSize:
// a chatty function cannot fill the host's disk.
const (
	logMaxSize = "10m"
	logFiles   = "3"
)

// createConfig turns spec into Docker create options. The container is
// sandboxed whatever spec says: every capability dropped, no new
// privileges, not privileged, no host mounts, devices, network, PID or IPC
// namespace (nothing in a ContainerSpec can ask for them), a pids and CPU
// limit, and capped logs. spec.User "" is the image's user. The container
// joins netName only; the gateway's host names resolve to the host on it.
func (r *Runtime) createConfig(spec gust.ContainerSpec, netName string, nw netInfo) (*container.Config, *container.HostConfig, *network.NetworkingConfig) {
	labels := make(map[string]string, len(spec.Labels)+2)
	for k, v := range spec.Labels {
		labels[k] = v
	}
	labels[gust.LabelManaged] = "true"
	labels[labelPort] = strconv.Itoa(spec.Port)

	pids := spec.PidsLimit
	if pids == 0 {
		pids = gust.DefaultPidsLimit
	}
	cpus := spec.NanoCPUs
	if cpus == 0 {
		cpus = gust.DefaultNanoCPUs
	}
	cfg := &container.Config{
		Image:  spec.Image,
		Env:    spec.Env,
		Labels: labels,
		User:   spec.User,
		// No HEALTHCHECK of the image's (OpenFaaS templates carry one,
		// every few seconds): the worker probes readiness itself, and
		// the Engine would exec the check in every instance, a new
		// runc process each time, paused ones included (frozen through
		// their cgroup, the Engine does not know they are: freezer.go).
		Healthcheck: &container.HealthConfig{Test: []string{"NONE"}},
	}
	host := &container.HostConfig{
		NetworkMode:    container.NetworkMode(netName),
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
		ReadonlyRootfs: spec.ReadOnly,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		LogConfig: container.LogConfig{
			Type:   "json-file",
			Config: map[string]string{"max-size": logMaxSize, "max-file": logFiles},
		},
		Resources: container.Resources{
			Memory:    spec.MemoryBytes,
			NanoCPUs:  cpus,
			PidsLimit: &pids,
		},
	}
	if nw.gateway != "" {
		for _, h := range gatewayHosts {
			host.ExtraHosts = append(host.ExtraHosts, h+":"+nw.gateway)
		}
	}
	if spec.ReadOnly {
		host.Tmpfs = map[string]string{"/tmp": "rw,nosuid,nodev,size=" + tmpSize + ",mode=1777"}
	}
	if spec.MemoryBytes > 0 {
		// No swap on top of the limit: the function gets what it is billed for.
		host.MemorySwap = spec.MemoryBytes
	}
	netCfg := &network.NetworkingConfig{
		EndpointsConfig: map[string]*network.EndpointSettings{netName: {}},
	}
	return cfg, host, netCfg
}

// Wait blocks until the container is not running, or ctx ends, and reports
// how it ended. The wait itself is not bounded (a container may run for
// as long as it likes); the inspection after it is.
func (r *Runtime) Wait(ctx context.Context, id string) (_ gust.Exit, err error) {
	resC, errC := r.client.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	var res container.WaitResponse
	select {
	case res = <-resC:
	case err := <-errC:
		return gust.Exit{}, instanceErr("wait container", err)
	}
	if res.Error != nil && res.Error.Message != "" {
		return gust.Exit{}, fmt.Errorf("wait container: %s", res.Error.Message)
	}
	exit := gust.Exit{Code: int(res.StatusCode)}
	ictx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	c, err := r.client.ContainerInspect(ictx, id)
	if err != nil {
		// Removed right after it exited: the code is all there is to know.
		if cerrdefs.IsNotFound(err) {
			return exit, nil
		}
		return exit, fmt.Errorf("inspect container: %w", err)
	}
	if c.State != nil {
		exit.OOMKilled = c.State.OOMKilled
	}
	return exit, nil
}

// Stop sends the container SIGTERM and kills it after grace, rounded up to
// whole seconds. Stopping a container that is not running is not an error.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) (err error) {
	secs := max(int(math.Ceil(grace.Seconds())), 0)
	ctx, end := bound(ctx, time.Duration(secs)*time.Second+r.cfg.CallTimeout)
	defer end(&err)
	// Thawed first, so that it handles SIGTERM within its grace (a frozen
	// process would only see it thawed by the SIGKILL after it).
	if _, err := r.thawDirect(id); err != nil && !errors.Is(err, gust.ErrInstanceNotFound) {
		r.logger.Warn("thaw before stop", zap.String("container_id", id), zap.Error(err))
	}
	if err := r.client.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs}); err != nil {
		return instanceErr("stop container", err)
	}
	return nil
}

// Remove removes the container, its anonymous volumes, its secrets'
// directory and the network holder it was started in (holder.go),
// killing it if it runs. Removing a container that does not exist, or
// that is already being removed, is not an error.
func (r *Runtime) Remove(ctx context.Context, id string) (err error) {
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	r.forgetFrozen(id)
	var secrets, holderID string
	c, err := r.client.ContainerInspect(ctx, id)
	switch {
	case err == nil:
		secrets = r.ownSecretsDir(c.Mounts)
		if c.Config != nil {
			holderID = c.Config.Labels[labelHolderOf]
		}
	case !cerrdefs.IsNotFound(err):
		return fmt.Errorf("remove container: %w", err)
	}
	err = r.client.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
	case cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress"):
		// The other removal removes the directory and the holder too.
		return nil
	default:
		return fmt.Errorf("remove container: %w", err)
	}
	if holderID != "" {
		// After the container: the namespace is the holder's.
		err := r.client.ContainerRemove(ctx, holderID, container.RemoveOptions{Force: true})
		if err != nil && !cerrdefs.IsNotFound(err) && !(cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress")) {
			return fmt.Errorf("remove network holder: %w", err)
		}
	}
	if secrets != "" {
		return removeSecretsDir(secrets)
	}
	return nil
}

// List returns the Gust containers (gust.managed=true), running or not,
// that carry all the given labels. Addr is set for running ones, from
// their IP on the network of their namespace.
func (r *Runtime) List(ctx context.Context, labels map[string]string) (_ []gust.Instance, err error) {
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	args := filters.NewArgs(filters.Arg("label", gust.LabelManaged+"=true"))
	for k, v := range labels {
		args.Add("label", k+"="+v)
	}
	cs, err := r.client.ContainerList(ctx, container.ListOptions{All: true, Filters: args})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]gust.Instance, 0, len(cs))
	for _, c := range cs {
		inst := gust.Instance{
			ID:     c.ID,
			Labels: c.Labels,
			// A paused container runs, frozen: Docker's inspect says
			// Running and Paused, its list says "paused".
			Running: c.State == container.StateRunning || c.State == container.StatePaused,
			Created: time.Unix(c.Created, 0),
		}
		if len(c.Names) > 0 {
			inst.Name = strings.TrimPrefix(c.Names[0], "/")
		}
		if port := c.Labels[labelPort]; inst.Running && port != "" {
			// A container started in a network holder has no network
			// settings of its own: its label has the holder's address.
			ip := c.Labels[labelIP]
			if c.NetworkSettings != nil {
				if ep := c.NetworkSettings.Networks[r.NetworkOf(c.Labels[gust.LabelNamespace])]; ep != nil && ep.IPAddress != "" {
					ip = ep.IPAddress
				}
			}
			if ip != "" {
				inst.Addr = net.JoinHostPort(ip, port)
			}
		}
		out = append(out, inst)
	}
	return out, nil
}

// TailLogs returns the last lines (all of them if lines <= 0) the container
// wrote to stdout and stderr, interleaved as they were written.
func (r *Runtime) TailLogs(ctx context.Context, id string, lines int) (_ string, err error) {
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	tail := "all"
	if lines > 0 {
		tail = strconv.Itoa(lines)
	}
	rc, err := r.client.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: tail})
	if err != nil {
		return "", instanceErr("container logs", err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, rc); err != nil {
		return buf.String(), fmt.Errorf("read container logs: %w", err)
	}
	return buf.String(), nil
}
