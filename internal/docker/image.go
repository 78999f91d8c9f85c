package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/gustfaas/gust"
)

// imageClient is the part of the Docker client that EnsureImage needs.
type imageClient interface {
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImagePull(ctx context.Context, ref string, opts image.PullOptions) (io.ReadCloser, error)
}

// EnsureImage makes ref available locally. An image that is present is used
// as it is; a missing one is pulled, at most PullTimeout long, and
// concurrent calls for one ref share that pull. An image that cannot be
// pulled is an EINVALID *gust.Error naming the field "image".
func (r *Runtime) EnsureImage(ctx context.Context, ref string) error {
	return r.pulls.ensure(ctx, r.ctx, ref)
}

// puller deduplicates image pulls: one pullFuture per ref in flight, as
// Nomad's dockerCoordinator does.
type puller struct {
	client         imageClient
	timeout        time.Duration // of a pull
	inspectTimeout time.Duration // of an inspection; DefaultCallTimeout unless set
	logger         *zap.Logger

	mu      sync.Mutex
	futures map[string]*pullFuture // by ref; guarded by mu
}

// pullFuture is one pull in flight. err is set before done is closed.
type pullFuture struct {
	done    chan struct{}
	err     error
	waiters int // calls that joined; guarded by puller.mu
}

func newPuller(c imageClient, timeout time.Duration, logger *zap.Logger) *puller {
	return &puller{client: c, timeout: timeout, inspectTimeout: DefaultCallTimeout, logger: logger, futures: make(map[string]*pullFuture)}
}

// ensure inspects ref (within inspectTimeout) and, if it is missing, waits
// for the shared pull of it. The pull runs under base, not ctx, so that a
// caller that gives up does not cancel it for the others.
func (p *puller) ensure(ctx, base context.Context, ref string) error {
	err := p.inspect(ctx, ref)
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect image %s: %w", ref, err)
	}
	f := p.join(base, ref)
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return fmt.Errorf("pull image %s: %w", ref, ctx.Err())
	}
}

// inspect looks ref up, within inspectTimeout.
func (p *puller) inspect(ctx context.Context, ref string) (err error) {
	ctx, end := bound(ctx, p.inspectTimeout)
	defer end(&err)
	_, err = p.client.ImageInspect(ctx, ref)
	return err
}

// join returns the pull of ref in flight, starting one if there is none.
func (p *puller) join(base context.Context, ref string) *pullFuture {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.futures[ref]; ok {
		f.waiters++
		return f
	}
	f := &pullFuture{done: make(chan struct{}), waiters: 1}
	p.futures[ref] = f
	go func() {
		ctx, cancel := context.WithTimeout(base, p.timeout)
		defer cancel()
		err := p.pull(ctx, ref)
		p.mu.Lock()
		delete(p.futures, ref)
		p.mu.Unlock()
		f.err = err
		close(f.done)
	}()
	return f
}

// pull pulls ref and reads the progress stream to its end.
func (p *puller) pull(ctx context.Context, ref string) error {
	logger := p.logger.With(zap.String("image", ref))
	logger.Info("pulling image")
	start := time.Now()
	rc, err := p.client.ImagePull(ctx, ref, image.PullOptions{})
	if err == nil {
		err = readStream(rc, func(m streamMessage) {
			if m.Status != "" {
				logger.Debug("pull", zap.String("status", m.Status), zap.String("layer", m.ID))
			}
		})
		rc.Close()
	}
	if err != nil {
		if client.IsErrConnectionFailed(err) {
			return fmt.Errorf("pull image %s: %w", ref, err)
		}
		return gust.Invalidf("image", "image %q is not available locally and could not be pulled: %s", ref, pullFailure(err, logger))
	}
	logger.Info("pulled image", zap.Duration("duration", time.Since(start)))
	return nil
}

// streamMessage is one message of the JSON stream that image pull and
// image build answer with (the fields Gust reads of jsonmessage.JSONMessage).
type streamMessage struct {
	Stream      string `json:"stream"`
	Status      string `json:"status"`
	ID          string `json:"id"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
	Error string `json:"error"`
}

// readStream decodes r to its end, calling fn for each message, and returns
// the first error message the stream carried, or a read error.
func readStream(r io.Reader, fn func(streamMessage)) error {
	var first error
	dec := json.NewDecoder(r)
	for {
		var m streamMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return first
			}
			return errors.Join(first, fmt.Errorf("read stream: %w", err))
		}
		if first == nil {
			switch {
			case m.ErrorDetail != nil && m.ErrorDetail.Message != "":
				first = errors.New(m.ErrorDetail.Message)
			case m.Error != "":
				first = errors.New(m.Error)
			}
		}
		fn(m)
	}
}

// BuildImage builds buildContext, an uncompressed tar holding a Dockerfile,
// into an image tagged tag and labelled gust.managed=true. The builder's
// output goes to progress as it arrives; the first error the build reports
// is returned. The build takes at most BuildTimeout.
func (r *Runtime) BuildImage(ctx context.Context, buildContext io.Reader, tag string, progress io.Writer) (err error) {
	ctx, end := bound(ctx, r.cfg.BuildTimeout)
	defer end(&err)
	if progress == nil {
		progress = io.Discard
	}
	resp, err := r.client.ImageBuild(ctx, buildContext, build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{gust.LabelManaged: "true"},
	})
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	defer resp.Body.Close()
	var werr error
	err = readStream(resp.Body, func(m streamMessage) {
		if m.Stream != "" && werr == nil {
			_, werr = io.WriteString(progress, m.Stream)
		}
	})
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	if werr != nil {
		return fmt.Errorf("build image: write progress: %w", werr)
	}
	r.logger.Info("built image", zap.String("image", tag))
	return nil
}

// RemoveImage removes the image ref and its untagged parents. A missing
// image is not an error.
func (r *Runtime) RemoveImage(ctx context.Context, ref string) (err error) {
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	_, err = r.client.ImageRemove(ctx, ref, image.RemoveOptions{Force: true, PruneChildren: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	return nil
}

// pullFailure says why a pull failed in words a caller may see: one of a
// few fixed sentences (unreachable registry, no such image, access
// refused). The daemon's error, which names addresses of the host's
// network (its DNS server, a proxy) and the registry's internals, goes to
// the log only (issue 9: the Engine's raw text is not echoed to callers).
func pullFailure(err error, logger *zap.Logger) string {
	msg := strings.ToLower(err.Error())
	// The Engine's own words stay in the log: they name hosts, DNS
	// servers and registries' internals. Callers get one of these.
	logger.Warn("pull failed", zap.Error(err))
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(msg, w) {
				return true
			}
		}
		return false
	}
	switch {
	case has("dial tcp", "lookup ", "i/o timeout", "connection refused", "no route to host", "tls handshake"):
		return "its registry could not be reached from this worker"
	case has("manifest unknown", "not found", "does not exist", "no such"):
		return "its registry has no such image or tag"
	case has("denied", "unauthorized", "authentication required", "forbidden"):
		return "its registry refused access to it"
	}
	return "its registry refused it (the worker's log has the reason)"
}
