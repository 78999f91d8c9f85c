package gateway

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// The key routes make, list and revoke namespaces' keys. A key's token is
// shown once, in the answer that made it; only its hash is stored, and
// no route shows either again.

// keyEncoding writes key ids and secrets: lower-case base32 without
// padding has no '_' (the token's separator) and is a valid KV key.
var keyEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// keySecretBytes is the entropy of a key's secret (256 bits).
const keySecretBytes = 32

// NewKeyToken returns a new key's id and token: "gk_" + id + "_" +
// secret, each random (crypto/rand), the secret 256 bits.
func NewKeyToken() (id, token string, err error) {
	idb := make([]byte, 10)
	sec := make([]byte, keySecretBytes)
	if _, err := rand.Read(idb); err != nil {
		return "", "", fmt.Errorf("key id: %w", err)
	}
	if _, err := rand.Read(sec); err != nil {
		return "", "", fmt.Errorf("key secret: %w", err)
	}
	id = keyEncoding.EncodeToString(idb)
	return id, gust.KeyTokenPrefix + id + "_" + keyEncoding.EncodeToString(sec), nil
}

// KeyHash is what is stored of a token: its SHA-256, hex (APIKey.Hash).
func KeyHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// keyRequest is the body of POST /system/keys.
type keyRequest struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// keyInfo is a key as the routes show it: never its hash or token.
type keyInfo struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Namespace string    `json:"namespace"`
	Created   time.Time `json:"createdAt"`
}

// newKey is the answer that makes a key: the only one with its token.
type newKey struct {
	keyInfo
	Key string `json:"key"`
}

func infoOf(k gust.APIKey) keyInfo {
	return keyInfo{ID: k.ID, Name: k.Name, Namespace: k.Namespace, Created: k.Created}
}

// createKey answers POST /system/keys: 201 with the key's token, once.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenancyOrNotFound()
	if err != nil {
		return err
	}
	var req keyRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Namespace == "" {
		return gust.Invalidf("namespace", "namespace is required")
	}
	if !gust.ValidName(req.Namespace) {
		return gust.Invalidf("namespace", "namespace %q is not a valid name", req.Namespace)
	}
	if req.Name == "" {
		return gust.Invalidf("name", "name is required")
	}
	if !gust.ValidName(req.Name) {
		return gust.Invalidf("name", "key name %q is not a valid name: lower-case letters, digits and '-', at most 63", req.Name)
	}
	ctx := r.Context()
	if _, _, err := t.Namespaces.Get(ctx, req.Namespace); err != nil {
		if errors.Is(err, gust.ErrNotFound) {
			return gust.Invalidf("namespace", "namespace %s does not exist", req.Namespace)
		}
		return err
	}
	id, token, err := NewKeyToken()
	if err != nil {
		return err
	}
	k := gust.APIKey{ID: id, Name: req.Name, Namespace: req.Namespace, Created: time.Now().UTC(), Hash: KeyHash(token)}
	if _, err := t.Keys.Create(ctx, id, k); err != nil {
		return err // a clash of 80 random bits is not expected: internal
	}
	s.logger.Info("key created", zap.String("key_id", id), zap.String("namespace", k.Namespace), zap.String("name", k.Name))
	writeJSON(w, http.StatusCreated, newKey{keyInfo: infoOf(k), Key: token})
	return nil
}

// listKeys answers GET /system/keys[?namespace=]: ids, names, namespaces
// and creation times, sorted by namespace, name and time.
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenancyOrNotFound()
	if err != nil {
		return err
	}
	ns := r.URL.Query().Get("namespace")
	if ns != "" && !gust.ValidName(ns) {
		return gust.Invalidf("namespace", "namespace %q is not a valid name", ns)
	}
	all, err := t.Keys.List(r.Context(), ">")
	if err != nil {
		return err
	}
	out := make([]keyInfo, 0, len(all))
	for _, k := range all {
		if ns == "" || k.Namespace == ns {
			out = append(out, infoOf(k))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c < 0
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Created.Before(b.Created)
	})
	writeJSON(w, http.StatusOK, out)
	return nil
}

// deleteKey answers DELETE /system/keys/{id}: the key is revoked at once
// on every gateway, which all read it from the same KV bucket.
func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenancyOrNotFound()
	if err != nil {
		return err
	}
	id := chi.URLParam(r, "id")
	if id == "" || strings.ContainsAny(id, ".*> _") {
		return gust.Invalidf("id", "key id %q is not valid", id)
	}
	ctx := r.Context()
	k, _, err := t.Keys.Get(ctx, id)
	if errors.Is(err, gust.ErrNotFound) {
		return gust.Errorf(gust.ENOTFOUND, "key %s not found", id)
	}
	if err != nil {
		return err
	}
	if err := t.Keys.Delete(ctx, id); err != nil {
		return err
	}
	s.logger.Info("key revoked", zap.String("key_id", id), zap.String("namespace", k.Namespace))
	w.WriteHeader(http.StatusNoContent)
	return nil
}
