package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
)

// A secret of Gust's (the admin password, the events password, a NATS
// role's password, the worker token) comes from a file named by a flag,
// else from an environment variable, else from a file in the data
// directory, generated there on first start. Only paths are ever logged.

// secretSource says where one secret comes from.
type secretSource struct {
	what string // for messages: "admin password"
	// flag is the flag naming file, for messages; file is its value.
	flag, file string
	// generateFile: a file given by the flag that does not exist yet is
	// generated there, so that the processes of a cluster given one
	// shared path (a volume, in compose) agree on the secret whichever
	// starts first. Otherwise the file must exist.
	generateFile bool
	// env is the environment variable's name, envValue its value.
	env, envValue string
	// dataFile is the file in the data directory used when neither is
	// given, generated there when missing. Empty: the secret must be
	// given.
	dataFile string
}

// get returns the secret.
func (s secretSource) get(logger *zap.Logger) (string, error) {
	if s.file != "" {
		v, err := readPasswordFile(s.file)
		if errors.Is(err, fs.ErrNotExist) && s.generateFile {
			return s.generate(s.file, s.flag, logger)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", s.flag, err)
		}
		logger.Info(s.what+" read from a file", zap.String("file", s.file))
		return v, nil
	}
	if s.envValue != "" {
		logger.Info(s.what + " from $" + s.env)
		return s.envValue, nil
	}
	if s.dataFile == "" {
		return "", fmt.Errorf("%s: give %s or $%s", s.what, s.flag, s.env)
	}
	v, err := readPasswordFile(s.dataFile)
	if err == nil {
		logger.Info(s.what+" read from the data directory", zap.String("file", s.dataFile))
		return v, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s: %w", s.what, err)
	}
	return s.generate(s.dataFile, s.what, logger)
}

// randomSecret returns a new random secret: 192 bits in URL-safe base64
// (printable, no quoting needed in a shell or a URL).
func randomSecret() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate a secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// generate makes a new random secret in p.
func (s secretSource) generate(p, what string, logger *zap.Logger) (string, error) {
	v, err := randomSecret()
	if err != nil {
		return "", err
	}
	existing, err := writeNewSecretFile(p, v+"\n")
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if existing {
		return readPasswordFile(p)
	}
	logger.Info(s.what+" generated", zap.String("file", p))
	return v, nil
}

// readPasswordFile reads a password: the file's first line, which must not
// be empty.
func readPasswordFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	if pw = strings.TrimRight(pw, "\r"); pw == "" {
		return "", fmt.Errorf("%s: empty password", p)
	}
	return pw, nil
}

// writeNewSecretFile writes content to p, mode 0600 in a directory made
// 0700, unless p exists: then it reports existing and leaves p alone. The
// content is written whole to a file of its own and then linked to p,
// which fails if p exists: two processes starting on one path never
// overwrite each other's secret, and the loser reads the winner's, never
// a file half written.
func writeNewSecretFile(p, content string) (existing bool, err error) {
	dir := filepath.Dir(p)
	if err := privateDir(dir); err != nil {
		return false, err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(p)+"-*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", p, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("write %s: %w", p, err)
	}
	if err := os.Link(tmp, p); errors.Is(err, fs.ErrExist) {
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("write %s: %w", p, err)
	}
	return false, nil
}

// privateDir makes dir (and its parents) if needed and sets its mode to
// 0700: the data directory holds passwords, keys and billing records that
// no other user of the host may read. An existing directory is chmod'ed
// too, so a data directory made by an earlier release becomes private.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	return nil
}

// dataDirEntries are what Gust keeps in a data directory: privateDataDir
// tightens these and nothing else, in case --data names a directory that
// holds more than Gust's.
var dataDirEntries = []string{
	"nats", natsAuthDir, "spool", "billing.db", "billing.db-wal", "billing.db-shm", "billing.db-journal",
	adminPasswordFile, eventsPasswordFile, secretsKeyFile, workerTokenFile, workerIDFile, "billing-id",
}

// privateDataDir makes dataDir private: the directory 0700 and, in what
// Gust keeps there, every directory 0700 and every file without group or
// other bits, so a data directory left by an earlier release (or copied)
// is tightened on start. What Gust writes there later is created private
// (createPrivate, the spool), inside a directory only its user enters.
func privateDataDir(dataDir string) error {
	if err := privateDir(dataDir); err != nil {
		return err
	}
	for _, e := range dataDirEntries {
		err := filepath.WalkDir(filepath.Join(dataDir, e), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type()&fs.ModeSymlink != 0 {
				return nil // the target is not ours to change
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			mode, want := info.Mode().Perm(), info.Mode().Perm()&^0o077
			if d.IsDir() {
				want = 0o700
			}
			if mode == want {
				return nil
			}
			return os.Chmod(p, want)
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("data directory: %w", err)
		}
	}
	return nil
}

// createPrivate creates p, mode 0600, if it does not exist, so that what
// opens it next (SQLite, which gives its journal and WAL files the mode of
// the database's) keeps it private.
func createPrivate(p string) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	return f.Close()
}
