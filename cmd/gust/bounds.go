package main

import (
	"flag"
	"fmt"
	"strconv"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/worker"
)

// boundsFlags registers the operator's upper bounds (docs/limits.md) on
// fs: those of the gateway in gw and those of the worker in wc, either of
// which may be nil for a role without it. The flags write into the
// configs, whose defaults are the flags' defaults.
func boundsFlags(fs *flag.FlagSet, gw *gateway.Config, wc *worker.Config) {
	if gw != nil {
		b := &gw.Bounds
		*b = b.WithDefaults()
		fs.Func("max-memory", "largest limits.memory a deploy may ask for (default "+mib(b.MaxMemoryBytes)+")", func(v string) error {
			n, err := gust.ParseMemory(v)
			b.MaxMemoryBytes = n
			return err
		})
		fs.Func("max-cpu", "largest limits.cpu a deploy may ask for (default "+strconv.FormatFloat(float64(b.MaxNanoCPUs)/1e9, 'g', -1, 64)+")", func(v string) error {
			n, err := gust.ParseCPU(v)
			b.MaxNanoCPUs = n
			return err
		})
		fs.IntVar(&b.MaxScale, "max-scale", b.MaxScale, "largest "+gust.LabelScaleMax+" (and scale-function replicas)")
		fs.IntVar(&b.MaxConcurrency, "max-concurrency", b.MaxConcurrency, "largest "+gust.LabelConcurrency)
		fs.DurationVar(&b.MaxTimeout, "max-timeout", b.MaxTimeout, "largest "+gust.LabelTimeout)
		fs.DurationVar(&b.MaxIdleTimeout, "max-idle-timeout", b.MaxIdleTimeout, "largest "+gust.LabelIdleTimeout)
		fs.IntVar(&b.MaxRetryAttempts, "max-retry-attempts", b.MaxRetryAttempts, "largest "+gust.LabelRetryAttempts)
		fs.DurationVar(&b.MaxRetryAge, "max-retry-age", b.MaxRetryAge, "largest "+gust.LabelRetryMaxAge+" and "+gust.LabelRetryMaxDelay)
		fs.IntVar(&b.MaxLabels, "max-labels", b.MaxLabels, "most labels a function may have")
		fs.IntVar(&b.MaxAnnotations, "max-annotations", b.MaxAnnotations, "most annotations a function may have")
		fs.IntVar(&b.MaxKeyBytes, "max-label-key-bytes", b.MaxKeyBytes, "longest label or annotation key, in bytes")
		fs.IntVar(&b.MaxValueBytes, "max-label-value-bytes", b.MaxValueBytes, "longest label or annotation value, in bytes")
		fs.Int64Var(&gw.EventBufferBytes, "event-buffer-bytes", gw.EventBufferBytes, "bytes of NATS trigger messages waiting per function (dropped and counted above)")
		fs.Func("callback-allow", "loopback, link-local or private networks, addresses and host names callbacks may go to, comma-separated (default none)", func(v string) error {
			a, err := gateway.ParseOutboundAllow(v)
			gw.CallbackAllow = a
			return err
		})
		fs.BoolVar(&gw.CallbackAdminLoopback, "callback-admin-loopback", gw.CallbackAdminLoopback, "let the callbacks of async calls made as admin go to this host's loopback too, never to Gust's own ports")
		h := &gw.HTTP
		fs.DurationVar(&h.ReadHeaderTimeout, "http-read-header-timeout", h.ReadHeaderTimeout, "time a client has to send a request's headers")
		fs.DurationVar(&h.ReadTimeout, "http-read-timeout", h.ReadTimeout, "time a client has to send a whole request (calls: their function's timeout)")
		fs.DurationVar(&h.WriteTimeout, "http-write-timeout", h.WriteTimeout, "time an answer may take (calls: their function's timeout, deploys: the deploy timeout)")
		fs.DurationVar(&h.IdleTimeout, "http-idle-timeout", h.IdleTimeout, "an idle kept-alive connection is closed after this")
		fs.IntVar(&h.MaxHeaderBytes, "max-header-bytes", h.MaxHeaderBytes, "largest request headers in bytes (431 above)")
	}
	waiting := "calls of one function waiting for an instance (429 with Retry-After above)"
	switch {
	case gw != nil && wc != nil:
		// gust up: one bound for both places a call waits.
		fs.Func("max-waiting", waiting+fmt.Sprintf(" (default %d)", gw.MaxWaiting), func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return fmt.Errorf("want a whole number of at least 1")
			}
			gw.MaxWaiting, wc.MaxWaiting = n, n
			return nil
		})
	case gw != nil:
		fs.IntVar(&gw.MaxWaiting, "max-waiting", gw.MaxWaiting, waiting+" to be placed")
	case wc != nil:
		fs.IntVar(&wc.MaxWaiting, "max-waiting", wc.MaxWaiting, waiting+" on this worker")
	}
}

// mib writes a byte count in Mi or Gi.
func mib(n int64) string {
	if n%(1<<30) == 0 {
		return strconv.FormatInt(n>>30, 10) + "Gi"
	}
	return strconv.FormatInt(n>>20, 10) + "Mi"
}
