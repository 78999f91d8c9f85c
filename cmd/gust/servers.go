package main

import (
	"context"
	"flag"
	"time"

	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/gustfaas/gust/internal/docker"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/scheduler"
	"github.com/gustfaas/gust/worker"
	"go.uber.org/zap"
)

// serve runs a role until ctx ends (SIGINT/SIGTERM), then closes it.
func serve(ctx context.Context, logger *zap.Logger, m interface {
	Run(context.Context) error
	Close() error
}) error {
	defer logger.Sync()
	if err := m.Run(ctx); err != nil {
		return err
	}
	printWhere(m)
	logger.Info("ready; stop with Ctrl-C or SIGTERM")
	<-ctx.Done()
	logger.Info("shutting down: draining calls in flight")
	if err := m.Close(); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

func defaultDataDir() string { return envOr("GUST_DATA", ".gust") }

// bridgeCallsUsage is the help of --bridge-calls (gust up and gust worker).
const bridgeCallsUsage = "call functions at their bridge address only; by default a worker that may enter a function's network namespace (root) calls it over its loopback, which costs less, and the function sees calls come from 127.0.0.1"

var upCommand = &Command{
	Name:  "up",
	Short: "run all of Gust in one process (embedded NATS, gateway, scheduler, worker)",
	Long: `Runs an embedded NATS server with JetStream (files under --data), the
scheduler, one worker on the local Docker Engine and the gateway. The
function registry lives in JetStream KV, so it survives a restart.
SIGINT or SIGTERM drains: no new calls, calls in flight finish, the
containers this worker started are stopped and removed, then gust exits 0.

The API needs credentials (user "admin", HTTP Basic): the password comes
from --admin-password-file, else $GUST_ADMIN_PASSWORD, else the file
admin-password in --data, generated on first start (mode 0600). The gust
CLI on this machine finds that file in the default data directory.
NATS takes no anonymous clients: outside publishers use user "events"
(docs/nats-security.md).`,
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var lf logFlags
		lf.register(fs)
		gw := gateway.DefaultConfig()
		listen := fs.String("listen", envOr("GUST_LISTEN", ":8080"), "gateway HTTP address ($GUST_LISTEN)")
		natsListen := fs.String("nats-listen", "127.0.0.1:4222", "embedded NATS client address")
		data := fs.String("data", defaultDataDir(), "data directory ($GUST_DATA)")
		network := fs.String("network", docker.DefaultNetwork, "Docker network for function containers")
		fs.Int64Var(&gw.MaxBodyBytes, "max-body", gw.MaxBodyBytes, "largest invocation request body in bytes (413 above)")
		wc := worker.DefaultConfig()
		fs.DurationVar(&wc.ReadyTimeout, "ready-timeout", wc.ReadyTimeout, "how long a new instance may take to become ready")
		fs.BoolVar(&wc.BridgeCalls, "bridge-calls", false, bridgeCallsUsage)
		boundsFlags(fs, &gw, &wc)
		pf := pricingFlags(fs)
		keep := retentionFlag(fs)
		bs := billingStoreFlag(fs)
		apw := adminPasswordFlag(fs)
		skf := secretsKeyFlag(fs)
		iso := isolationFlags(fs)
		var nsf natsServerFlags
		nsf.register(fs)
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected arguments: %v", args)
			}
			logger, err := lf.logger()
			if err != nil {
				return err
			}
			pricing, err := pf()
			if err != nil {
				return err
			}
			if gw.AdminPassword, err = apw(*data, logger); err != nil {
				return err
			}
			gw.Version = version
			isolation, err := iso()
			if err != nil {
				return err
			}
			return serve(ctx, logger, &UpMain{
				Listen: *listen, NATSListen: *natsListen, DataDir: *data, Network: *network,
				Gateway: gw, Scheduler: scheduler.DefaultConfig(), Worker: wc, Pricing: pricing, Logger: logger, Isolation: isolation,
				SecretsKeyFile: *skf, NATSFlags: nsf, BillingRetention: time.Duration(*keep),
				BillingStore: *bs,
			})
		}
	},
}

var natsCommand = &Command{
	Name:  "nats",
	Short: "run an embedded NATS server with JetStream for the other roles",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var lf logFlags
		lf.register(fs)
		listen := fs.String("listen", "127.0.0.1:4222", "NATS client address")
		data := fs.String("data", defaultDataDir(), "data directory ($GUST_DATA)")
		authDir := fs.String("auth-dir", envOr("GUST_NATS_AUTH_DIR", ""), "passwords of the roles' NATS users, AUTH/ROLE/password, generated when missing (default DATA/"+natsAuthDir+"; $GUST_NATS_AUTH_DIR)")
		var nsf natsServerFlags
		nsf.register(fs)
		var ncl natsClusterFlags
		ncl.register(fs)
		return func(ctx context.Context, args []string) error {
			logger, err := lf.logger()
			if err != nil {
				return err
			}
			return serve(ctx, logger, &NATSMain{Listen: *listen, DataDir: *data, Roles: true, AuthDir: *authDir, Flags: nsf, Cluster: ncl, Logger: logger})
		}
	},
}

var gatewayCommand = &Command{
	Name:  "gateway",
	Short: "run the gateway role (HTTP API and invocations)",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var lf logFlags
		lf.register(fs)
		var ncf natsClientFlags
		ncf.register(fs, natsbus.UserGateway)
		wtf := workerTokenFlag(fs)
		wca := fs.String("worker-ca", envOr("GUST_WORKER_CA", ""), "PEM CA of the TLS certificates of workers advertised at https:// URLs (default the system's) ($GUST_WORKER_CA)")
		cfg := gateway.DefaultConfig()
		fs.StringVar(&cfg.Listen, "listen", envOr("GUST_LISTEN", cfg.Listen), "HTTP address ($GUST_LISTEN)")
		fs.Int64Var(&cfg.MaxBodyBytes, "max-body", cfg.MaxBodyBytes, "largest invocation request body in bytes (413 above)")
		data := fs.String("data", defaultDataDir(), "data directory: billing store, metering spool ($GUST_DATA)")
		boundsFlags(fs, &cfg, nil)
		pf := pricingFlags(fs)
		keep := retentionFlag(fs)
		bs := billingStoreFlag(fs)
		apw := adminPasswordFlag(fs)
		skf := secretsKeyFlag(fs)
		return func(ctx context.Context, args []string) error {
			logger, err := lf.logger()
			if err != nil {
				return err
			}
			pricing, err := pf()
			if err != nil {
				return err
			}
			if cfg.AdminPassword, err = apw(*data, logger); err != nil {
				return err
			}
			cfg.Version = version
			nc, err := ncf.config(natsbus.UserGateway, *data, logger)
			if err != nil {
				return err
			}
			token, err := wtf(*data, logger)
			if err != nil {
				return err
			}
			wtls, err := workerCA(*wca)
			if err != nil {
				return err
			}
			return serve(ctx, logger, &GatewayMain{NATS: nc, WorkerToken: token, WorkerTLS: wtls, Config: cfg, DataDir: *data, Pricing: pricing, Logger: logger, SecretsKeyFile: *skf,
				BillingRetention: time.Duration(*keep), BillingStore: *bs})
		}
	},
}

var schedulerCommand = &Command{
	Name:  "scheduler",
	Short: "run the scheduler role (placement of functions on workers)",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var lf logFlags
		lf.register(fs)
		var ncf natsClientFlags
		ncf.register(fs, natsbus.UserScheduler)
		cfg := scheduler.DefaultConfig()
		fs.DurationVar(&cfg.WorkerTimeout, "worker-timeout", cfg.WorkerTimeout, "a worker silent for this long is gone")
		fs.StringVar(&cfg.ID, "id", "", "this scheduler's name in the leader election, different for each scheduler (default: the host name and a random suffix)")
		listen := fs.String("listen", "", "HTTP address serving /metrics and /healthz (default: none)")
		return func(ctx context.Context, args []string) error {
			logger, err := lf.logger()
			if err != nil {
				return err
			}
			nc, err := ncf.config(natsbus.UserScheduler, defaultDataDir(), logger)
			if err != nil {
				return err
			}
			return serve(ctx, logger, &SchedulerMain{NATS: nc, Config: cfg, Logger: logger, Listen: *listen})
		}
	},
}

var workerCommand = &Command{
	Name:  "worker",
	Short: "run the worker role (warm pools on the local Docker Engine)",
	Flags: func(fs *flag.FlagSet) func(context.Context, []string) error {
		var lf logFlags
		lf.register(fs)
		var ncf natsClientFlags
		ncf.register(fs, natsbus.UserWorker)
		wtf := workerTokenFlag(fs)
		maxBody := fs.Int64("max-body", worker.DefaultMaxBodyBytes, "largest call body in bytes taken from gateways (413 above)")
		tlsCert := fs.String("tls-cert", envOr("GUST_WORKER_TLS_CERT", ""), "PEM certificate: serve calls from gateways with TLS, advertised at https:// ($GUST_WORKER_TLS_CERT)")
		tlsKey := fs.String("tls-key", envOr("GUST_WORKER_TLS_KEY", ""), "PEM key of --tls-cert ($GUST_WORKER_TLS_KEY)")
		listen := fs.String("listen", ":8081", "HTTP address gateways invoke this worker at")
		advertise := fs.String("advertise", "", "base URL gateways reach this worker at (default from --listen)")
		network := fs.String("network", docker.DefaultNetwork, "Docker network for function containers")
		data := fs.String("data", defaultDataDir(), "data directory; keeps the worker id ($GUST_DATA)")
		meterSync := fs.Duration("meter-sync", 2*time.Second, "how long a call's answer may wait for JetStream to acknowledge its metering record, so that an answered call keeps its record if this host is lost; once a wait runs out, calls do not wait until NATS takes records again (0: answer at once; the record follows from the local spool within milliseconds, or when a killed worker starts again)")
		cfg := worker.DefaultConfig()
		fs.StringVar(&cfg.ID, "id", "", "worker id (default: kept in --data)")
		fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", cfg.ReadyTimeout, "how long a new instance may take to become ready")
		fs.IntVar(&cfg.MaxParallelStarts, "max-parallel-starts", cfg.MaxParallelStarts, "container starts at once at first; the limit then follows the Docker Engine's measured start latency")
		fs.DurationVar(&cfg.BurstMemory, "burst-memory", worker.DefaultBurstMemory, "how long a function that had a burst keeps more than one container prepared for the next")
		fs.BoolVar(&cfg.BridgeCalls, "bridge-calls", false, bridgeCallsUsage)
		fs.DurationVar(&cfg.BillingGranularity, "billing-granularity", cfg.BillingGranularity, "call durations are billed rounded up to this")
		boundsFlags(fs, nil, &cfg)
		capacity := capacityFlags(fs, &cfg)
		iso := isolationFlags(fs)
		skf := secretsKeyFlag(fs)
		return func(ctx context.Context, args []string) error {
			if err := capacity(); err != nil {
				return err
			}
			logger, err := lf.logger()
			if err != nil {
				return err
			}
			nc, err := ncf.config(natsbus.UserWorker, *data, logger)
			if err != nil {
				return err
			}
			token, err := wtf(*data, logger)
			if err != nil {
				return err
			}
			isolation, err := iso()
			if err != nil {
				return err
			}
			return serve(ctx, logger, &WorkerMain{
				NATS: nc, Listener: worker.ListenerConfig{Token: token, MaxBodyBytes: *maxBody}, TLSCert: *tlsCert, TLSKey: *tlsKey, Listen: *listen, Advertise: *advertise, Network: *network,
				DataDir: *data, Config: cfg, Logger: logger, SecretsKeyFile: *skf, Isolation: isolation, MeterSync: *meterSync,
			})
		}
	},
}

// pricingFlags registers --pricing and --billing-granularity and returns
// the function that loads the pricing they give.
func pricingFlags(fs *flag.FlagSet) func() (billing.Pricing, error) {
	file := fs.String("pricing", envOr("GUST_PRICING", ""), "pricing file (JSON; see README), default list prices ($GUST_PRICING)")
	gran := fs.Duration("billing-granularity", 0, "billing granularity (overrides the pricing file; default 1ms)")
	return func() (billing.Pricing, error) {
		p := billing.DefaultPricing()
		if *file != "" {
			var err error
			if p, err = billing.LoadPricing(*file); err != nil {
				return p, err
			}
		}
		if *gran != 0 {
			p.Granularity = *gran
			if err := p.Validate(); err != nil {
				return p, err
			}
		}
		return p, nil
	}
}
