package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/gustfaas/gust/gateway"
)

// The client verbs find their credentials, in this order: the flags
// (--password, --key), the environment (GUST_PASSWORD, GUST_KEY), the user
// config that `gust login` wrote for the gateway in use, and, for a
// gateway on this machine, the admin password `gust up` generated in the
// default data directory (so the quick start needs no login). The first
// that gives any credential wins; a password wins over a key at the same
// step.

// defaultGateway is the gateway of `gust up` on this machine.
const defaultGateway = "http://127.0.0.1:8080"

// adminPasswordFile is the file in the data directory that holds the
// generated admin password.
const adminPasswordFile = "admin-password"

// credentials are what a client sends: the admin's password or a key.
type credentials struct {
	Password string `json:"password,omitempty"`
	Key      string `json:"key,omitempty"`
}

func (c credentials) empty() bool { return c.Password == "" && c.Key == "" }

// userConfig is the file `gust login` writes: the gateway in use and the
// credentials saved for each gateway logged in to. It holds secrets: mode
// 0600 in a 0700 directory.
type userConfig struct {
	Gateway string                 `json:"gateway,omitempty"`
	Auths   map[string]credentials `json:"auths,omitempty"`
}

// userConfigPath is $XDG_CONFIG_HOME/gust/config.json, or
// ~/.config/gust/config.json.
func userConfigPath() (string, error) {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "gust", "config.json"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("user config: %w", err)
	}
	return filepath.Join(home, ".config", "gust", "config.json"), nil
}

// readUserConfig reads the user config; a missing file is an empty one.
func readUserConfig() (userConfig, string, error) {
	var cfg userConfig
	p, err := userConfigPath()
	if err != nil {
		return cfg, "", err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, p, nil
	}
	if err != nil {
		return cfg, p, fmt.Errorf("read %s: %w", p, err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, p, fmt.Errorf("read %s: %w", p, err)
	}
	return cfg, p, nil
}

// writeUserConfig replaces the user config at p, never leaving it readable
// by others, even for a moment: the new file is made 0600 before anything
// is written to it, then renamed over the old one.
func writeUserConfig(p string, cfg userConfig) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encode user config: %w", err)
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("user config: %w", err)
	}
	f, err := os.CreateTemp(dir, ".config-*.json")
	if err != nil {
		return fmt.Errorf("user config: %w", err)
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("user config: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("user config: %w", err)
	}
	return nil
}

// normalGateway is the form gateways are saved under: no trailing slash.
func normalGateway(u string) string { return strings.TrimRight(strings.TrimSpace(u), "/") }

// isLoopbackGateway reports whether the gateway URL names this machine:
// only then may the locally generated admin password go to it.
func isLoopbackGateway(u string) bool {
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	host := pu.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// localAdminPassword reads the admin password `gust up` generated in the
// default data directory ($GUST_DATA or .gust), or "".
func localAdminPassword() string {
	b, err := os.ReadFile(filepath.Join(defaultDataDir(), adminPasswordFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// resolveGateway picks the gateway: the flag, $GUST_GATEWAY, the one of
// `gust login`, or this machine's.
func resolveGateway(flagValue string, cfg userConfig) string {
	for _, g := range []string{flagValue, os.Getenv("GUST_GATEWAY"), cfg.Gateway} {
		if g = normalGateway(g); g != "" {
			return g
		}
	}
	return defaultGateway
}

// resolveCredentials picks the credentials for gateway gw (see the order
// at the top of this file). Saved credentials go only to the gateway they
// were saved for, the local password file only to a gateway on this
// machine.
func resolveCredentials(flags credentials, gw string, cfg userConfig) credentials {
	if !flags.empty() {
		return flags
	}
	if env := (credentials{Password: os.Getenv("GUST_PASSWORD"), Key: os.Getenv("GUST_KEY")}); !env.empty() {
		return env
	}
	if saved, ok := cfg.Auths[normalGateway(gw)]; ok && !saved.empty() {
		return saved
	}
	if isLoopbackGateway(gw) {
		return credentials{Password: localAdminPassword()}
	}
	return credentials{}
}

// newClient is a gateway client that sends creds.
func newClient(gw string, creds credentials) *gateway.Client {
	c := gateway.NewClient(gw)
	if creds.Password != "" {
		c.Username, c.Password = gateway.AdminUser, creds.Password
	} else {
		c.Token = creds.Key
	}
	return c
}
