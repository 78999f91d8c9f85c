package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
)

// NATSMain runs an embedded NATS server with JetStream, with its users
// (see nats_auth.go): no anonymous clients.
type NATSMain struct {
	Listen  string // host:port
	DataDir string // JetStream files go in DataDir/nats
	// Roles: the server has a user per role, whose passwords are kept in
	// AuthDir (default DataDir/nats-auth), and creates Gust's streams and
	// buckets on start, which the roles may not. Without it, only the
	// gust and events users exist.
	Roles   bool
	AuthDir string
	// Flags are the events password and TLS flags.
	Flags natsServerFlags
	// Cluster, when its Listen is set, makes the server a member of a
	// NATS cluster (`gust nats --cluster-listen`).
	Cluster natsClusterFlags
	Logger  *zap.Logger

	Server *natsbus.Server
}

// clusterProvisionWait bounds how long a clustered server waits for its
// cluster to elect a JetStream meta leader and gather enough servers to
// place Gust's streams before it gives up (and its supervisor restarts
// it): the servers of a cluster may start minutes apart.
const clusterProvisionWait = 3 * time.Minute

// Run starts the server.
func (m *NATSMain) Run(ctx context.Context) error {
	if err := privateDataDir(m.DataDir); err != nil {
		return err
	}
	var roles map[string]string
	if m.Roles {
		if m.AuthDir == "" {
			m.AuthDir = filepath.Join(m.DataDir, natsAuthDir)
		}
		var err error
		if roles, err = rolePasswords(m.AuthDir, m.Logger); err != nil {
			return err
		}
	}
	cfg, err := m.Flags.config(m.Listen, m.DataDir, roles, m.Logger)
	if err != nil {
		return err
	}
	if cfg.Cluster, err = m.Cluster.config(m.AuthDir, m.DataDir, m.Logger); err != nil {
		return err
	}
	if cfg.Cluster != nil {
		cfg.Name = m.Cluster.serverName
	}
	s, err := natsbus.RunServer(cfg, m.Logger)
	if err != nil {
		return err
	}
	m.Server = s
	if m.Roles {
		if err := m.provision(ctx); err != nil {
			s.Shutdown()
			m.Server = nil
			return err
		}
	}
	m.Logger.Info("nats listening", zap.String("url", s.ClientURL()), zap.String("cluster", s.ClusterURL()))
	return nil
}

// provision creates Gust's streams and buckets, or updates them to this
// release's configuration. A clustered server retries for a while: until
// its cluster has a JetStream meta leader, and enough servers for the
// streams' replicas, creating them fails.
func (m *NATSMain) provision(ctx context.Context) error {
	pc := m.Server.ProvisionConfig("gust-nats-provision")
	pc.Replicas = m.Cluster.replicasOrDefault()
	if !m.Cluster.clustered() {
		bus, err := natsbus.ConnectWith(pc, m.Logger)
		if err != nil {
			return err
		}
		defer bus.Close()
		return natsbus.Provision(ctx, bus, idempotencyWindow, m.Flags.meterRetention)
	}
	if err := natsbus.ProvisionCluster(ctx, pc, m.Logger, idempotencyWindow, m.Flags.meterRetention, clusterProvisionWait); err != nil {
		return err
	}
	m.Logger.Info("streams and buckets provisioned", zap.Int("replicas", pc.Replicas))
	return nil
}

// Close stops the server.
func (m *NATSMain) Close() error {
	if m.Server != nil {
		m.Server.Shutdown()
	}
	return nil
}

// natsClusterFlags are the flags of `gust nats` as a member of a cluster.
type natsClusterFlags struct {
	listen, routes, name, serverName, passwordFile string
	replicas                                       int
}

// routeUser is the user servers of a cluster route to each other as.
const routeUser = "gust-route"

// clusterPasswordDir is the directory, in the auth directory, of the
// route password the servers of a cluster share.
const clusterPasswordDir = "cluster"

func (f *natsClusterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "cluster-listen", envOr("GUST_NATS_CLUSTER_LISTEN", ""), "address for routes from the other NATS servers of a cluster, e.g. 0.0.0.0:6222 (default none: a single server) ($GUST_NATS_CLUSTER_LISTEN)")
	fs.StringVar(&f.routes, "routes", envOr("GUST_NATS_ROUTES", ""), "comma-separated route URLs of the other servers of the cluster, nats://nats2:6222,nats://nats3:6222 ($GUST_NATS_ROUTES)")
	fs.StringVar(&f.name, "cluster-name", envOr("GUST_NATS_CLUSTER_NAME", "gust"), "name of the cluster, the same on each of its servers ($GUST_NATS_CLUSTER_NAME)")
	fs.StringVar(&f.serverName, "server-name", envOr("GUST_NATS_SERVER_NAME", ""), "name of this server, unique in its cluster (default the host name) ($GUST_NATS_SERVER_NAME)")
	fs.StringVar(&f.passwordFile, "cluster-password-file", envOr("GUST_NATS_CLUSTER_PASSWORD_FILE", ""),
		"file holding the route password every server of the cluster shares (user "+routeUser+"), generated there if missing; default $GUST_NATS_CLUSTER_PASSWORD, else AUTH/"+clusterPasswordDir+"/password ($GUST_NATS_CLUSTER_PASSWORD_FILE)")
	fs.IntVar(&f.replicas, "replicas", 0, "servers that keep each of Gust's streams and buckets (default 3 in a cluster with two routes or more, else 1)")
}

// clustered says whether the flags make the server a cluster member.
func (f *natsClusterFlags) clustered() bool { return f.listen != "" }

// routeList is --routes split.
func (f *natsClusterFlags) routeList() []string {
	var out []string
	for _, r := range strings.Split(f.routes, ",") {
		if r = strings.TrimSpace(r); r != "" {
			out = append(out, r)
		}
	}
	return out
}

// replicasOrDefault is --replicas, or 3 in a cluster of three servers or
// more (two routes to others at least), else 1: a single server keeps
// its streams with one copy, as before clusters.
func (f *natsClusterFlags) replicasOrDefault() int {
	if f.replicas > 0 {
		return f.replicas
	}
	if f.clustered() && len(f.routeList()) >= 2 {
		return 3
	}
	return 1
}

// config returns the cluster's configuration, nil outside a cluster. The
// route password comes from --cluster-password-file, else
// $GUST_NATS_CLUSTER_PASSWORD, else authDir (or the data directory's
// nats-auth), generated there when missing: servers sharing that
// directory (a volume) share it, whichever starts first.
func (f *natsClusterFlags) config(authDir, dataDir string, logger *zap.Logger) (*natsbus.ClusterConfig, error) {
	if !f.clustered() {
		if f.routes != "" {
			return nil, errors.New("--routes needs --cluster-listen")
		}
		if f.replicas > 1 {
			return nil, fmt.Errorf("--replicas %d needs a cluster (--cluster-listen, --routes)", f.replicas)
		}
		return nil, nil
	}
	if f.serverName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, fmt.Errorf("--server-name: none given and no host name: %v", err)
		}
		f.serverName = h
	}
	if authDir == "" {
		authDir = filepath.Join(dataDir, natsAuthDir)
	}
	pw, err := secretSource{
		what: "NATS cluster route password", flag: "--cluster-password-file", file: f.passwordFile, generateFile: true,
		env: "GUST_NATS_CLUSTER_PASSWORD", envValue: os.Getenv("GUST_NATS_CLUSTER_PASSWORD"),
		dataFile: filepath.Join(authDir, clusterPasswordDir, "password"),
	}.get(logger)
	if err != nil {
		return nil, err
	}
	return &natsbus.ClusterConfig{
		Name: f.name, Listen: f.listen, Routes: f.routeList(), User: routeUser, Password: pw,
	}, nil
}
