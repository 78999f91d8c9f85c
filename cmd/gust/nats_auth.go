package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
)

// NATS takes no anonymous clients (docs/nats-security.md). Its users:
//
//   - one per role (gateway, scheduler, worker), each with its own
//     password. `gust nats` keeps them in its auth directory, one file per
//     role (AUTH/ROLE/password), generated on first start; a role reads
//     its own from --nats-password-file (generated there when missing, so
//     that a path shared with `gust nats`, such as a volume, works
//     whichever starts first), else $GUST_NATS_PASSWORD, else
//     DATA/nats-auth/ROLE/password (the file `gust nats` keeps when both
//     run on one data directory). Separate passwords, not one secret they
//     are derived from: a worker's host runs code Gust did not write, and
//     holding a worker's password must not let it act as the gateway.
//   - gust, every role at once, for `gust up` and for the connection with
//     which `gust nats` creates the streams and buckets: a random password
//     that never leaves the process.
//   - events, for publishers outside Gust: --events-password-file, else
//     $GUST_EVENTS_PASSWORD, else DATA/events-password, generated on first
//     start.

// natsAuthDir is the directory, in the data directory, of the role
// passwords `gust nats` keeps.
const natsAuthDir = "nats-auth"

// eventsPasswordFile is the file in the data directory that holds the
// events user's password when none is given.
const eventsPasswordFile = "events-password"

// rolePasswordPath is where the password of role lives in an auth
// directory.
func rolePasswordPath(authDir, role string) string {
	return filepath.Join(authDir, role, "password")
}

// natsServerFlags are the flags of an embedded NATS server (`gust up`,
// `gust nats`).
type natsServerFlags struct {
	eventsFile                  string
	tlsCert, tlsKey, tlsCientCA string
	// meterRetention is how long the metering stream keeps a record (0:
	// for ever).
	meterRetention time.Duration
}

func (f *natsServerFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.meterRetention, "meter-retention", natsbus.DefaultMeterRetention, "how long the metering stream keeps a call record for billing stores to read (0: for ever; the billing store keeps its own copy)")
	fs.StringVar(&f.eventsFile, "events-password-file", "", "file holding the password of the NATS user \"events\" (outside publishers); default $GUST_EVENTS_PASSWORD, else DATA/"+eventsPasswordFile+", generated on first start")
	fs.StringVar(&f.tlsCert, "nats-tls-cert", envOr("GUST_NATS_TLS_CERT", ""), "PEM certificate of the NATS server: clients must connect with TLS ($GUST_NATS_TLS_CERT)")
	fs.StringVar(&f.tlsKey, "nats-tls-key", envOr("GUST_NATS_TLS_KEY", ""), "PEM key of --nats-tls-cert ($GUST_NATS_TLS_KEY)")
	fs.StringVar(&f.tlsCientCA, "nats-tls-client-ca", envOr("GUST_NATS_TLS_CLIENT_CA", ""), "PEM CA that must have signed the certificates of NATS clients (mutual TLS, on top of passwords) ($GUST_NATS_TLS_CLIENT_CA)")
}

// config returns the server's configuration: users (the gust user with a
// new random password, events, and the roles given in roles) and TLS.
func (f *natsServerFlags) config(listen, dataDir string, roles map[string]string, logger *zap.Logger) (natsbus.ServerConfig, error) {
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return natsbus.ServerConfig{}, fmt.Errorf("--nats-tls-cert and --nats-tls-key go together")
	}
	users, err := serverUsers(dataDir, f.eventsFile, roles, logger)
	if err != nil {
		return natsbus.ServerConfig{}, err
	}
	return natsbus.ServerConfig{
		Listen: listen, StoreDir: filepath.Join(dataDir, "nats"), Name: "gust", Users: users,
		TLSCert: f.tlsCert, TLSKey: f.tlsKey, TLSClientCA: f.tlsCientCA,
	}, nil
}

// serverUsers are the users of an embedded server: gust with a random
// password, events with its password (from eventsFile, the environment or
// dataDir) and roles.
func serverUsers(dataDir, eventsFile string, roles map[string]string, logger *zap.Logger) (map[string]string, error) {
	users := map[string]string{}
	for r, pw := range roles {
		users[r] = pw
	}
	pw, err := randomSecret()
	if err != nil {
		return nil, err
	}
	users[natsbus.UserGust] = pw
	if users[natsbus.UserEvents], err = eventsPassword(eventsFile, dataDir, logger); err != nil {
		return nil, err
	}
	return users, nil
}

// eventsPassword returns the password of the events user.
func eventsPassword(file, dataDir string, logger *zap.Logger) (string, error) {
	return secretSource{
		what: "NATS password of user events", flag: "--events-password-file", file: file,
		env: "GUST_EVENTS_PASSWORD", envValue: os.Getenv("GUST_EVENTS_PASSWORD"),
		dataFile: filepath.Join(dataDir, eventsPasswordFile),
	}.get(logger)
}

// rolePasswords returns the passwords of the roles kept in authDir,
// generating those missing.
func rolePasswords(authDir string, logger *zap.Logger) (map[string]string, error) {
	pws := map[string]string{}
	for _, r := range []string{natsbus.UserGateway, natsbus.UserScheduler, natsbus.UserWorker} {
		p := rolePasswordPath(authDir, r)
		pw, err := secretSource{what: "NATS password of user " + r, flag: "--auth-dir", file: p, generateFile: true}.get(logger)
		if err != nil {
			return nil, err
		}
		pws[r] = pw
	}
	return pws, nil
}

// natsClientFlags are the flags with which a role reaches NATS.
type natsClientFlags struct {
	url, passwordFile, ca, cert, key, creds string
}

func (f *natsClientFlags) register(fs *flag.FlagSet, role string) {
	fs.StringVar(&f.url, "nats", envOr("GUST_NATS", "nats://127.0.0.1:4222"), "NATS URL; may carry the credentials, nats://"+role+":PASSWORD@host:port; tls://host:port for TLS ($GUST_NATS)")
	fs.StringVar(&f.passwordFile, "nats-password-file", envOr("GUST_NATS_PASSWORD_FILE", ""),
		"file holding the NATS password of user "+role+", generated there on first start if missing (share it with gust nats's --auth-dir/"+role+"/password); default $GUST_NATS_PASSWORD, else DATA/"+natsAuthDir+"/"+role+"/password ($GUST_NATS_PASSWORD_FILE)")
	fs.StringVar(&f.ca, "nats-ca", envOr("GUST_NATS_CA", ""), "PEM CA of the NATS server's TLS certificate: connect with TLS ($GUST_NATS_CA)")
	fs.StringVar(&f.cert, "nats-cert", envOr("GUST_NATS_CERT", ""), "PEM client certificate, for a NATS server that requires mutual TLS ($GUST_NATS_CERT)")
	fs.StringVar(&f.key, "nats-key", envOr("GUST_NATS_KEY", ""), "PEM key of --nats-cert ($GUST_NATS_KEY)")
	fs.StringVar(&f.creds, "nats-creds", envOr("GUST_NATS_CREDS", ""), "NATS credentials file (user JWT and NKey seed) for a NATS server with decentralized auth, instead of a password ($GUST_NATS_CREDS)")
}

// config returns how role connects: credentials from the URL, else the
// creds file, else role's password (see the top of this file).
func (f *natsClientFlags) config(role, dataDir string, logger *zap.Logger) (natsbus.ClientConfig, error) {
	c := natsbus.ClientConfig{URL: f.url, CAFile: f.ca, CertFile: f.cert, KeyFile: f.key, CredsFile: f.creds}
	if natsbus.URLUser(f.url) != "" || f.creds != "" {
		return c, nil
	}
	pw, err := secretSource{
		what: "NATS password of user " + role, flag: "--nats-password-file", file: f.passwordFile, generateFile: true,
		env: "GUST_NATS_PASSWORD", envValue: os.Getenv("GUST_NATS_PASSWORD"),
		dataFile: rolePasswordPath(filepath.Join(dataDir, natsAuthDir), role),
	}.get(logger)
	if err != nil {
		return c, err
	}
	c.User, c.Password = role, pw
	return c, nil
}
