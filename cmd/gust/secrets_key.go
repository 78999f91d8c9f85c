package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus"
	"go.uber.org/zap"
)

// Secrets are stored encrypted under a 32-byte key that never enters NATS:
// given by --secrets-key-file, else kept in the data directory, generated
// there on first start. Only the file's path is ever logged. Every
// gateway and worker of a cluster must be given the same key (the same
// file); one role alone on its data directory (`gust up`) needs nothing.

// secretsKeyFile is the generated key's file in the data directory.
const secretsKeyFile = "secrets.key"

// secretsKeyFlag registers --secrets-key-file.
func secretsKeyFlag(fs *flag.FlagSet) *string {
	return fs.String("secrets-key-file", envOr("GUST_SECRETS_KEY_FILE", ""),
		"file holding the key secrets are encrypted under (32 bytes: 64 hex digits or base64), generated there on first start if missing; default DATA/"+secretsKeyFile+
			". Every gateway and worker of a cluster needs the same one ($GUST_SECRETS_KEY_FILE)")
}

// secretsKey returns the key kept in file when it is given, else in
// dataDir; a key that is not there yet is generated there.
func secretsKey(file, dataDir string, logger *zap.Logger) ([]byte, error) {
	p, what := filepath.Join(dataDir, secretsKeyFile), "secrets key"
	if file != "" {
		// A file that does not exist yet is generated there too: the
		// roles of one cluster given one shared path (a volume, in
		// compose) agree on the key whichever starts first.
		p, what = file, "--secrets-key-file"
	}
	key, err := readSecretsKey(p)
	if err == nil {
		logger.Info("secrets key read", zap.String("file", p))
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if key, err = generateSecretsKey(p); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	logger.Info("secrets key generated; keep it safe with the data (secrets cannot be read without it)", zap.String("file", p))
	return key, nil
}

// readSecretsKey reads a key file: 64 hex digits, base64 of 32 bytes, or
// the 32 bytes themselves.
func readSecretsKey(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	s := strings.TrimSpace(string(b))
	if key, err := hex.DecodeString(s); err == nil && len(key) == natsbus.SecretsKeySize {
		return key, nil
	}
	if key, err := base64.StdEncoding.DecodeString(s); err == nil && len(key) == natsbus.SecretsKeySize {
		return key, nil
	}
	if len(b) == natsbus.SecretsKeySize {
		return b, nil
	}
	return nil, fmt.Errorf("%s: want a %d-byte key: %d hex digits (e.g. from `openssl rand -hex %d`), base64, or the raw bytes",
		p, natsbus.SecretsKeySize, 2*natsbus.SecretsKeySize, natsbus.SecretsKeySize)
}

// generateSecretsKey writes a new random key, in hex, to p (see
// writeNewSecretFile); if p exists by then, it reads the key there.
func generateSecretsKey(p string) ([]byte, error) {
	key := make([]byte, natsbus.SecretsKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate secrets key: %w", err)
	}
	existing, err := writeNewSecretFile(p, hex.EncodeToString(key)+"\n")
	if err != nil {
		return nil, err
	}
	if existing {
		return readSecretsKey(p)
	}
	return key, nil
}

// openSecrets opens the secrets bucket alone (a worker's need), under the
// key of keyFile (or of dataDir).
func openSecrets(ctx context.Context, bus *natsbus.Bus, keyFile, dataDir string, logger *zap.Logger) (*gust.Tenancy, error) {
	key, err := secretsKey(keyFile, dataDir, logger)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	s, err := natsbus.OpenSecrets(ctx, bus, key)
	if err != nil {
		return nil, err
	}
	return &gust.Tenancy{Secrets: s}, nil
}

// openTenancy opens the tables of access control on bus, with secrets
// under the key of keyFile (or of dataDir).
func openTenancy(ctx context.Context, bus *natsbus.Bus, keyFile, dataDir string, logger *zap.Logger) (*gust.Tenancy, error) {
	key, err := secretsKey(keyFile, dataDir, logger)
	if err != nil {
		return nil, err
	}
	// The cipher keeps its own copy; this one need not stay in memory.
	defer clear(key)
	return natsbus.OpenTenancy(ctx, bus, key)
}
