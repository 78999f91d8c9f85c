package docker

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/gustfaas/gust"
)

// hungEngine serves the Engine API on a unix socket and never answers:
// a daemon that accepts connections and then hangs. It returns the
// DOCKER_HOST to reach it and a channel that gets each request's path.
func hungEngine(t *testing.T) (string, <-chan string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	asked := make(chan string, 64)
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case asked <- r.URL.Path:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		close(release)
		srv.Close()
	})
	return "unix://" + sock, asked
}

// TestHungEngine: with an Engine that never answers, each Runtime method
// fails with an error saying so once CallTimeout has passed, instead of
// blocking its caller (a cold start) forever.
func TestHungEngine(t *testing.T) {
	const bound = 200 * time.Millisecond
	spec := gust.ContainerSpec{Name: "x", Image: "fn:latest", Port: 8080}
	for name, call := range map[string]func(context.Context, *Runtime) error{
		"Start": func(ctx context.Context, r *Runtime) error { _, err := r.Start(ctx, spec); return err },
		"StartAsUser": func(ctx context.Context, r *Runtime) error {
			s := spec
			s.User = "1000"
			_, err := r.Start(ctx, s)
			return err
		},
		"Open":          func(ctx context.Context, r *Runtime) error { return r.Open(ctx) },
		"EnsureImage":   func(ctx context.Context, r *Runtime) error { return r.EnsureImage(ctx, "fn:latest") },
		"Stop":          func(ctx context.Context, r *Runtime) error { return r.Stop(ctx, "x", 0) },
		"Remove":        func(ctx context.Context, r *Runtime) error { return r.Remove(ctx, "x") },
		"List":          func(ctx context.Context, r *Runtime) error { _, err := r.List(ctx, nil); return err },
		"TailLogs":      func(ctx context.Context, r *Runtime) error { _, err := r.TailLogs(ctx, "x", 1); return err },
		"Attach":        func(ctx context.Context, r *Runtime) error { return r.Attach(ctx, "x") },
		"RemoveNetwork": func(ctx context.Context, r *Runtime) error { return r.RemoveNetwork(ctx) },
	} {
		t.Run(name, func(t *testing.T) {
			host, asked := hungEngine(t)
			t.Setenv("DOCKER_HOST", host)
			r, err := New(Config{CallTimeout: bound, SecretsRoot: filepath.Join(t.TempDir(), "secrets")}, zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			done := make(chan error, 1)
			go func() { done <- call(context.Background(), r) }()
			// A guard against a hang, not a measure: the bound is far below.
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				t.Fatalf("%s still blocked on a hung Engine after a minute", name)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("got %v, want an error wrapping context.DeadlineExceeded", err)
			}
			if want := "the Docker Engine did not answer within " + bound.String(); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v, want it to say %q", err, want)
			}
			select {
			case p := <-asked:
				t.Logf("the hung Engine was asked %s; %s said: %v", p, name, err)
			default:
				t.Errorf("the hung Engine was never asked: the error came from somewhere else")
			}
		})
	}
}
