package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"go.uber.org/zap/zaptest"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
)

// fakeImageClient is an imageClient made of functions.
type fakeImageClient struct {
	InspectFn func(ctx context.Context, ref string) (image.InspectResponse, error)
	PullFn    func(ctx context.Context, ref string) (io.ReadCloser, error)
}

func (f *fakeImageClient) ImageInspect(ctx context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	return f.InspectFn(ctx, ref)
}

func (f *fakeImageClient) ImagePull(ctx context.Context, ref string, _ image.PullOptions) (io.ReadCloser, error) {
	return f.PullFn(ctx, ref)
}

func missing(_ context.Context, ref string) (image.InspectResponse, error) {
	return image.InspectResponse{}, fmt.Errorf("no such image: %s: %w", ref, cerrdefs.ErrNotFound)
}

const pullOK = `{"status":"Pulling from library/fn","id":"latest"}
{"status":"Digest: sha256:0000"}
{"status":"Status: Downloaded newer image for fn:latest"}
`

// waiters returns how many calls wait on the pull of ref.
func (p *puller) waitersOf(ref string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.futures[ref]; ok {
		return f.waiters
	}
	return 0
}

func TestPuller(t *testing.T) {
	t.Run("SharesOnePull", func(t *testing.T) {
		var pulls atomic.Int64
		release := make(chan struct{})
		fake := &fakeImageClient{
			InspectFn: missing,
			PullFn: func(ctx context.Context, ref string) (io.ReadCloser, error) {
				pulls.Add(1)
				<-release
				return io.NopCloser(strings.NewReader(pullOK)), nil
			},
		}
		p := newPuller(fake, time.Minute, zaptest.NewLogger(t))
		const n = 8
		errs := make(chan error, n)
		for range n {
			go func() { errs <- p.ensure(context.Background(), context.Background(), "fn:latest") }()
		}
		check.For(t, 5*time.Second, time.Millisecond, func() error {
			if got := p.waitersOf("fn:latest"); got != n {
				return fmt.Errorf("waiters: got %d, want %d", got, n)
			}
			return nil
		})
		close(release)
		for range n {
			if err := <-errs; err != nil {
				t.Errorf("ensure: got %v, want nil", err)
			}
		}
		if got := pulls.Load(); got != 1 {
			t.Errorf("pulls: got %d, want 1", got)
		}
		if got := p.waitersOf("fn:latest"); got != 0 {
			t.Errorf("pull still in flight after it ended: %d waiters", got)
		}
	})

	t.Run("Present", func(t *testing.T) {
		fake := &fakeImageClient{
			InspectFn: func(context.Context, string) (image.InspectResponse, error) {
				return image.InspectResponse{ID: "sha256:1"}, nil
			},
			PullFn: func(context.Context, string) (io.ReadCloser, error) {
				t.Error("pulled an image that is present")
				return nil, errors.New("unexpected pull")
			},
		}
		p := newPuller(fake, time.Minute, zaptest.NewLogger(t))
		if err := p.ensure(context.Background(), context.Background(), "fn:latest"); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})

	t.Run("StreamError", func(t *testing.T) {
		fake := &fakeImageClient{
			InspectFn: missing,
			PullFn: func(context.Context, string) (io.ReadCloser, error) {
				return io.NopCloser(strings.NewReader(`{"status":"Pulling fs layer","id":"abc"}
{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}
`)), nil
			},
		}
		p := newPuller(fake, time.Minute, zaptest.NewLogger(t))
		err := p.ensure(context.Background(), context.Background(), "fn:latest")
		if got, want := gust.ErrorCode(err), gust.EINVALID; got != want {
			t.Fatalf("code: got %q (%v), want %q", got, err, want)
		}
		if got, want := gust.ErrorMessage(err), `image "fn:latest" is not available locally and could not be pulled: its registry has no such image or tag`; got != want {
			t.Errorf("message: got %q, want %q", got, want)
		}
	})

	t.Run("RegistryUnreachable", func(t *testing.T) {
		fake := &fakeImageClient{
			InspectFn: missing,
			PullFn: func(context.Context, string) (io.ReadCloser, error) {
				return nil, errors.New(`Error response from daemon: Get "https://registry.example/v2/": dial tcp: lookup registry.example on 10.255.255.53:53: no such host`)
			},
		}
		p := newPuller(fake, time.Minute, zaptest.NewLogger(t))
		err := p.ensure(context.Background(), context.Background(), "fn:latest")
		if got, want := gust.ErrorMessage(err), `image "fn:latest" is not available locally and could not be pulled: its registry could not be reached from this worker`; got != want {
			t.Errorf("message: got %q, want %q (the daemon's error names the host's DNS server)", got, want)
		}
	})

	t.Run("InspectError", func(t *testing.T) {
		fake := &fakeImageClient{
			InspectFn: func(context.Context, string) (image.InspectResponse, error) {
				return image.InspectResponse{}, errors.New("daemon on fire")
			},
		}
		p := newPuller(fake, time.Minute, zaptest.NewLogger(t))
		err := p.ensure(context.Background(), context.Background(), "fn:latest")
		if got, want := gust.ErrorCode(err), gust.EINTERNAL; got != want {
			t.Errorf("code: got %q (%v), want %q", got, err, want)
		}
	})

	t.Run("Timeout", func(t *testing.T) {
		fake := &fakeImageClient{
			InspectFn: missing,
			PullFn: func(ctx context.Context, _ string) (io.ReadCloser, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
		}
		p := newPuller(fake, 50*time.Millisecond, zaptest.NewLogger(t))
		err := p.ensure(context.Background(), context.Background(), "fn:latest")
		if got, want := gust.ErrorCode(err), gust.EINVALID; got != want {
			t.Errorf("code: got %q (%v), want %q", got, err, want)
		}
	})

	t.Run("CallerGivesUp", func(t *testing.T) {
		var pulls atomic.Int64
		release := make(chan struct{})
		fake := &fakeImageClient{
			InspectFn: missing,
			PullFn: func(ctx context.Context, _ string) (io.ReadCloser, error) {
				pulls.Add(1)
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return io.NopCloser(strings.NewReader(pullOK)), nil
			},
		}
		p := newPuller(fake, time.Minute, zaptest.NewLogger(t))
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var first, second error
		wg.Go(func() { first = p.ensure(ctx, context.Background(), "fn:latest") })
		wg.Go(func() { second = p.ensure(context.Background(), context.Background(), "fn:latest") })
		check.For(t, 5*time.Second, time.Millisecond, func() error {
			if got := p.waitersOf("fn:latest"); got != 2 {
				return fmt.Errorf("waiters: got %d, want 2", got)
			}
			return nil
		})
		cancel()
		close(release)
		wg.Wait()
		if !errors.Is(first, context.Canceled) {
			t.Errorf("caller that gave up: got %v, want context.Canceled", first)
		}
		if second != nil {
			t.Errorf("caller that waited: got %v, want nil", second)
		}
		if got := pulls.Load(); got != 1 {
			t.Errorf("pulls: got %d, want 1", got)
		}
	})
}
