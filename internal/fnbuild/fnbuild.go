// Package fnbuild turns a folder holding a Go main package into a function
// image: the logic of `gust build DIR --tag IMAGE`.
//
// The binary is compiled on the host with the go command, statically
// (CGO_ENABLED=0), and put alone in a FROM scratch image, so the build needs
// no base image and no registry.
package fnbuild

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/gustfaas/gust"
)

// ImageBuilder is what fnbuild needs from a container engine.
type ImageBuilder interface {
	// BuildImage builds buildContext, an uncompressed tar holding a
	// Dockerfile, into an image tagged tag, writing the engine's output to
	// progress.
	BuildImage(ctx context.Context, buildContext io.Reader, tag string, progress io.Writer) error
}

// Port is the port a function image serves on, set as $PORT in the image.
const Port = 8080

// dockerfile is the recipe of every function image; the context holds it
// and the binary "fn".
var dockerfile = fmt.Sprintf(`FROM scratch
COPY fn /fn
ENV PORT=%d
EXPOSE %d
LABEL %s="true"
ENTRYPOINT ["/fn"]
`, Port, Port, gust.LabelManaged)

// Build compiles the Go main package in dir for linux with CGO_ENABLED=0,
// -trimpath and -ldflags "-s -w", running the go command in dir (so dir may
// be its own module or a folder of the enclosing one), and builds it with b
// into a FROM scratch image tagged tag: the binary at /fn is the
// entrypoint, PORT=8080, port 8080 exposed, labelled gust.managed=true.
// Progress lines go to progress (which may be nil). A compile failure is
// returned with the compiler's output.
func Build(ctx context.Context, b ImageBuilder, dir, tag string, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	tmp, err := os.MkdirTemp("", "gust-build-")
	if err != nil {
		return fmt.Errorf("build %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp)

	bin := filepath.Join(tmp, "fn")
	fmt.Fprintf(progress, "compiling %s\n", dir)
	start := time.Now()
	if err := compile(ctx, dir, bin); err != nil {
		return err
	}
	fmt.Fprintf(progress, "compiled %s in %s\n", dir, time.Since(start).Round(time.Millisecond))

	buildContext, err := tarContext(bin)
	if err != nil {
		return fmt.Errorf("build context: %w", err)
	}
	fmt.Fprintf(progress, "building image %s\n", tag)
	if err := b.BuildImage(ctx, buildContext, tag, progress); err != nil {
		return fmt.Errorf("image %s: %w", tag, err)
	}
	return nil
}

// compile builds the main package in dir into out.
func compile(ctx context.Context, dir, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("compile %s: %w\n%s", dir, err, bytes.TrimSpace(output))
	}
	return nil
}

// tarContext returns a build context holding the Dockerfile and the binary
// bin as "fn", mode 0755.
func tarContext(bin string) (*bytes.Buffer, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"Dockerfile", 0o644, []byte(dockerfile)},
		{"fn", 0o755, data},
	}
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}
