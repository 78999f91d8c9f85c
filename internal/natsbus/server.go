// Package natsbus adapts NATS and JetStream to Gust: the embedded server of
// `gust up` and `gust nats`, connections, typed JetStream KV tables and
// request/reply. It is the only package that imports nats.go and
// nats-server.
package natsbus

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
)

// ServerConfig configures an embedded NATS server with JetStream.
type ServerConfig struct {
	// Listen is host:port for clients; port 0 or -1 picks a free one.
	Listen string
	// StoreDir holds JetStream's files.
	StoreDir string
	// Name identifies the server in logs and cluster views.
	Name string
	// Users maps each user (a role of Roles, or UserEvents) to its
	// password; each gets its role's permissions. Clients without one of
	// these credentials are refused: there is no anonymous access.
	Users map[string]string
	// TLSCert and TLSKey, when given, make clients connect with TLS
	// (PEM files); TLSClientCA, when given too, requires client
	// certificates signed by it (mutual TLS) on top of the passwords.
	TLSCert, TLSKey, TLSClientCA string
	// Cluster, when set, makes the server a member of a NATS cluster with
	// JetStream clustered: Name must then be unique in the cluster.
	Cluster *ClusterConfig
}

// ClusterConfig makes a server a member of a NATS cluster.
type ClusterConfig struct {
	// Name is the cluster's name, the same on every server.
	Name string
	// Listen is host:port for routes from the other servers.
	Listen string
	// Routes are nats://host:port of the other servers' route listeners
	// (the server's own may be among them: it is skipped).
	Routes []string
	// User and Password are the route credentials every server of the
	// cluster shares: a route without them is refused, so that nothing
	// but a server of the cluster joins it.
	User, Password string
}

// routes returns the route URLs with the cluster's credentials in them.
func (c *ClusterConfig) routes() ([]*url.URL, error) {
	var out []*url.URL
	for _, r := range c.Routes {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("nats route %q: want nats://host:port", redactURL(r))
		}
		u.User = url.UserPassword(c.User, c.Password)
		out = append(out, u)
	}
	return out, nil
}

// options sets the cluster's part of opts.
func (c *ClusterConfig) options(opts *server.Options) error {
	if c.Name == "" {
		return fmt.Errorf("nats cluster: no cluster name")
	}
	if opts.ServerName == "" {
		return fmt.Errorf("nats cluster: no server name (each server of a cluster needs its own)")
	}
	if c.User == "" || c.Password == "" {
		return fmt.Errorf("nats cluster: no route credentials: routes would be open to anyone")
	}
	host, port, err := hostPort(c.Listen, "nats cluster listen address")
	if err != nil {
		return err
	}
	routes, err := c.routes()
	if err != nil {
		return err
	}
	opts.Cluster = server.ClusterOpts{
		Name: c.Name, Host: host, Port: port,
		Username: c.User, Password: c.Password, AuthTimeout: 5,
	}
	opts.Routes = routes
	return nil
}

// hostPort splits host:port; port 0 or -1 picks a free one.
func hostPort(addr, what string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: %w", what, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("%s port %q: %w", what, portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// Server is an embedded NATS server.
type Server struct {
	ns    *server.Server
	users map[string]string
}

// RunServer starts an embedded NATS server with JetStream and waits until
// it accepts connections.
func RunServer(cfg ServerConfig, logger *zap.Logger) (*Server, error) {
	host, port, err := hostPort(cfg.Listen, "nats listen address")
	if err != nil {
		return nil, err
	}
	if len(cfg.Users) == 0 {
		return nil, fmt.Errorf("nats server: no users: Gust's server takes no anonymous clients")
	}
	us, err := users(cfg.Users)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		// Request bodies never travel through NATS on the sync path, but
		// async calls and events do: allow 8 MiB payloads.
		MaxPayload: 8 << 20,
		Users:      us,
	}
	if cfg.Cluster != nil {
		if err := cfg.Cluster.options(opts); err != nil {
			return nil, err
		}
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, CaFile: cfg.TLSClientCA, Verify: cfg.TLSClientCA != "",
		})
		if err != nil {
			return nil, fmt.Errorf("nats server tls (--nats-tls-cert, --nats-tls-key): %w", err)
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify = tc, true, cfg.TLSClientCA != ""
		opts.TLSTimeout = 5
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	ns.SetLoggerV2(&serverLogger{logger.Named("nats").WithOptions(zap.AddCallerSkip(1)).Sugar()}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats server did not accept connections on %s within 15s", cfg.Listen)
	}
	return &Server{ns: ns, users: cfg.Users}, nil
}

// ClusterURL is the URL other servers route to, "" outside a cluster.
func (s *Server) ClusterURL() string {
	if a := s.ns.ClusterAddr(); a != nil {
		return "nats://" + a.String()
	}
	return ""
}

// ClientURL is the URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// UserURL is the client URL with user's credentials in it, for the
// connections of the process that runs the server (its provisioning, `gust
// up`, tests). The URL holds a password: never log it.
func (s *Server) UserURL(user string) string {
	u, err := URLWithUser(s.ns.ClientURL(), user, s.users[user])
	if err != nil {
		panic(err) // the server's own URL always parses
	}
	return u
}

// ProvisionConfig is how the process that runs the server connects to it:
// in process, as UserGust, provisioning.
func (s *Server) ProvisionConfig(name string) ClientConfig {
	return ClientConfig{
		InProcess: s, Name: name, User: UserGust, Password: s.users[UserGust], Provision: true,
	}
}

// Shutdown stops the server after lame-duck mode would be pointless here:
// by the time it runs, every client of this process has drained.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// serverLogger writes nats-server's log lines through zap.
type serverLogger struct{ l *zap.SugaredLogger }

func (s *serverLogger) Noticef(format string, v ...any) { s.l.Debugf(format, v...) }
func (s *serverLogger) Warnf(format string, v ...any)   { s.l.Warnf(format, v...) }
func (s *serverLogger) Fatalf(format string, v ...any)  { s.l.Errorf(format, v...) }
func (s *serverLogger) Errorf(format string, v ...any)  { s.l.Errorf(format, v...) }
func (s *serverLogger) Debugf(format string, v ...any)  { s.l.Debugf(format, v...) }
func (s *serverLogger) Tracef(format string, v ...any)  { s.l.Debugf(format, v...) }
