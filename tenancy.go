package gust

import (
	"context"
	"strings"
	"time"
)

// Namespace is a tenant: its functions, secrets, keys, async calls, dead
// letters and bills are its own. The shape is OpenFaaS's
// (name, labels, annotations), plus a quota.
type Namespace struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Quota       *Quota            `json:"quota,omitempty"`
	Created     time.Time         `json:"createdAt"`
}

// Quota bounds what one namespace may hold and run at once; a zero field
// is no bound.
type Quota struct {
	// Instances bounds the instances of all the namespace's functions:
	// the sum of their warm minimums at deploy and scale time.
	Instances int `json:"instances,omitempty"`
	// Concurrency bounds the namespace's calls in flight: a sync call past
	// it answers 429 at once; async calls and events wait in their queue.
	Concurrency int `json:"concurrency,omitempty"`
	// Memory bounds the memory of the namespace's instances (a quantity
	// such as "2Gi"), checked like Instances.
	Memory string `json:"memory,omitempty"`
}

// APIKey is a namespace's key as stored: never its secret, only a hash
// of it. A key is sent as "Authorization: Bearer " + the token that
// NewKeyToken made; the token names the key's id, so a gateway finds the
// record without scanning, then compares hashes in constant time.
type APIKey struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Namespace string    `json:"namespace"`
	Created   time.Time `json:"createdAt"`
	// Hash is the SHA-256 of the token, hex; never shown by any route.
	Hash string `json:"hash,omitempty"`
}

// KeyTokenPrefix starts every key token: "gk_" + id + "_" + secret.
const KeyTokenPrefix = "gk_"

// KeyIDOfToken returns the key id a token names, or "" for a string that
// is not a key token.
func KeyIDOfToken(token string) string {
	rest, ok := strings.CutPrefix(token, KeyTokenPrefix)
	if !ok {
		return ""
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || id == "" || secret == "" {
		return ""
	}
	return id
}

// SecretStore keeps the namespaces' secrets, encrypted at rest. Values
// never leave it through any listing; only the worker that mounts them
// into a function reads them.
type SecretStore interface {
	// Put creates or replaces a secret. create true fails with
	// ErrConflict when it exists; false (an update) with ErrNotFound
	// when it does not.
	Put(ctx context.Context, namespace, name string, value []byte, create bool) error
	// Get returns a secret's value, or ErrNotFound.
	Get(ctx context.Context, namespace, name string) ([]byte, error)
	// List returns the names of a namespace's secrets, sorted.
	List(ctx context.Context, namespace string) ([]string, error)
	// Delete removes a secret, or returns ErrNotFound.
	Delete(ctx context.Context, namespace, name string) error
}

// Tenancy is the shared state of access control: namespaces, their keys
// (keyed by id) and their secrets. It lives in JetStream like State, so
// every gateway sees a revocation at once.
type Tenancy struct {
	Namespaces Table[Namespace]
	Keys       Table[APIKey]
	Secrets    SecretStore
}

// SecretsDir is where a function finds its secrets, one read-only file
// per secret, as in OpenFaaS.
const SecretsDir = "/var/openfaas/secrets"
