package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// gustIn runs the gust binary in dir with env added and returns its exit
// code and combined output.
func gustIn(tb testing.TB, dir string, env []string, args ...string) (int, string) {
	tb.Helper()
	cmd := exec.Command(MustCLI(tb), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	} else if err != nil {
		tb.Fatal(err)
	}
	return 0, out.String()
}

// TestNewBuildDeploy scaffolds a function of each template into one stack
// file, builds them with gust build -f and deploys them with gust deploy
// -f against a real gust up, then calls each (issue 12, point 3).
func TestNewBuildDeploy(t *testing.T) {
	// With an admin password, as gust up has: the CLI sends it from
	// $GUST_PASSWORD, and the functions answer anonymous calls.
	var password string
	m := MustRunUp(t, "", func(m *UpMain) {
		var err error
		if password, err = adminPassword("", "", m.DataDir, zap.NewNop()); err != nil {
			t.Fatal(err)
		}
		m.Gateway.AdminPassword = password
	})
	dir := t.TempDir()
	// The stack's gateway is the one used: no $GUST_GATEWAY.
	env := []string{"GUST_GATEWAY=", "TERM=dumb", "GUST_PASSWORD=" + password, "GUST_KEY="}
	langs := templateLangs()
	for _, lang := range langs {
		name := "tmpl-" + lang
		if code, out := gustIn(t, dir, env, "new", name, "--lang", lang, "--prefix", "gust-test", "--gateway", gw(m)); code != 0 {
			t.Fatalf("gust new %s: exit %d\n%s", name, code, out)
		}
	}
	t.Cleanup(func() {
		rt, err := openRuntimeForBuild(context.Background())
		if err != nil {
			return
		}
		defer rt.Close()
		for _, lang := range langs {
			rt.RemoveImage(context.Background(), "gust-test/tmpl-"+lang+":latest")
		}
	})
	code, out := gustIn(t, dir, env, "build", "-f", "stack.yml")
	if code != 0 {
		t.Fatalf("gust build -f: exit %d\n%s", code, out)
	}
	// Not a terminal: plain lines naming the function, compile and layers.
	for _, want := range []string{"tmpl-go: compiling", "tmpl-http: Step 1/", "built gust-test/tmpl-http:latest"} {
		if !strings.Contains(out, want) {
			t.Errorf("gust build -f: no %q in\n%s", want, out)
		}
	}
	if code, out := gustIn(t, dir, env, "deploy", "-f", "stack.yml"); code != 0 {
		t.Fatalf("gust deploy -f: exit %d\n%s", code, out)
	}
	for _, lang := range langs {
		st, hdr, body := call(t, "POST", gw(m)+"/function/tmpl-"+lang, "you")
		want := "Hello, you! (call " + hdr.Get("X-Call-Id") + ")\n"
		if st != 200 || body != want {
			t.Errorf("%s: %d %q, want 200 %q", lang, st, body, want)
		}
	}
	// --filter deploys one function; a name the stack lacks is an error.
	if code, out := gustIn(t, dir, env, "deploy", "-f", "stack.yml", "--filter", "tmpl-go"); code != 0 || strings.Contains(out, "tmpl-http") {
		t.Errorf("deploy --filter tmpl-go: exit %d\n%s", code, out)
	}
	if code, out := gustIn(t, dir, env, "build", "-f", "stack.yml", "--filter", "nosuch"); code != 1 || !strings.Contains(out, `no function "nosuch"`) {
		t.Errorf("build --filter nosuch: exit %d\n%s", code, out)
	}
	for _, lang := range langs {
		if code, out := gustIn(t, dir, append(env, "GUST_GATEWAY="+gw(m)), "rm", "tmpl-"+lang); code != 0 {
			t.Errorf("rm: %d %s", code, out)
		}
	}
	waitContainers(t, m, "tmpl-go", 0, 20*time.Second)
	waitContainers(t, m, "tmpl-http", 0, 20*time.Second)
}
