package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

var (
	cliOnce sync.Once
	cliBin  string
	cliErr  error
)

// MustCLI builds the gust binary once per test binary.
func MustCLI(tb testing.TB) string {
	tb.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gust-cli-")
		if err != nil {
			cliErr = err
			return
		}
		cliBin = filepath.Join(dir, "gust")
		out, err := exec.Command("go", "build", "-o", cliBin, ".").CombinedOutput()
		if err != nil {
			cliErr = err
			cliBin = string(out)
		}
	})
	if cliErr != nil {
		tb.Fatalf("build gust: %v\n%s", cliErr, cliBin)
	}
	return cliBin
}

// gustCLI runs the gust binary against gateway and returns its exit code,
// stdout and stderr.
func gustCLI(tb testing.TB, gateway, stdin string, args ...string) (int, string, string) {
	tb.Helper()
	return gustCLIEnv(tb, []string{"GUST_GATEWAY=" + gateway}, stdin, args...)
}

// gustCLIEnv is gustCLI with env added to the test's environment.
func gustCLIEnv(tb testing.TB, env []string, stdin string, args ...string) (int, string, string) {
	tb.Helper()
	cmd := exec.Command(MustCLI(tb), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = "../.."
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		tb.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func TestCLI(t *testing.T) {
	m := MustRunUp(t, "")
	g := gw(m)
	tag := "gust-test/cli-hello:e2e"

	steps := []struct {
		name     string
		stdin    string
		args     []string
		code     int
		contains string // in stdout, or in stderr for a non-zero code
	}{
		{"Help", "", []string{"help"}, 0, "gust <command>"},
		{"UnknownCommand", "", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"Build", "", []string{"build", "examples/hello", "--tag", tag}, 0, "built " + tag},
		{"BuildNoTag", "", []string{"build", "examples/hello"}, 2, "--tag is required"},
		{"Deploy", "", []string{"deploy", "--name", "clihello", "--image", tag, "--label", "gust.idle-timeout=30s", "--memory", "64Mi"}, 0, "deployed clihello"},
		{"DeployBadLabel", "", []string{"deploy", "--name", "x", "--image", tag, "--label", "gust.concurrency=none"}, 1, "field labels.gust.concurrency"},
		{"InvokeData", "", []string{"invoke", "clihello", "--data", "CLI"}, 0, "Hello, CLI!"},
		{"InvokeStdin", "from stdin", []string{"invoke", "clihello"}, 0, "Hello, from stdin!"},
		{"InvokeUnknown", "", []string{"invoke", "nosuch"}, 1, "not found"},
		{"List", "", []string{"list"}, 0, "clihello"},
		{"Describe", "", []string{"describe", "clihello"}, 0, `"memory": "64Mi"`},
		{"Scale", "", []string{"scale", "clihello", "2"}, 0, "to 2 instances"},
		{"ScaleBadN", "", []string{"scale", "clihello", "two"}, 2, "whole number"},
		{"Remove", "", []string{"rm", "clihello"}, 0, "removed clihello"},
		{"RemoveAgain", "", []string{"rm", "clihello"}, 1, "not found"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			code, out, errOut := gustCLI(t, g, s.stdin, s.args...)
			where := out
			if s.code != 0 {
				where = errOut
			}
			if code != s.code || !strings.Contains(where, s.contains) {
				t.Errorf("gust %s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(s.args, " "), code, out, errOut, s.code, s.contains)
			}
			if s.name == "Scale" {
				waitContainers(t, m, "clihello", 2, 10*time.Second)
			}
		})
	}
	// list --json is the API's status list.
	_, out, _ := gustCLI(t, g, "", "list", "--json")
	var fns []gust.FunctionStatus
	if err := json.Unmarshal([]byte(out), &fns); err != nil {
		t.Errorf("list --json: %v in %q", err, out)
	}
}
