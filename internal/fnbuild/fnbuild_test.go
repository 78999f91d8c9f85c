package fnbuild_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/gustfaas/gust/internal/docker"
	"github.com/gustfaas/gust/internal/fnbuild"
)

var _ fnbuild.ImageBuilder = (*docker.Runtime)(nil)

// fakeBuilder records the build context it is given.
type fakeBuilder struct {
	files map[string]*tar.Header
	data  map[string][]byte
	tag   string
	calls int
}

func (b *fakeBuilder) BuildImage(_ context.Context, buildContext io.Reader, tag string, progress io.Writer) error {
	b.calls++
	b.tag = tag
	b.files = make(map[string]*tar.Header)
	b.data = make(map[string][]byte)
	tr := tar.NewReader(buildContext)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		b.files[hdr.Name] = hdr
		b.data[hdr.Name] = data
	}
	io.WriteString(progress, "Successfully built fake\n")
	return nil
}

func TestBuild(t *testing.T) {
	t.Run("Context", func(t *testing.T) {
		b := &fakeBuilder{}
		var progress strings.Builder
		if err := fnbuild.Build(context.Background(), b, "testdata/hello", "hello:test", &progress); err != nil {
			t.Fatalf("Build: %v", err)
		}
		if got, want := b.tag, "hello:test"; got != want {
			t.Errorf("tag: got %q, want %q", got, want)
		}
		if got, want := len(b.files), 2; got != want {
			t.Errorf("files in context: got %d, want %d", got, want)
		}
		wantDockerfile := `FROM scratch
COPY fn /fn
ENV PORT=8080
EXPOSE 8080
LABEL gust.managed="true"
ENTRYPOINT ["/fn"]
`
		if got := string(b.data["Dockerfile"]); got != wantDockerfile {
			t.Errorf("Dockerfile: got\n%s\nwant\n%s", got, wantDockerfile)
		}
		hdr := b.files["fn"]
		if hdr == nil {
			t.Fatal("context has no fn")
		}
		if got, want := hdr.Mode, int64(0o755); got != want {
			t.Errorf("fn mode: got %o, want %o", got, want)
		}
		f, err := elf.NewFile(bytes.NewReader(b.data["fn"]))
		if err != nil {
			t.Fatalf("fn is not an ELF binary: %v", err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("fn has an ELF interpreter: want a static binary")
			}
		}
		if f.Section(".symtab") != nil {
			t.Errorf("fn has a symbol table: want it stripped (-s)")
		}
		for _, want := range []string{"compiling testdata/hello\n", "building image hello:test\n", "Successfully built fake\n"} {
			if !strings.Contains(progress.String(), want) {
				t.Errorf("progress: got %q, want it to contain %q", progress.String(), want)
			}
		}
	})

	t.Run("OwnModule", func(t *testing.T) {
		b := &fakeBuilder{}
		if err := fnbuild.Build(context.Background(), b, "testdata/ownmod", "ownmod:test", nil); err != nil {
			t.Fatalf("Build: %v", err)
		}
		if b.files["fn"] == nil {
			t.Errorf("context has no fn")
		}
	})

	t.Run("CompileError", func(t *testing.T) {
		b := &fakeBuilder{}
		err := fnbuild.Build(context.Background(), b, "testdata/broken", "broken:test", nil)
		if err == nil {
			t.Fatal("Build: got nil, want an error")
		}
		for _, want := range []string{"compile testdata/broken", "undefined: undefinedThing"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error: got %q, want it to contain %q", err, want)
			}
		}
		if b.calls != 0 {
			t.Errorf("image builds: got %d, want 0", b.calls)
		}
	})

	t.Run("MissingDir", func(t *testing.T) {
		err := fnbuild.Build(context.Background(), &fakeBuilder{}, "testdata/nope", "nope:test", nil)
		if err == nil || !strings.Contains(err.Error(), "testdata/nope") {
			t.Errorf("got %v, want an error naming testdata/nope", err)
		}
	})
}

// TestBuild_Docker builds testdata/hello through the Docker runtime.
func TestBuild_Docker(t *testing.T) {
	r, err := docker.New(docker.Config{}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.Ping(pctx); err != nil {
		if os.Getenv("GUST_REQUIRE_DOCKER") != "" {
			t.Fatalf("no Docker daemon, and GUST_REQUIRE_DOCKER is set: %v", err)
		}
		t.Skipf("no Docker daemon: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := make([]byte, 4)
	rand.Read(b)
	tag := "gust-test-fnbuild-" + hex.EncodeToString(b) + ":latest"
	t.Cleanup(func() {
		if err := r.RemoveImage(context.Background(), tag); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	var progress strings.Builder
	if err := fnbuild.Build(ctx, r, "testdata/hello", tag, &progress); err != nil {
		t.Fatalf("Build: %v\n%s", err, progress.String())
	}
	if want := "Successfully tagged " + tag; !strings.Contains(progress.String(), want) {
		t.Errorf("progress: got %q, want it to contain %q", progress.String(), want)
	}
	// The image is present, so EnsureImage finds it without a registry.
	if err := r.EnsureImage(ctx, tag); err != nil {
		t.Errorf("EnsureImage of the built image: %v", err)
	}
}
