package mock

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/gustfaas/gust"
)

// The fake keeps a container's secrets as files in a temporary directory
// of its own, which stands for what the container would see at
// gust.SecretsDir; the handler reads them with Secrets or through
// DefaultHandler's ?file= query. The directory is on the test machine's
// temporary file system, not necessarily in memory: it holds test values
// only.

// validSecretName reports whether name can be a file of its own in the
// secrets directory, as internal/docker requires.
func validSecretName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00")
}

// writeSecrets writes secrets into a new temporary directory, files 0400
// in a 0500 directory, and returns its path ("" for no secrets).
func writeSecrets(secrets map[string][]byte) (string, error) {
	if len(secrets) == 0 {
		return "", nil
	}
	dir, err := os.MkdirTemp("", "gust-mock-secrets-")
	if err != nil {
		return "", fmt.Errorf("write secrets: %w", err)
	}
	for name, value := range secrets {
		if err := os.WriteFile(filepath.Join(dir, name), value, 0o400); err != nil {
			removeSecrets(dir)
			return "", fmt.Errorf("write secrets: %w", err)
		}
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		removeSecrets(dir)
		return "", fmt.Errorf("write secrets: %w", err)
	}
	return dir, nil
}

// removeSecrets removes a directory writeSecrets made; "" is none.
func removeSecrets(dir string) {
	if dir == "" {
		return
	}
	_ = os.Chmod(dir, 0o700) // a non-root owner cannot unlink in a 0500 directory
	_ = os.RemoveAll(dir)
}

// errReadOnly is what a write into the secrets directory fails with: the
// runtime mounts it read-only.
var errReadOnly = errors.New("read-only file system")

// secretPath maps a path inside the container to the file of the fake's
// directory that holds it; ok is false for a path outside gust.SecretsDir
// or a container without secrets.
func (r *Runtime) secretPath(id, path string) (host string, ok bool) {
	name, found := strings.CutPrefix(path, gust.SecretsDir+"/")
	if !found || !validSecretName(name) {
		return "", false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil || c.secrets == "" {
		return "", false
	}
	return filepath.Join(c.secrets, name), true
}

// Secrets returns the secret files of the fake container serving req, by
// name, as read from its directory now (nil outside a fake container or
// for one without secrets).
func Secrets(req *http.Request) map[string][]byte {
	rt, id := RuntimeOf(req), ContainerID(req)
	if rt == nil {
		return nil
	}
	rt.mu.Lock()
	var dir string
	if c := rt.containers[id]; c != nil {
		dir = c.secrets
	}
	rt.mu.Unlock()
	if dir == "" {
		return nil
	}
	out := map[string][]byte{}
	_ = fs.WalkDir(os.DirFS(dir), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if b, err := os.ReadFile(filepath.Join(dir, path)); err == nil {
			out[path] = b
		}
		return nil
	})
	return out
}

// readFile is what the container would read at path: only files of its
// secrets directory exist in the fake.
func (r *Runtime) readFile(id, path string) ([]byte, error) {
	host, ok := r.secretPath(id, path)
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	b, err := os.ReadFile(host)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: errors.Unwrap(err)}
	}
	return b, nil
}

// writeFile is a write at path inside a fake container: the secrets
// directory is read-only, and nothing else is kept.
func writeFile(path string) error {
	if strings.HasPrefix(path, gust.SecretsDir+"/") || path == gust.SecretsDir {
		return &fs.PathError{Op: "open", Path: path, Err: errReadOnly}
	}
	return nil
}

// Mount is a mount the fake reports for a container, as Docker's inspect
// lists them.
type Mount struct {
	Source      string `json:"Source"`
	Destination string `json:"Destination"`
	RW          bool   `json:"RW"`
}

// Inspect returns what the fake reports about container id, as JSON (like
// `docker inspect`): its instance, image, environment and mounts; the
// secrets' values are in none of them.
func (r *Runtime) Inspect(id string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil {
		return "", fmt.Errorf("inspect container: %w: %s", gust.ErrInstanceNotFound, id)
	}
	v := struct {
		Instance gust.Instance
		Image    string
		Env      []string
		Mounts   []Mount
	}{Instance: c.inst, Image: c.image, Env: c.env}
	if c.secrets != "" {
		v.Mounts = []Mount{{Source: c.secrets, Destination: gust.SecretsDir}}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("inspect container: %w", err)
	}
	return string(b), nil
}
