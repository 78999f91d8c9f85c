package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"go.uber.org/zap"

	"github.com/gustfaas/gust"
)

// Bridge options Gust sets on the networks it creates.
const (
	optBridgeName = "com.docker.network.bridge.name"
	optICC        = "com.docker.network.bridge.enable_icc"
)

// bridgeNameMax is the longest Linux interface name (IFNAMSIZ - 1).
const bridgeNameMax = 15

// gatewayHosts are the host names a function container resolves to the
// gateway of its network, that is to the host: OpenFaaS functions call
// other functions at http://gateway.openfaas:8080, which then goes
// through the gateway's public routes (and through the host's firewall,
// which lets only the gateway's port pass).
var gatewayHosts = []string{"gateway", "gateway.openfaas"}

// netInfo is what the runtime keeps of a network it made sure exists.
type netInfo struct {
	gateway string // IPv4 address of the host on the network; "" if unknown
}

// NetworkOf returns the name of the network the functions of namespace ns
// join: the configured network for the default namespace (and for ""),
// "<network>-<ns>" for any other. Every namespace has a bridge of its own,
// and Docker drops traffic between bridges, so functions of one namespace
// cannot open connections to another's.
func (r *Runtime) NetworkOf(ns string) string {
	if ns == "" || ns == gust.DefaultNamespace {
		return r.cfg.Network
	}
	return r.cfg.Network + "-" + ns
}

// BridgePrefix is the prefix of the Linux interface names of the bridges
// of the networks this runtime creates: host firewall rules match all of
// them by it (internal/firewall).
func (r *Runtime) BridgePrefix() string { return r.cfg.BridgePrefix }

// bridgeName is the Linux interface name of network name's bridge: the
// prefix and as much of a hash of the name as fits in 15 characters.
func (r *Runtime) bridgeName(name string) string {
	sum := sha256.Sum256([]byte(name))
	return r.cfg.BridgePrefix + hex.EncodeToString(sum[:])[:bridgeNameMax-len(r.cfg.BridgePrefix)]
}

// ensureNetwork makes sure the network of namespace ns exists and returns
// its name. It creates it on first use, race-safe against other starts of
// this process (one creation at a time) and of other processes (a name
// conflict means another made it: it is adopted). A worker running in a
// container (Attach) is connected to it.
func (r *Runtime) ensureNetwork(ctx context.Context, ns string) (string, netInfo, error) {
	name := r.NetworkOf(ns)
	r.mu.Lock()
	info, ok := r.networks[name]
	r.mu.Unlock()
	if ok {
		return name, info, nil
	}
	// Creating a network is rare: one at a time is simple and enough.
	r.netMu.Lock()
	defer r.netMu.Unlock()
	r.mu.Lock()
	info, ok = r.networks[name]
	self := r.self
	r.mu.Unlock()
	if ok {
		return name, info, nil
	}
	n, err := r.client.NetworkInspect(ctx, name, network.InspectOptions{})
	if err == nil && r.stale(n) {
		// Made by a Gust before per-namespace networks, on a bridge the
		// host firewall does not match, and unused: made again.
		r.logger.Info("recreating network on a bridge of Gust's", zap.String("network", name))
		if err := r.client.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
			return "", netInfo{}, fmt.Errorf("remove network %s: %w", name, err)
		}
		err = cerrdefs.ErrNotFound
	}
	if cerrdefs.IsNotFound(err) {
		n, err = r.createNetwork(ctx, name, ns, self != "")
	}
	if err != nil {
		return "", netInfo{}, err
	}
	r.checkAdopted(n)
	if self != "" {
		if err := r.connect(ctx, n, self); err != nil {
			return "", netInfo{}, err
		}
	}
	info = netInfo{gateway: gatewayOf(n)}
	r.mu.Lock()
	r.networks[name] = info
	r.mu.Unlock()
	return name, info, nil
}

// createNetwork creates the bridge network name for namespace ns, with a
// bridge named by bridgeName and, unless a worker in a container must
// reach its containers over it (icc), no traffic between its containers.
// When another process created it first, that network is returned.
func (r *Runtime) createNetwork(ctx context.Context, name, ns string, icc bool) (network.Inspect, error) {
	if ns == "" {
		ns = gust.DefaultNamespace
	}
	resp, err := r.client.NetworkCreate(ctx, name, network.CreateOptions{
		Driver: "bridge",
		Labels: map[string]string{gust.LabelManaged: "true", gust.LabelNamespace: ns},
		Options: map[string]string{
			optBridgeName: r.bridgeName(name),
			optICC:        fmt.Sprint(icc),
		},
	})
	if err == nil {
		r.logger.Info("created network", zap.String("network", name), zap.String("network_id", resp.ID),
			zap.String("bridge", r.bridgeName(name)), zap.Bool("icc", icc))
	}
	n, ierr := r.client.NetworkInspect(ctx, name, network.InspectOptions{})
	switch {
	case ierr == nil:
		// Made here, or by another process between inspect and create
		// (the Engine then answers a conflict of names or of bridge
		// names, in words that vary with its version).
		return n, nil
	case err != nil:
		return network.Inspect{}, fmt.Errorf("create network %s: %w", name, err)
	default:
		return network.Inspect{}, fmt.Errorf("inspect network %s: %w", name, ierr)
	}
}

// stale reports whether n is a network of Gust's on a bridge that is not
// named by bridgeName (created before it was), with no container on it.
func (r *Runtime) stale(n network.Inspect) bool {
	return n.Labels[gust.LabelManaged] == "true" && n.Options[optBridgeName] != r.bridgeName(n.Name) && len(n.Containers) == 0
}

// checkAdopted warns about a network that is not isolated as this runtime
// would have made it: the operator should know.
func (r *Runtime) checkAdopted(n network.Inspect) {
	if n.Driver != "bridge" {
		r.logger.Warn("function network is not a bridge network: functions of its namespace are not isolated by Gust's rules",
			zap.String("network", n.Name), zap.String("driver", n.Driver))
		return
	}
	if !strings.HasPrefix(n.Options[optBridgeName], r.cfg.BridgePrefix) {
		r.logger.Warn("function network's bridge is not named by Gust: host firewall rules do not cover it",
			zap.String("network", n.Name), zap.String("bridge", n.Options[optBridgeName]))
	}
}

// gatewayOf returns the IPv4 address of the host on n.
func gatewayOf(n network.Inspect) string {
	for _, c := range n.IPAM.Config {
		if c.Gateway != "" && !strings.Contains(c.Gateway, ":") {
			return c.Gateway
		}
	}
	return ""
}

// forgetNetwork drops what the runtime knows of network name, so that the
// next start makes sure it exists again (it may have been removed behind
// the runtime's back).
func (r *Runtime) forgetNetwork(name string) {
	r.mu.Lock()
	delete(r.networks, name)
	r.mu.Unlock()
}

// Attach connects container (the worker's own, when the worker runs in a
// container, as in docker-compose.yml) to every function network of this
// runtime, now and whenever one is created, so that it reaches function
// containers on their bridge IPs. Networks created after Attach keep
// traffic between their containers on: the worker's calls to functions
// are such traffic. A network made earlier with that traffic off is
// logged, since the worker cannot reach functions on it. A container the
// Engine does not know is an error wrapping gust.ErrInstanceNotFound.
func (r *Runtime) Attach(ctx context.Context, container string) (err error) {
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	c, err := r.client.ContainerInspect(ctx, container)
	if err != nil {
		return instanceErr("inspect own container "+container, err)
	}
	r.mu.Lock()
	r.self = c.ID
	clear(r.networks) // each is connected again on first use
	r.mu.Unlock()
	r.netMu.Lock()
	defer r.netMu.Unlock()
	ns, err := r.ownNetworks(ctx)
	if err != nil {
		return err
	}
	for _, n := range ns {
		if n.Labels[gust.LabelManaged] == "true" && n.Options[optICC] == "false" && len(n.Containers) == 0 {
			// Made before Attach (Open makes the default namespace's) with
			// traffic between containers off, which the worker's calls
			// need: made again on first use.
			if err := r.client.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
				return fmt.Errorf("remove network %s: %w", n.Name, err)
			}
			continue
		}
		if err := r.connect(ctx, n, c.ID); err != nil {
			return err
		}
	}
	return nil
}

// connect connects container id to n unless it is connected already.
func (r *Runtime) connect(ctx context.Context, n network.Inspect, id string) error {
	if _, ok := n.Containers[id]; ok {
		return nil
	}
	if n.Options[optICC] == "false" {
		r.logger.Error("function network has traffic between containers off: a worker in a container cannot reach functions on it; remove it to have it made again",
			zap.String("network", n.Name))
	}
	err := r.client.NetworkConnect(ctx, n.ID, id, nil)
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		return fmt.Errorf("connect own container to network %s: %w", n.Name, err)
	}
	r.logger.Info("joined function network", zap.String("network", n.Name))
	return nil
}

// ownNetworks returns the function networks of this runtime: those
// labelled gust.managed=true whose name is the network of their
// gust.namespace label, and the configured network itself (which may
// have been made by someone else, as docker-compose.yml does).
func (r *Runtime) ownNetworks(ctx context.Context) ([]network.Inspect, error) {
	list, err := r.client.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", r.cfg.Network))})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	var out []network.Inspect
	for _, s := range list {
		own := s.Name == r.cfg.Network ||
			(s.Labels[gust.LabelManaged] == "true" && s.Name == r.NetworkOf(s.Labels[gust.LabelNamespace]))
		if !own {
			continue
		}
		// The list leaves out the containers attached.
		n, err := r.client.NetworkInspect(ctx, s.ID, network.InspectOptions{})
		if cerrdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("inspect network %s: %w", s.Name, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// RemoveNetwork removes the function networks of this runtime that carry
// gust.managed=true (the configured one and every namespace's), first
// removing the idle network holders (holder.go) and disconnecting the
// worker's own container (Attach). Networks that are
// missing or not Gust's are left alone; one that still has containers is
// kept, and named in the error.
func (r *Runtime) RemoveNetwork(ctx context.Context) (err error) {
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	r.removeIdleHolders(ctx, true)
	r.netMu.Lock()
	defer r.netMu.Unlock()
	r.mu.Lock()
	self := r.self
	clear(r.networks)
	r.mu.Unlock()
	ns, err := r.ownNetworks(ctx)
	if err != nil {
		return err
	}
	var errs []error
	var busy []string
	for _, n := range ns {
		if n.Labels[gust.LabelManaged] != "true" {
			continue
		}
		if _, ok := n.Containers[self]; ok && self != "" {
			if err := r.client.NetworkDisconnect(ctx, n.ID, self, true); err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("disconnect own container from network %s: %w", n.Name, err))
				continue
			}
			delete(n.Containers, self)
		}
		if len(n.Containers) > 0 {
			busy = append(busy, fmt.Sprintf("%s (%d containers)", n.Name, len(n.Containers)))
			continue
		}
		if err := r.client.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove network %s: %w", n.Name, err))
			continue
		}
		r.logger.Info("removed network", zap.String("network", n.Name))
	}
	if len(busy) > 0 {
		slices.Sort(busy)
		errs = append(errs, fmt.Errorf("remove networks: still in use: %s", strings.Join(busy, ", ")))
	}
	return errors.Join(errs...)
}
