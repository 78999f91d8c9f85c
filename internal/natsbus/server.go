// Package natsbus adapts NATS and JetStream to Gust: the embedded server of
// `gust up` and `gust nats`, connections, typed JetStream KV tables and
// request/reply. It is the only package that imports nats.go and
// nats-server.
package natsbus

import (
	"fmt"
	"net"
	"strconv"
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
}

// Server is an embedded NATS server.
type Server struct {
	ns    *server.Server
	users map[string]string
}

// RunServer starts an embedded NATS server with JetStream and waits until
// it accepts connections.
func RunServer(cfg ServerConfig, logger *zap.Logger) (*Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
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
