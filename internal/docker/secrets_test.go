package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/gustfaas/gust"
)

func TestParseUID(t *testing.T) {
	for user, want := range map[string]int{
		"": 0, "0": 0, "1000": 1000, "1000:1000": 1000, "65534:nogroup": 65534,
		"app": -1, "app:app": -1, "-1": -1, ":100": 0,
	} {
		if got := parseUID(user); got != want {
			t.Errorf("parseUID(%q): got %d, want %d", user, got, want)
		}
	}
}

// mustTmpfsRoot returns a fresh secrets root on /dev/shm, skipping where
// that is not a tmpfs.
func mustTmpfsRoot(t *testing.T) string {
	t.Helper()
	if ok, err := inMemory("/dev/shm"); err != nil || !ok {
		t.Skipf("/dev/shm is not a tmpfs here (%v)", err)
	}
	root := filepath.Join("/dev/shm", "gust-test-"+randomID())
	t.Cleanup(func() {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = os.Chmod(p, 0o700)
			}
			return nil
		})
		_ = os.RemoveAll(root)
	})
	return root
}

func mode(t *testing.T, path string) (fs.FileMode, int) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Mode().Perm(), int(info.Sys().(*syscall.Stat_t).Uid)
}

// TestWriteSecrets: files 0400 in a 0500 directory owned by the
// container's uid, or 0444 in 0711 when the uid is not known; the root is
// 0700; a root that is not on a tmpfs is refused.
func TestWriteSecrets(t *testing.T) {
	root := mustTmpfsRoot(t)
	secrets := map[string][]byte{"a": []byte("alpha"), "b": []byte("beta\n")}
	cases := []struct {
		uid               int
		fileMode, dirMode fs.FileMode
		owner             int
	}{
		{os.Geteuid(), 0o400, 0o500, os.Geteuid()},
		{-1, 0o444, 0o711, os.Geteuid()},
	}
	if os.Geteuid() == 0 {
		cases = append(cases, struct {
			uid               int
			fileMode, dirMode fs.FileMode
			owner             int
		}{4321, 0o400, 0o500, 4321})
	}
	for _, c := range cases {
		dir, err := writeSecrets(root, "gust-ns-fn-1", c.uid, secrets)
		if err != nil {
			t.Fatalf("uid %d: %v", c.uid, err)
		}
		if got, _ := mode(t, root); got != 0o700 {
			t.Errorf("root mode: got %v, want 0700", got)
		}
		if filepath.Dir(dir) != root || !strings.HasPrefix(filepath.Base(dir), "gust-ns-fn-1-") {
			t.Errorf("uid %d: directory %s, want one named after the container under %s", c.uid, dir, root)
		}
		if m, owner := mode(t, dir); m != c.dirMode || owner != c.owner {
			t.Errorf("uid %d: directory mode %v owner %d, want %v %d", c.uid, m, owner, c.dirMode, c.owner)
		}
		for name, want := range secrets {
			p := filepath.Join(dir, name)
			if m, owner := mode(t, p); m != c.fileMode || owner != c.owner {
				t.Errorf("uid %d: %s mode %v owner %d, want %v %d", c.uid, name, m, owner, c.fileMode, c.owner)
			}
			if got, err := os.ReadFile(p); err != nil || string(got) != string(want) {
				t.Errorf("uid %d: %s: got %q, %v, want %q", c.uid, name, got, err, want)
			}
		}
		if err := removeSecretsDir(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("uid %d: after removeSecretsDir: %v, want it gone", c.uid, err)
		}
	}

	t.Run("NotTmpfs", func(t *testing.T) {
		disk := t.TempDir()
		if ok, _ := inMemory(disk); ok {
			t.Skip("the test's temporary directory is on a tmpfs")
		}
		_, err := writeSecrets(filepath.Join(disk, "secrets"), "c", 0, secrets)
		if err == nil || !strings.Contains(err.Error(), "not on a tmpfs") {
			t.Errorf("got %v, want a refusal to write secrets to disk", err)
		}
		if entries, _ := os.ReadDir(filepath.Join(disk, "secrets")); len(entries) != 0 {
			t.Errorf("left %d entries on disk", len(entries))
		}
	})
}

// TestSecrets: a container's secrets are in a read-only bind mount of a
// directory of the runtime's root, which goes with the container; Open
// removes old directories no container mounts, and keeps the others.
func TestSecrets(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := testSpec(t)
	spec.Secrets = map[string][]byte{"dbpass": []byte("s3cr3t-docker-" + runID)}
	inst, err := r.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	c, err := r.client.ContainerInspect(ctx, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	var dir string
	for _, m := range c.Mounts {
		if m.Destination == gust.SecretsDir {
			dir = m.Source
			if m.RW {
				t.Errorf("mount at %s is writable", gust.SecretsDir)
			}
		}
	}
	if filepath.Dir(dir) != r.cfg.SecretsRoot {
		t.Fatalf("mounts: got %+v, want one of %s at %s", c.Mounts, r.cfg.SecretsRoot, gust.SecretsDir)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "dbpass")); err != nil || string(got) != string(spec.Secrets["dbpass"]) {
		t.Errorf("host file: got %q, %v", got, err)
	}
	// Owned by the user the container runs as (the image names none).
	if m, owner := mode(t, filepath.Join(dir, "dbpass")); m != 0o400 || owner != 65534 {
		t.Errorf("host file: mode %v owner %d, want 0400 65534", m, owner)
	}
	MustHealthy(t, inst)
	if code, body, err := get("http://" + inst.Addr + "/?file=" + gust.SecretsDir + "/dbpass"); err != nil || code != 200 || body != string(spec.Secrets["dbpass"]) {
		t.Errorf("read as 65534: got %d %q, %v", code, body, err)
	}

	stray := filepath.Join(r.cfg.SecretsRoot, "gust-gone-"+randomID())
	fresh := filepath.Join(r.cfg.SecretsRoot, "gust-starting-"+randomID())
	for _, d := range []string{stray, fresh} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * strayAge)
	for _, d := range []string{stray, dir} {
		if err := os.Chtimes(d, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Open(ctx); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, err := os.Stat(stray); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old directory no container mounts: %v, want it removed", err)
	}
	for _, d := range []string{fresh, dir} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("directory %s: %v, want it kept (young, or mounted)", d, err)
		}
	}
	_ = os.Remove(fresh)

	if err := r.Remove(ctx, inst.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("secrets directory after Remove: %v, want it gone", err)
	}
}

// TestSecrets_FailedStart: the secrets of a container that could not be
// created, or not started, are removed.
func TestSecrets_FailedStart(t *testing.T) {
	r := MustRuntime(t)
	r.cfg.SecretsRoot = filepath.Join(testSecretsRoot, "failed-start") // a root of its own to count in
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := testSpec(t)
	spec.Secrets = map[string][]byte{"a": []byte("x")}
	inst, err := r.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, inst.ID)
	again := spec // name conflict: the create fails
	again.Labels = map[string]string{labelTest: runID, gust.LabelInstance: randomID()}
	if _, err := r.Start(ctx, again); !errors.Is(err, gust.ErrConflict) {
		t.Fatalf("second Start with one name: got %v, want gust.ErrConflict", err)
	}
	// The network is gone behind the runtime's back: the create
	// succeeds, the start fails.
	if err := r.Remove(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	r.removeIdleHolders(ctx, true) // they keep the network in use
	if err := r.client.NetworkRemove(ctx, r.Network()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(ctx, testSpecWith(t, spec.Secrets)); err == nil {
		t.Fatal("Start without the network: got nil, want an error")
	}
	if entries, err := os.ReadDir(r.cfg.SecretsRoot); err != nil || len(entries) != 0 {
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("secrets directories left: %q, %v, want none", names, err)
	}
}

func testSpecWith(t *testing.T, secrets map[string][]byte) gust.ContainerSpec {
	spec := testSpec(t)
	spec.Secrets = secrets
	return spec
}

// TestSecrets_ImageUser: a function whose image runs as a non-root uid
// reads its secrets (files 0400 that uid owns); the image of the other
// tests names no user, so they run as gust.DefaultUser.
func TestSecrets_ImageUser(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ref := "gust-test-" + runID + "-uid:latest"
	var buildContext bytes.Buffer
	tw := tar.NewWriter(&buildContext)
	dockerfile := []byte("FROM " + MustImage(t) + "\nUSER 4321:4321\n")
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(dockerfile)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	if err := r.BuildImage(ctx, &buildContext, ref, &progress); err != nil {
		t.Fatalf("build %s: %v\n%s", ref, err, progress.String())
	}
	t.Cleanup(func() {
		if _, err := r.client.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true}); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	spec := testSpec(t)
	spec.Image = ref
	spec.Secrets = map[string][]byte{"token": []byte("for-uid-4321")}
	inst, err := r.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer r.Remove(ctx, inst.ID)
	MustHealthy(t, inst)
	code, body, err := get("http://" + inst.Addr + "/?file=" + gust.SecretsDir + "/token")
	if err != nil || code != 200 || body != "for-uid-4321" {
		t.Errorf("read as uid 4321: got %d %q, %v, want 200 \"for-uid-4321\"", code, body, err)
	}
	dir, err := r.secretsDirOf(ctx, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	if m, owner := mode(t, filepath.Join(dir, "token")); m != 0o400 || owner != 4321 {
		t.Errorf("file: mode %v owner %d, want 0400 4321", m, owner)
	}
}
