package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestAdminPassword: the flag's file wins over the environment, which wins
// over the data directory's file, generated on first start (0600 in a 0700
// directory, 192 random bits, printable) and read back on the next; the log
// names the file, never the password.
func TestAdminPassword(t *testing.T) {
	t.Run("File", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(f, []byte("from-file\nignored\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		pw, err := adminPassword(f, "from-env", t.TempDir(), zap.NewNop())
		if err != nil || pw != "from-file" {
			t.Errorf("got %q, %v; want from-file", pw, err)
		}
	})
	t.Run("FileEmpty", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(f, []byte("\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if pw, err := adminPassword(f, "", t.TempDir(), zap.NewNop()); err == nil || !strings.Contains(err.Error(), "--admin-password-file") {
			t.Errorf("got %q, %v; want an error naming --admin-password-file", pw, err)
		}
	})
	t.Run("FileMissing", func(t *testing.T) {
		if _, err := adminPassword(filepath.Join(t.TempDir(), "nosuch"), "from-env", t.TempDir(), zap.NewNop()); err == nil {
			t.Error("a missing --admin-password-file was accepted")
		}
	})
	t.Run("Env", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		pw, err := adminPassword("", "from-env", dir, zap.NewNop())
		if err != nil || pw != "from-env" {
			t.Errorf("got %q, %v; want from-env", pw, err)
		}
		if _, err := os.Stat(filepath.Join(dir, adminPasswordFile)); err == nil {
			t.Error("a password was generated although $GUST_ADMIN_PASSWORD was set")
		}
	})
	t.Run("Generated", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		core, logs := observer.New(zap.DebugLevel)
		pw, err := adminPassword("", "", dir, zap.New(core))
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) < 22 { // 128 bits in base64
			t.Errorf("generated password %d characters long, want at least 22", len(pw))
		}
		for _, r := range pw {
			if !unicode.IsPrint(r) || unicode.IsSpace(r) {
				t.Errorf("generated password has the character %q", r)
			}
		}
		p := filepath.Join(dir, adminPasswordFile)
		for path, want := range map[string]os.FileMode{p: 0o600, dir: 0o700} {
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Mode().Perm(); got != want {
				t.Errorf("%s: mode %o, want %o", path, got, want)
			}
		}
		again, err := adminPassword("", "", dir, zap.New(core))
		if err != nil || again != pw {
			t.Errorf("second start: got %q, %v; want the generated password again", again, err)
		}
		var named bool
		for _, e := range logs.All() {
			line := e.Message
			for k, v := range e.ContextMap() {
				line += " " + k + "=" + strings.TrimSpace(strings.ReplaceAll(toString(v), "\n", " "))
			}
			if strings.Contains(line, pw) {
				t.Errorf("the log shows the password: %s", line)
			}
			named = named || strings.Contains(line, p)
		}
		if !named {
			t.Errorf("no log line names %s", p)
		}
		if other, err := adminPassword("", "", filepath.Join(t.TempDir(), "data"), zap.NewNop()); err != nil || other == pw {
			t.Errorf("another data directory: %q, %v; want another password", other, err)
		}
	})
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// TestResolveCredentials: flags, then the environment, then what `gust
// login` saved for this very gateway, then (for a gateway on this machine
// only) the password `gust up` generated in the default data directory.
func TestResolveCredentials(t *testing.T) {
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, adminPasswordFile), []byte("local-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	saved := userConfig{Gateway: "http://gw.example:8080", Auths: map[string]credentials{
		"http://gw.example:8080": {Key: "gk_a_saved"},
		"http://127.0.0.1:9999":  {Password: "saved-local"},
	}}
	for _, tc := range []struct {
		name           string
		flags          credentials
		envPW, envKey  string
		gateway        string
		cfg            userConfig
		want           credentials
		wantGatewayArg string // the flag of --gateway
	}{
		{name: "Flags", flags: credentials{Password: "flag"}, envPW: "env", gateway: "http://gw.example:8080", cfg: saved, want: credentials{Password: "flag"}},
		{name: "EnvPassword", envPW: "env", gateway: "http://gw.example:8080", cfg: saved, want: credentials{Password: "env"}},
		{name: "EnvKey", envKey: "gk_b_env", gateway: "http://gw.example:8080", cfg: saved, want: credentials{Key: "gk_b_env"}},
		{name: "Saved", gateway: "http://gw.example:8080/", cfg: saved, want: credentials{Key: "gk_a_saved"}},
		{name: "SavedForAnotherGateway", gateway: "http://other.example:8080", cfg: saved, want: credentials{}},
		{name: "SavedBeforeLocalFile", gateway: "http://127.0.0.1:9999", cfg: saved, want: credentials{Password: "saved-local"}},
		{name: "LocalFile", gateway: "http://127.0.0.1:8080", cfg: saved, want: credentials{Password: "local-pw"}},
		{name: "LocalFileLocalhost", gateway: "http://localhost:8080", want: credentials{Password: "local-pw"}},
		{name: "LocalFileIPv6", gateway: "http://[::1]:8080", want: credentials{Password: "local-pw"}},
		{name: "LocalFileNotForRemote", gateway: "http://10.1.2.3:8080", want: credentials{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GUST_DATA", data)
			t.Setenv("GUST_PASSWORD", tc.envPW)
			t.Setenv("GUST_KEY", tc.envKey)
			if got := resolveCredentials(tc.flags, tc.gateway, tc.cfg); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	t.Run("Gateway", func(t *testing.T) {
		t.Setenv("GUST_GATEWAY", "")
		if got := resolveGateway("", saved); got != "http://gw.example:8080" {
			t.Errorf("saved gateway: got %s", got)
		}
		if got := resolveGateway("", userConfig{}); got != defaultGateway {
			t.Errorf("no gateway anywhere: got %s, want %s", got, defaultGateway)
		}
		t.Setenv("GUST_GATEWAY", "http://env.example/")
		if got := resolveGateway("", saved); got != "http://env.example" {
			t.Errorf("$GUST_GATEWAY: got %s", got)
		}
		if got := resolveGateway("http://flag.example", saved); got != "http://flag.example" {
			t.Errorf("--gateway: got %s", got)
		}
	})
}

// TestUserConfig: `gust login`'s file is 0600 in a 0700 directory under
// $XDG_CONFIG_HOME, and reads back as written; a missing one is empty.
func TestUserConfig(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(t.TempDir(), "xdg"))
	cfg, p, err := readUserConfig()
	if err != nil || cfg.Gateway != "" || len(cfg.Auths) != 0 {
		t.Fatalf("missing config: %+v, %v", cfg, err)
	}
	if want := filepath.Join(os.Getenv("XDG_CONFIG_HOME"), "gust", "config.json"); p != want {
		t.Errorf("path %s, want %s", p, want)
	}
	in := userConfig{Gateway: "http://gw", Auths: map[string]credentials{"http://gw": {Password: "pw"}}}
	if err := writeUserConfig(p, in); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{p: 0o600, filepath.Dir(p): 0o700} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", path, got, want)
		}
	}
	out, _, err := readUserConfig()
	if err != nil || out.Gateway != "http://gw" || out.Auths["http://gw"].Password != "pw" {
		t.Errorf("read back %+v, %v", out, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("config directory holds %d entries, want only config.json", len(entries))
	}
	if err := os.WriteFile(p, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readUserConfig(); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("malformed config: %v, want an error naming %s", err, p)
	}
}
