package worker

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"

	"github.com/gustfaas/gust/internal/netns"
	"github.com/gustfaas/gust/internal/proxy"
)

// Calls over the instance's loopback (issue 11, warm throughput): where
// the runtime gives an instance's network namespace (gust.Instance.NetNS)
// and the worker may enter it, the connections of its calls are made in
// that namespace to 127.0.0.1 at the function's port. A request and its
// answer then cross the instance's loopback interface instead of a veth
// pair, the bridge and the host's netfilter hooks: measured here, about
// 15% less host CPU and 20 µs less time per call (docs/benchmarks.md,
// "Issue 11, sixth pass"). The function sees its calls come from
// 127.0.0.1, as a function behind OpenFaaS's of-watchdog sees every call
// come from the watchdog. Readiness probes keep the bridge address.
//
// A worker that may not enter namespaces (no CAP_SYS_ADMIN, or Docker's
// /var/run/docker/netns out of its reach: a worker in a container) calls
// every function over its bridge once its first try has failed, as does
// an instance whose function does not listen on its loopback (bound to
// its bridge address only).

// instanceDial returns how the connections to an instance with bridge
// address addr and network namespace path are made: over its loopback
// where it can, else to addr; nil (the client's own dial to addr) when
// the runtime gave no namespace or Config.BridgeCalls says not to.
func (w *Worker) instanceDial(path, addr string, logger *zap.Logger) func(ctx context.Context) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if path == "" || w.cfg.BridgeCalls || w.noLoopback.Load() || err != nil {
		return nil
	}
	loop := net.JoinHostPort("127.0.0.1", port)
	var bridge atomic.Bool // its function does not answer on its loopback
	return func(ctx context.Context) (net.Conn, error) {
		if bridge.Load() || w.noLoopback.Load() {
			return proxy.Dialer.DialContext(ctx, "tcp", addr)
		}
		c, err := netns.Dial(ctx, &proxy.Dialer, path, loop)
		switch {
		case err == nil:
			return c, nil
		case ctx.Err() != nil:
			return nil, err
		case errors.Is(err, syscall.ECONNREFUSED):
			if bridge.CompareAndSwap(false, true) {
				logger.Info("function does not listen on its loopback: calls go to its bridge address", zap.String("port", port))
			}
		case errors.Is(err, os.ErrPermission):
			w.bridgeOnly(err)
		}
		c, berr := proxy.Dialer.DialContext(ctx, "tcp", addr)
		if berr == nil && errors.Is(err, os.ErrNotExist) {
			// The instance answers, so its namespace exists: this
			// worker cannot see Docker's namespace files (a worker in
			// a container). Anything else that failed (the namespace
			// gone with its instance) fails over the bridge too.
			w.bridgeOnly(err)
		}
		return c, berr
	}
}

// bridgeOnly has every later call go over the bridge, as the worker
// cannot reach instances' namespaces (err says why), and says so once.
func (w *Worker) bridgeOnly(err error) {
	if w.noLoopback.CompareAndSwap(false, true) {
		w.logger.Info("calls reach functions over their bridge: the worker may not enter their network namespaces (that takes CAP_SYS_ADMIN and Docker's /var/run/docker/netns in reach)", zap.Error(err))
	}
}
