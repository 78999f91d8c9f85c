package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/docker"
	"github.com/gustfaas/gust/internal/firewall"
	"go.uber.org/zap"
)

// Firewall modes (--firewall).
const (
	firewallAuto = "auto" // install the host rules if this host allows it, else warn and run on
	firewallOn   = "on"   // install them or do not start
	firewallOff  = "off"  // do not install them
)

// Isolation is what a worker that owns its Docker runtime sets up around
// its functions besides their per-namespace networks (docs/network.md):
// when it runs in a container, it joins those networks to reach the
// functions; on a host, it installs the host rules (internal/firewall)
// that keep functions away from the host's services. The zero value
// (Mode "", the Mains that tests build) does neither; the commands
// default to auto.
type Isolation struct {
	Mode  string // firewallAuto, firewallOn, firewallOff ("" is off)
	Allow []int  // TCP ports of the host functions may reach, besides the gateway's
	// Container is the worker's own container, joined to every function
	// network; "" finds it when the worker runs in a Docker container.
	Container string

	rt      *docker.Runtime
	fw      *firewall.Firewall
	logger  *zap.Logger
	stop    chan struct{} // closed by close: the watch ends
	watched chan struct{} // closed when the watch has ended
}

// firewallCheckEvery is how often a worker checks that its host rules are
// still installed.
const firewallCheckEvery = 5 * time.Second

// isolationFlags registers --firewall, --firewall-allow and --container.
func isolationFlags(fs *flag.FlagSet) func() (Isolation, error) {
	mode := fs.String("firewall", envOr("GUST_FIREWALL", firewallAuto),
		"host rules keeping functions off this host's services: auto (install when possible, else warn), on (required), off ($GUST_FIREWALL)")
	allow := fs.String("firewall-allow", envOr("GUST_FIREWALL_ALLOW", ""),
		"comma-separated TCP ports of this host functions may reach besides the gateway's ($GUST_FIREWALL_ALLOW)")
	container := fs.String("container", envOr("GUST_CONTAINER", ""),
		"the worker's own container, joined to the function networks (default: found when running in one; $GUST_CONTAINER)")
	return func() (Isolation, error) {
		iso := Isolation{Mode: *mode, Container: *container}
		switch iso.Mode {
		case firewallAuto, firewallOn, firewallOff:
		default:
			return iso, usagef("--firewall %q: want auto, on or off", iso.Mode)
		}
		for _, s := range strings.Split(*allow, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			p, err := strconv.Atoi(s)
			if err != nil || p <= 0 || p > 65535 {
				return iso, usagef("--firewall-allow: %q is not a port", s)
			}
			iso.Allow = append(iso.Allow, p)
		}
		return iso, nil
	}
}

// open sets up the isolation around rt's functions; gatewayListen is the
// listen address of a gateway on this host ("" for none), whose port
// functions may reach. With Mode on, a firewall that cannot be installed
// fails it; with auto, it is logged and the worker runs on.
func (iso *Isolation) open(ctx context.Context, rt *docker.Runtime, gatewayListen string, logger *zap.Logger) error {
	if iso.Mode == "" {
		return nil
	}
	iso.rt, iso.logger = rt, logger.Named("isolation")
	inContainer, err := iso.attach(ctx, rt)
	if err != nil {
		return err
	}
	if iso.Mode == firewallOff {
		return nil
	}
	if inContainer && iso.Mode == firewallAuto {
		iso.logger.Warn("not installing host rules: this worker runs in a container, where they would guard its own network namespace, not the host's; namespaces stay isolated from each other (docs/network.md)")
		return nil
	}
	ports := iso.Allow
	if gatewayListen != "" {
		if _, p, err := net.SplitHostPort(gatewayListen); err == nil {
			if n, err := strconv.Atoi(p); err == nil && n > 0 {
				ports = append([]int{n}, ports...)
			}
		}
	}
	fw, err := firewall.Install(firewall.Config{BridgePrefix: rt.BridgePrefix(), AllowPorts: ports})
	if err != nil {
		if iso.Mode == firewallOn {
			return fmt.Errorf("--firewall=on: %w", err)
		}
		iso.logger.Warn("host rules not installed: functions can reach services listening on this host's interfaces (NATS, the worker, the Docker API); run as root on a kernel with nftables, or pass --firewall=off to silence this",
			zap.Error(err))
		return nil
	}
	iso.fw = fw
	iso.logger.Info("installed host rules", zap.String("table", "inet "+fw.Table()),
		zap.String("bridges", rt.BridgePrefix()+"*"), zap.Ints("allowed_ports", ports))
	iso.stop, iso.watched = make(chan struct{}), make(chan struct{})
	go iso.watch()
	return nil
}

// watch installs the host rules again whenever they are gone (another
// worker of this host removed them as it stopped, or the ruleset was
// flushed), until close.
func (iso *Isolation) watch() {
	defer close(iso.watched)
	t := time.NewTicker(firewallCheckEvery)
	defer t.Stop()
	var failing bool // log a failure once, not every tick
	for {
		select {
		case <-iso.stop:
			return
		case <-t.C:
		}
		again, err := iso.fw.Ensure()
		switch {
		case err != nil && !failing:
			iso.logger.Error("check host rules", zap.Error(err))
		case again:
			iso.logger.Warn("host rules were gone: installed them again", zap.String("table", "inet "+iso.fw.Table()))
		}
		failing = err != nil
	}
}

// attach joins the worker's own container to the function networks when
// it runs in a container of the Engine it drives: the one --container
// names, or the one named like this host when /.dockerenv says it is in
// a container (a container of another Engine, or a host that merely has
// the file, is not one: it then stands for the host).
func (iso *Isolation) attach(ctx context.Context, rt *docker.Runtime) (bool, error) {
	self := iso.Container
	if _, err := os.Stat("/.dockerenv"); self == "" && err == nil {
		// Docker names a container's host after its short id.
		self, _ = os.Hostname()
	}
	if self == "" {
		return false, nil
	}
	err := rt.Attach(ctx, self)
	switch {
	case err == nil:
		return true, nil
	case iso.Container != "":
		return false, fmt.Errorf("--container %s: %w", self, err)
	case errors.Is(err, gust.ErrInstanceNotFound):
		iso.logger.Debug("not in a container of this Docker Engine", zap.String("hostname", self))
		return false, nil
	default:
		iso.logger.Warn("could not join the function networks from this container: functions will not be reachable from it",
			zap.String("container", self), zap.Error(err))
		return true, nil
	}
}

// close removes the host rules and the function networks that are left
// empty; what another worker still uses is kept. It logs what it cannot
// do: nothing of it should keep a worker from stopping.
func (iso *Isolation) close() error {
	if iso.rt == nil {
		return nil
	}
	if iso.fw != nil {
		close(iso.stop)
		<-iso.watched
		switch err := iso.fw.Remove(); {
		case errors.Is(err, firewall.ErrReplaced):
			iso.logger.Info("host rules left to the process that replaced them")
		case err != nil:
			iso.logger.Error("remove host rules", zap.Error(err))
		default:
			iso.logger.Info("removed host rules")
		}
		iso.fw = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := iso.rt.RemoveNetwork(ctx); err != nil {
		iso.logger.Info("function networks kept", zap.Error(err))
	}
	iso.rt = nil
	return nil
}
