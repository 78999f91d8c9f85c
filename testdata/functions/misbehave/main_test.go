package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sdk "github.com/gustfaas/gust/functions-sdk"
)

// childEnv makes the test binary act as the function instead of running the
// tests, so exits and signals happen in a child process.
const childEnv = "MISBEHAVE_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "main":
		main()
		os.Exit(0)
	case "crash":
		misbehave(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/?crash=1", nil))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// MustChild returns a command that runs this test binary as the function
// with the given extra environment.
func MustChild(tb testing.TB, ctx context.Context, mode string, env ...string) *exec.Cmd {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=" + mode}, env...)...)
	cmd.Stderr = os.Stderr
	return cmd
}

// exitCode runs cmd and returns its exit status.
func exitCode(tb testing.TB, cmd *exec.Cmd) int {
	tb.Helper()
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		tb.Fatal(err)
	}
	return cmd.ProcessState.ExitCode()
}

func TestOK(t *testing.T) {
	w := httptest.NewRecorder()
	misbehave(w, httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x")))
	if w.Code != http.StatusOK || w.Body.String() != "ok" {
		t.Fatalf("got %d %q, want 200 \"ok\"", w.Code, w.Body.String())
	}
}

func TestStatus(t *testing.T) {
	for _, tt := range []struct {
		query  string
		status int
	}{
		{"status=418", http.StatusTeapot},
		{"status=500", http.StatusInternalServerError},
		{"status=204", http.StatusNoContent},
		{"status=abc", http.StatusBadRequest},
		{"status=99", http.StatusBadRequest},
		{"status=600", http.StatusBadRequest},
		{"status=", http.StatusBadRequest},
	} {
		t.Run(tt.query, func(t *testing.T) {
			w := httptest.NewRecorder()
			misbehave(w, httptest.NewRequest(http.MethodGet, "/?"+tt.query, nil))
			if got, want := w.Code, tt.status; got != want {
				t.Fatalf("status=%d, want %d", got, want)
			}
		})
	}
}

func TestCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if got, want := exitCode(t, MustChild(t, ctx, "crash")), crashStatus; got != want {
		t.Fatalf("exit status=%d, want %d", got, want)
	}
}

func TestUnhealthy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := MustChild(t, ctx, "main", "MISBEHAVE_UNHEALTHY=1", "PORT="+strconv.Itoa(MustFreePort(t)))
	if got, want := exitCode(t, cmd), 1; got != want {
		t.Fatalf("exit status=%d, want %d", got, want)
	}
}

// TestMainServes runs the function in a child process: it becomes ready on
// $PORT and exits 0 on SIGTERM.
func TestMainServes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port := MustFreePort(t)
	cmd := MustChild(t, ctx, "main", "PORT="+strconv.Itoa(port), "MISBEHAVE_UNHEALTHY=0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		resp, err := http.Get(url + sdk.HealthPath)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("health status %d", resp.StatusCode)
		}
		return nil
	})
	resp, err := http.Get(url + "/?status=503")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.StatusCode, http.StatusServiceUnavailable; got != want {
		t.Fatalf("status=%d, want %d", got, want)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("function did not exit after SIGTERM")
	}
}

func TestGarbage(t *testing.T) {
	srv := httptest.NewServer(sdk.Wrap(http.HandlerFunc(misbehave)))
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /?garbage=1 HTTP/1.1\r\nHost: x\r\n\r\n")
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if want := garbage; string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}

	if resp, err := http.Get(srv.URL + "/?garbage=1"); err == nil {
		resp.Body.Close()
		t.Fatalf("http.Get succeeded with status %d, want a malformed-response error", resp.StatusCode)
	}
}

func TestHang(t *testing.T) {
	srv := httptest.NewServer(sdk.Wrap(http.HandlerFunc(misbehave)))
	defer srv.Close()

	t.Run("UntilCallDeadline", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/?hang=1", nil)
		req.Header.Set(sdk.HeaderDeadline, time.Now().Add(200*time.Millisecond).Format(time.RFC3339Nano))
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got an answer %d, want the connection dropped", resp.StatusCode)
		}
		if took := time.Since(start); took < 150*time.Millisecond || took > 10*time.Second {
			t.Fatalf("dropped after %v, want about 200ms", took)
		}
	})

	t.Run("UntilCallerGoesAway", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/?hang=1", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got an answer %d, want a timeout", resp.StatusCode)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err=%v, want context.DeadlineExceeded", err)
		}
	})
}

func TestStream(t *testing.T) {
	srv := httptest.NewServer(sdk.Wrap(http.HandlerFunc(misbehave)))
	defer srv.Close()

	start := time.Now()
	resp, err := http.Get(srv.URL + "/?stream=3")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Fatalf("status=%d, want %d", got, want)
	}
	sc := bufio.NewScanner(resp.Body)
	var lines []string
	var at []time.Duration
	for sc.Scan() {
		lines = append(lines, sc.Text())
		at = append(at, time.Since(start))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(lines, ","), "line 1,line 2,line 3"; got != want {
		t.Fatalf("lines=%q, want %q", got, want)
	}
	if at[0] > at[2]-150*time.Millisecond {
		t.Fatalf("lines arrived at %v, want the first one about 200ms before the last", at)
	}

	for _, q := range []string{"stream=x", "stream=-1", "stream=10001"} {
		w := httptest.NewRecorder()
		misbehave(w, httptest.NewRequest(http.MethodGet, "/?"+q, nil))
		if got, want := w.Code, http.StatusBadRequest; got != want {
			t.Fatalf("%s: status=%d, want %d", q, got, want)
		}
	}
}

// MustFreePort returns a TCP port that was free a moment ago.
func MustFreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// checkFor calls f every interval until it returns nil, and fails the test
// with f's last error if that does not happen within total.
func checkFor(tb testing.TB, total, every time.Duration, f func() error) {
	tb.Helper()
	end := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			tb.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(every)
	}
}

// TestPrintLines: ?print=N&line=L prints N bytes in lines of L, then the
// end line; a bad N or L gets 400.
func TestPrintLines(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/?print=1000&line=100", nil)
	req.Header.Set("X-Call-Id", "c1")
	misbehave(rec, req)
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	// The "call"/"done" lines around it, 10 lines of 100 bytes, the end line.
	if len(lines) != 13 || !strings.HasPrefix(lines[1], "print 1 ") || len(lines[1]) != 99 || lines[11] != "print end c1 lines 11" {
		t.Errorf("printed %d lines: %q", len(lines), out)
	}
	if rec.Code != 200 || rec.Body.String() != "printed 11" {
		t.Errorf("answer %d %q", rec.Code, rec.Body)
	}
	for _, q := range []string{"print=-1", "print=x", "print=10&line=10", "print=10&line=100000"} {
		rec := httptest.NewRecorder()
		misbehave(rec, httptest.NewRequest(http.MethodGet, "/?"+q, nil))
		if rec.Code != 400 {
			t.Errorf("?%s: %d, want 400", q, rec.Code)
		}
	}
}
