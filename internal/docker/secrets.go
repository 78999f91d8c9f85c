package docker

// Secrets (gust.ContainerSpec.Secrets) reach a container as files in a
// directory of their own on a host tmpfs, bind-mounted read-only at
// gust.SecretsDir: they stay in memory, and `docker inspect` shows the
// mount's paths, never the values (Docker's own secrets are a Swarm
// feature, and a tmpfs mount cannot be written into before the container
// starts).
//
// The directory is SecretsRoot/<container name>-<random>: 0500 with files
// 0400, owned by the uid the container runs as when that is known (the
// spec's User, gust.DefaultUser for an image that names no user, or the
// image's numeric user), else (a user name only the image resolves) 0711
// with files 0444. SecretsRoot
// itself is 0700, so no other user of the host reaches them. The
// directory is removed with its container (Remove, which the worker's
// leftover cleanup calls too), and Open removes the ones no container
// mounts any more (a worker that died between writing and creating).
//
// The Docker Engine resolves the mount's source on its own host, while
// the runtime writes the files where it runs: a worker in a container
// must have the host's SecretsRoot mounted at the same path (see
// docker-compose.yml: /dev/shm/gust-secrets:/dev/shm/gust-secrets).

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"go.uber.org/zap"

	"github.com/gustfaas/gust"
)

// DefaultSecretsRoot is where secrets' directories go on the host:
// /dev/shm is a tmpfs on every common Linux distribution.
const DefaultSecretsRoot = "/dev/shm/gust-secrets"

// strayAge is how old an unmounted secrets directory must be before Open
// removes it: a younger one may belong to a container another runtime on
// this host is creating right now.
const strayAge = time.Minute

// validSecretName reports whether name can be a file of its own in the
// secrets directory.
func validSecretName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00")
}

func checkSecretNames(secrets map[string][]byte) error {
	for name := range secrets {
		if !validSecretName(name) {
			return gust.Invalidf("secrets", "secret name %q is not a plain file name", name)
		}
	}
	return nil
}

// imageUser returns the user the image ref names (its Config.User), ""
// when it names none.
func (r *Runtime) imageUser(ctx context.Context, ref string) (string, error) {
	img, err := r.client.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("inspect image %s: %w", ref, err)
	}
	if img.Config == nil {
		return "", nil
	}
	return img.Config.User, nil
}

// parseUID returns the uid of a container's user: 0 for "", the number of
// a numeric one ("1000" or "1000:1000"), and -1 for a name that only the
// image's /etc/passwd resolves.
func parseUID(user string) int {
	u, _, _ := strings.Cut(user, ":")
	if u == "" {
		return 0
	}
	n, err := strconv.Atoi(u)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// secretsRoot makes sure root exists, is 0700, and is on a tmpfs.
func secretsRoot(root string) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("secrets directory: %w", err)
	}
	// MkdirAll keeps the mode of a directory that exists (Docker creates
	// a missing bind-mount source 0755).
	if err := os.Chmod(root, 0o700); err != nil {
		return fmt.Errorf("secrets directory: %w", err)
	}
	mem, err := inMemory(root)
	if err != nil {
		return fmt.Errorf("secrets directory: %w", err)
	}
	if !mem {
		return fmt.Errorf("secrets directory %s is not on a tmpfs: secrets would be written to disk", root)
	}
	return nil
}

// writeSecrets writes secrets into a new directory under root for the
// container name, readable by uid (-1: unknown, so by everyone in the
// container), and returns its path.
func writeSecrets(root, name string, uid int, secrets map[string][]byte) (dir string, err error) {
	if err := secretsRoot(root); err != nil {
		return "", err
	}
	dir, err = os.MkdirTemp(root, strings.ReplaceAll(name, "/", "_")+"-")
	if err != nil {
		return "", fmt.Errorf("secrets directory: %w", err)
	}
	defer func() {
		if err != nil {
			removeSecretsDir(dir)
			dir = ""
		}
	}()
	fileMode, dirMode := os.FileMode(0o400), os.FileMode(0o500)
	if uid < 0 {
		fileMode, dirMode = 0o444, 0o711
	}
	owned := uid >= 0 && uid != os.Geteuid()
	for n, v := range secrets {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, v, 0o600); err != nil {
			return "", fmt.Errorf("write secret %s: %w", n, err)
		}
		if owned {
			if err := os.Chown(p, uid, -1); err != nil {
				return "", fmt.Errorf("write secret %s: %w", n, err)
			}
		}
		if err := os.Chmod(p, fileMode); err != nil {
			return "", fmt.Errorf("write secret %s: %w", n, err)
		}
	}
	if owned {
		if err := os.Chown(dir, uid, -1); err != nil {
			return "", fmt.Errorf("secrets directory: %w", err)
		}
	}
	if err := os.Chmod(dir, dirMode); err != nil {
		return "", fmt.Errorf("secrets directory: %w", err)
	}
	return dir, nil
}

// removeSecretsDir removes a directory writeSecrets made.
func removeSecretsDir(dir string) error {
	// A 0500 directory: its owner cannot unlink in it until it is
	// writable again (root can anyway).
	_ = os.Chmod(dir, 0o700)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove secrets directory: %w", err)
	}
	return nil
}

// secretsMount is the read-only bind mount of dir at gust.SecretsDir.
func secretsMount(dir string) mount.Mount {
	return mount.Mount{Type: mount.TypeBind, Source: dir, Target: gust.SecretsDir, ReadOnly: true}
}

// ownSecretsDir returns the secrets directory of this runtime among a
// container's mounts, "" if it has none.
func (r *Runtime) ownSecretsDir(mounts []container.MountPoint) string {
	for _, m := range mounts {
		if m.Destination == gust.SecretsDir && filepath.Dir(m.Source) == r.cfg.SecretsRoot {
			return m.Source
		}
	}
	return ""
}

// secretsDirOf returns the secrets directory container id mounts ("" for
// none, or an unknown id).
func (r *Runtime) secretsDirOf(ctx context.Context, id string) (string, error) {
	c, err := r.client.ContainerInspect(ctx, id)
	if err != nil {
		return "", err
	}
	return r.ownSecretsDir(c.Mounts), nil
}

// removeStraySecrets removes the secrets directories that no Gust
// container mounts and that are older than strayAge.
func (r *Runtime) removeStraySecrets(ctx context.Context) error {
	entries, err := os.ReadDir(r.cfg.SecretsRoot)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read secrets directory: %w", err)
	}
	if len(entries) == 0 {
		return nil
	}
	cs, err := r.client.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", gust.LabelManaged+"=true"))})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	used := map[string]bool{}
	for _, c := range cs {
		if d := r.ownSecretsDir(c.Mounts); d != "" {
			used[d] = true
		}
	}
	var errs []error
	for _, e := range entries {
		dir := filepath.Join(r.cfg.SecretsRoot, e.Name())
		info, err := e.Info()
		if err != nil || !e.IsDir() || used[dir] || time.Since(info.ModTime()) < strayAge {
			continue
		}
		r.logger.Info("removing secrets directory of a container that is gone", zap.String("dir", dir))
		errs = append(errs, removeSecretsDir(dir))
	}
	return errors.Join(errs...)
}
