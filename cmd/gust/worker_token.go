package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"
)

// A worker's listener takes calls from gateways only: they send the
// worker token (gust.HeaderWorkerToken). Every gateway and worker of a
// cluster needs the same one: --worker-token-file, generated there when
// missing (a path they share, such as a volume, works whichever starts
// first), else $GUST_WORKER_TOKEN, else DATA/worker-token. `gust up` needs
// none: its gateway calls its worker in process.

// workerTokenFile is the token's file in the data directory.
const workerTokenFile = "worker-token"

// workerTokenFlag registers --worker-token-file and returns the function
// that finds the token for a role with data directory dataDir.
func workerTokenFlag(fs *flag.FlagSet) func(dataDir string, logger *zap.Logger) (string, error) {
	file := fs.String("worker-token-file", envOr("GUST_WORKER_TOKEN_FILE", ""),
		"file holding the token gateways send to workers, generated there on first start if missing; default $GUST_WORKER_TOKEN, else DATA/"+workerTokenFile+
			". Every gateway and worker of a cluster needs the same one ($GUST_WORKER_TOKEN_FILE)")
	return func(dataDir string, logger *zap.Logger) (string, error) {
		return secretSource{
			what: "worker token", flag: "--worker-token-file", file: *file, generateFile: true,
			env: "GUST_WORKER_TOKEN", envValue: os.Getenv("GUST_WORKER_TOKEN"),
			dataFile: filepath.Join(dataDir, workerTokenFile),
		}.get(logger)
	}
}

// Calls from gateways to workers may go over TLS: a worker given
// --tls-cert and --tls-key serves its listener with TLS and advertises
// an https:// URL; gateways trust the CA of --worker-ca (else the
// system's) for those.

// workerCA returns the TLS configuration of calls to workers trusting the
// CA in file; nil (the system's CAs) when file is empty.
func workerCA(file string) (*tls.Config, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--worker-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--worker-ca %s: no PEM certificate in it", file)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
