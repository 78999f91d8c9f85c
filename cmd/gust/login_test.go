package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
)

// MustRunGateway runs the gateway role alone on an embedded NATS server
// (no Docker needed), with authentication on (defaultGatewayConfig), and
// returns its base URL.
func MustRunGateway(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	logger := testLogger(tb)
	dir := tb.TempDir()
	n := &NATSMain{Listen: "127.0.0.1:0", DataDir: filepath.Join(dir, "nats"), Roles: true, Logger: logger}
	if err := n.Run(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.Close() })
	gc := defaultGatewayConfig()
	gc.Listen = "127.0.0.1:0"
	g := &GatewayMain{NATS: roleNATS(n, natsbus.UserGateway), Config: gc, DataDir: filepath.Join(dir, "gateway"), Logger: logger}
	if err := g.Run(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := g.Close(); err != nil {
			tb.Errorf("close gateway: %v", err)
		}
	})
	return "http://" + g.Server.Addr()
}

// TestLogin: the CLI is refused without credentials; `gust login` saves
// only credentials the gateway takes, in a 0600 file, and the verbs use
// them; $GUST_PASSWORD overrides them; with no login, the CLI on the
// machine of `gust up` finds the admin password in the default data
// directory.
func TestLogin(t *testing.T) {
	base := MustRunGateway(t)
	home := t.TempDir()
	xdg := filepath.Join(home, "xdg")
	data := filepath.Join(home, "data") // $GUST_DATA: no password file yet
	env := []string{"GUST_GATEWAY=" + base, "XDG_CONFIG_HOME=" + xdg, "HOME=" + home, "GUST_DATA=" + data, "GUST_PASSWORD=", "GUST_KEY="}
	cfgFile := filepath.Join(xdg, "gust", "config.json")

	// The gateway itself refuses anonymous management calls.
	resp, err := anonClient(t).Get(base + "/system/functions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /system/functions: %d, want 401", resp.StatusCode)
	}

	steps := []struct {
		name     string
		env      []string
		stdin    string
		args     []string
		code     int
		contains string // in stdout, or in stderr for a non-zero code
	}{
		{"NoCredentials", nil, "", []string{"list"}, 1, "credentials required"},
		{"LoginNothing", nil, "", []string{"login"}, 2, "no credentials"},
		{"LoginWrong", nil, "wrong\n", []string{"login", "--password-stdin"}, 1, "refused the credentials"},
		{"LoginBothStdin", nil, "x\n", []string{"login", "--password-stdin", "--key-stdin"}, 2, "not both"},
		{"Login", nil, testAdminPassword + "\n", []string{"login", "--password-stdin"}, 0, "logged in to " + base + " as admin"},
		{"ListAfterLogin", nil, "", []string{"list"}, 0, "NAME"},
		{"EnvOverridesLogin", []string{"GUST_PASSWORD=wrong"}, "", []string{"list"}, 1, "credentials required"},
		{"FlagOverridesEnv", []string{"GUST_PASSWORD=wrong"}, "", []string{"list", "--password", testAdminPassword}, 0, "NAME"},
		{"SavedOnlyForItsGateway", []string{"GUST_GATEWAY=" + strings.Replace(base, "127.0.0.1", "localhost", 1)}, "", []string{"list"}, 1, "credentials required"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			code, out, errOut := gustCLIEnv(t, append(append([]string{}, env...), s.env...), s.stdin, s.args...)
			where := out
			if s.code != 0 {
				where = errOut
			}
			if code != s.code || !strings.Contains(where, s.contains) {
				t.Errorf("gust %s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(s.args, " "), code, out, errOut, s.code, s.contains)
			}
			if s.name == "LoginWrong" {
				if _, err := os.Stat(cfgFile); err == nil {
					t.Errorf("refused credentials were saved in %s", cfgFile)
				}
			}
		})
	}
	st, err := os.Stat(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %o, want 600", cfgFile, st.Mode().Perm())
	}
	b, _ := os.ReadFile(cfgFile)
	if !strings.Contains(string(b), base) || strings.Contains(string(b), "wrong") {
		t.Errorf("%s holds %s", cfgFile, b)
	}

	t.Run("LocalPasswordFile", func(t *testing.T) {
		// No login, the password `gust up` generated in the default data
		// directory: the quick start's case.
		if err := os.MkdirAll(data, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, adminPasswordFile), []byte(testAdminPassword+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		noLogin := append(append([]string{}, env...), "XDG_CONFIG_HOME="+filepath.Join(home, "empty"))
		if code, out, errOut := gustCLIEnv(t, noLogin, "", "list"); code != 0 {
			t.Errorf("gust list with the local password file: exit %d, %s %s", code, out, errOut)
		}
		if code, out, errOut := gustCLIEnv(t, noLogin, "", "login"); code != 0 || !strings.Contains(out, "as admin") {
			t.Errorf("gust login with the local password file: exit %d, %s %s", code, out, errOut)
		}
	})
}

// TestCLIAccess: namespaces, keys and secrets through the CLI, as admin
// and with a namespace's key: the key is printed once and never listed,
// it acts in its namespace only, secrets are listed by name and never by
// value, and a revoked key is refused at once.
func TestCLIAccess(t *testing.T) {
	base := MustRunGateway(t)
	home := t.TempDir()
	admin := []string{"GUST_GATEWAY=" + base, "XDG_CONFIG_HOME=" + filepath.Join(home, "xdg"), "HOME=" + home,
		"GUST_DATA=" + filepath.Join(home, "data"), "GUST_PASSWORD=" + testAdminPassword, "GUST_KEY="}
	run := func(t *testing.T, env []string, stdin string, args ...string) (string, string) {
		t.Helper()
		code, out, errOut := gustCLIEnv(t, env, stdin, args...)
		if code != 0 {
			t.Fatalf("gust %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out, errOut)
		}
		return out, errOut
	}
	fails := func(t *testing.T, env []string, contains string, args ...string) {
		t.Helper()
		code, out, errOut := gustCLIEnv(t, env, "", args...)
		if code == 0 || !strings.Contains(errOut, contains) {
			t.Errorf("gust %s: exit %d, stdout %q, stderr %q; want a failure saying %q", strings.Join(args, " "), code, out, errOut, contains)
		}
	}

	run(t, admin, "", "namespace", "create", "team-a", "--quota-instances", "2", "--quota-concurrency", "3", "--quota-memory", "1Gi")
	run(t, admin, "", "namespace", "create", "team-b")
	out, _ := run(t, admin, "", "namespace", "list")
	if !strings.Contains(out, "team-a") || !strings.Contains(out, "1Gi") || !strings.Contains(out, gust.DefaultNamespace) {
		t.Errorf("namespace list: %q, want team-a with its quota and %s", out, gust.DefaultNamespace)
	}
	out, errOut := run(t, admin, "", "keys", "create", "team-a", "ci")
	key := strings.TrimSpace(out)
	id := gust.KeyIDOfToken(key)
	if id == "" || !strings.Contains(errOut, id) {
		t.Fatalf("keys create: stdout %q (want the key alone), stderr %q", out, errOut)
	}
	out, _ = run(t, admin, "", "keys", "list")
	if !strings.Contains(out, id) || !strings.Contains(out, "team-a") || strings.Contains(out, key) {
		t.Errorf("keys list: %q; want id %s and never the key", out, id)
	}

	// The key, given through `gust login --key-stdin`.
	asKey := []string{"GUST_GATEWAY=" + base, "XDG_CONFIG_HOME=" + filepath.Join(home, "xdg-key"), "HOME=" + home,
		"GUST_DATA=" + filepath.Join(home, "data"), "GUST_PASSWORD=", "GUST_KEY="}
	out, _ = run(t, asKey, key+"\n", "login", "--key-stdin")
	if !strings.Contains(out, "key "+id) {
		t.Errorf("login --key-stdin: %q", out)
	}
	run(t, asKey, "", "secret", "create", "dbpass", "--namespace", "team-a", "--from-literal", "s3cr3t-cli")
	run(t, asKey, "from stdin\n", "secret", "create", "other", "--namespace", "team-a")
	f := filepath.Join(home, "value")
	if err := os.WriteFile(f, []byte("from a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, asKey, "", "secret", "create", "dbpass", "--namespace", "team-a", "--from-file", f, "--update")
	out, _ = run(t, asKey, "", "secret", "list", "--namespace", "team-a")
	if !strings.Contains(out, "dbpass") || !strings.Contains(out, "other") || strings.Contains(out, "s3cr3t") || strings.Contains(out, "from") {
		t.Errorf("secret list: %q; want the names, never the values", out)
	}
	fails(t, asKey, "", "secret", "list", "--namespace", "team-b")
	fails(t, asKey, "", "namespace", "create", "team-c")
	fails(t, asKey, "", "secret", "create", "x", "--namespace", "team-a")
	run(t, asKey, "", "secret", "rm", "other", "--namespace", "team-a")

	run(t, admin, "", "keys", "rm", id)
	fails(t, asKey, "credentials required", "secret", "list", "--namespace", "team-a")
	fails(t, admin, "", "keys", "rm", id)
	run(t, admin, "", "secret", "rm", "dbpass", "--namespace", "team-a")
	run(t, admin, "", "namespace", "rm", "team-a")
	out, _ = run(t, admin, "", "namespace", "list")
	if strings.Contains(out, "team-a") {
		t.Errorf("namespace list after rm: %q", out)
	}
	for _, verb := range []string{"login", "keys", "namespace", "secret"} {
		if code, _, errOut := gustCLIEnv(t, admin, "", verb, "--help"); code != 0 || !strings.Contains(errOut, "usage: gust "+verb) {
			t.Errorf("gust %s --help: exit %d, %q", verb, code, errOut)
		}
	}
}

// TestGatewayGeneratesAdminPassword runs the gust binary's gateway role
// with no password given: it generates one into its data directory (0600),
// logs the file's path and never the password, keeps it across a restart,
// and the CLI pointed at that data directory finds it, as on the machine
// of `gust up`.
func TestGatewayGeneratesAdminPassword(t *testing.T) {
	ctx := context.Background()
	n := &NATSMain{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Roles: true, Logger: testLogger(t)}
	if err := n.Run(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	home := t.TempDir()
	data := filepath.Join(home, "data")
	pwFile := filepath.Join(data, adminPasswordFile)
	var first string
	for run := 1; run <= 2; run++ {
		logFile := filepath.Join(home, fmt.Sprintf("gateway-%d.log", run))
		base, stop := mustStartGatewayBinary(t, n.Server.UserURL(natsbus.UserGateway), data, logFile)
		pw, err := readPasswordFile(pwFile)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(pwFile); err != nil {
			t.Error(err)
		} else if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %o, want 600", pwFile, st.Mode().Perm())
		}
		if run == 1 {
			first = pw
		} else if pw != first {
			t.Errorf("restart: the password changed")
		}
		env := []string{"GUST_GATEWAY=" + base, "XDG_CONFIG_HOME=" + filepath.Join(home, "xdg"), "HOME=" + home,
			"GUST_DATA=" + data, "GUST_PASSWORD=", "GUST_KEY="}
		if code, out, errOut := gustCLIEnv(t, env, "", "list"); code != 0 {
			t.Errorf("gust list with the generated password: exit %d, %s %s", code, out, errOut)
		}
		env[3] = "GUST_DATA=" + filepath.Join(home, "elsewhere")
		if code, _, errOut := gustCLIEnv(t, env, "", "list"); code != 1 || !strings.Contains(errOut, "credentials required") {
			t.Errorf("gust list without the password: exit %d, %s", code, errOut)
		}
		stop()
		log, _ := os.ReadFile(logFile)
		if strings.Contains(string(log), pw) {
			t.Errorf("the gateway's log shows the admin password:\n%s", log)
		}
		if !strings.Contains(string(log), pwFile) {
			t.Errorf("the gateway's log does not name %s:\n%s", pwFile, log)
		}
	}
}

// mustStartGatewayBinary runs `gust gateway` on a free port with no admin
// password given, waits for /healthz and returns its URL and a stop
// function (SIGTERM, then wait).
func mustStartGatewayBinary(tb testing.TB, natsURL, data, logFile string) (string, func()) {
	tb.Helper()
	f, err := os.Create(logFile)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(MustCLI(tb), "gateway", "--nats", natsURL, "--listen", "127.0.0.1:0", "--data", data)
	cmd.Env = append(os.Environ(), "GUST_ADMIN_PASSWORD=", "GUST_LOG_FORMAT=json")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	tb.Cleanup(stop)
	var base string
	check.For(tb, 20*time.Second, 50*time.Millisecond, func() error {
		select {
		case <-done:
			b, _ := os.ReadFile(logFile)
			tb.Fatalf("gust gateway exited:\n%s", b)
		default:
		}
		b, _ := os.ReadFile(logFile)
		i := strings.Index(string(b), `"gateway listening"`)
		if i < 0 {
			return errors.New("not listening yet")
		}
		var line struct{ Addr string }
		end := strings.IndexByte(string(b[i:]), '\n')
		start := strings.LastIndexByte(string(b[:i]), '\n') + 1
		if end < 0 || json.Unmarshal(b[start:i+end], &line) != nil || line.Addr == "" {
			return fmt.Errorf("no address in the log line")
		}
		base = "http://" + line.Addr
		resp, err := anonClient(tb).Get(base + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return base, stop
}
