package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
)

// The admin password of `gust up` and `gust gateway` is on by default:
// given by --admin-password-file, else by $GUST_ADMIN_PASSWORD, else the
// one kept in the data directory, generated there on first start. Only
// the file's path is ever logged.

// adminPasswordFlag registers --admin-password-file and returns the
// function that finds the password for a role with data directory
// dataDir.
func adminPasswordFlag(fs *flag.FlagSet) func(dataDir string, logger *zap.Logger) (string, error) {
	file := fs.String("admin-password-file", "", "file holding the admin password (user \"admin\"); default $GUST_ADMIN_PASSWORD, else DATA/"+adminPasswordFile+", generated on first start")
	return func(dataDir string, logger *zap.Logger) (string, error) {
		return adminPassword(*file, os.Getenv("GUST_ADMIN_PASSWORD"), dataDir, logger)
	}
}

// adminPassword returns the password read from file when it is given,
// else env when set, else the one in dataDir, generated when there is
// none yet.
func adminPassword(file, env, dataDir string, logger *zap.Logger) (string, error) {
	if file != "" {
		pw, err := readPasswordFile(file)
		if err != nil {
			return "", fmt.Errorf("--admin-password-file: %w", err)
		}
		logger.Info("admin password read from a file", zap.String("file", file))
		return pw, nil
	}
	if env != "" {
		logger.Info("admin password from $GUST_ADMIN_PASSWORD")
		return env, nil
	}
	p := filepath.Join(dataDir, adminPasswordFile)
	pw, err := readPasswordFile(p)
	if err == nil {
		logger.Info("admin password read from the data directory", zap.String("file", p))
		return pw, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("admin password: %w", err)
	}
	if pw, err = generateAdminPassword(p); err != nil {
		return "", err
	}
	logger.Info("admin password generated (user admin); the gust CLI on this machine finds it there", zap.String("file", p))
	return pw, nil
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

// generateAdminPassword writes a new random password (192 bits, URL-safe
// base64: printable, no quoting needed in a shell) to p, mode 0600 in a
// directory made 0700. O_EXCL: two processes starting on one data
// directory never overwrite each other's; the loser reads the winner's.
func generateAdminPassword(p string) (string, error) {
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("data directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("data directory: %w", err)
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate admin password: %w", err)
	}
	pw := base64.RawURLEncoding.EncodeToString(b[:])
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readPasswordFile(p)
	}
	if err != nil {
		return "", fmt.Errorf("write admin password: %w", err)
	}
	if _, err := f.WriteString(pw + "\n"); err != nil {
		f.Close()
		os.Remove(p)
		return "", fmt.Errorf("write admin password: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(p)
		return "", fmt.Errorf("write admin password: %w", err)
	}
	return pw, nil
}
