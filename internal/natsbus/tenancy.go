package natsbus

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/gustfaas/gust"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Buckets of access control.
const (
	BucketNamespaces = "gust_namespaces"
	BucketKeys       = "gust_keys"
	BucketSecrets    = "gust_secrets"
)

// The configurations of access control's buckets.
var (
	namespacesTable = TableConfig{Bucket: BucketNamespaces}
	keysTable       = TableConfig{Bucket: BucketKeys}
	secretsBucket   = jetstream.KeyValueConfig{Bucket: BucketSecrets, History: 1, Storage: jetstream.FileStorage}
)

// SecretsKeySize is the size of the key secrets are encrypted under
// (AES-256).
const SecretsKeySize = 32

// keyCheckKey holds a fingerprint of the secrets key the bucket's values
// were written under; it cannot collide with a secret's key, whose parts
// are valid names (no '_').
const keyCheckKey = "_keycheck"

// OpenTenancy opens (creating if needed) the tables of access control:
// namespaces keyed by name, keys keyed by id and secrets keyed by
// "namespace.name", encrypted with AES-256-GCM under secretKey. The
// default namespace is created if it is missing, so it always exists.
//
// Every role that reads or writes secrets must be given the same
// secretKey: a role opened with another one logs a warning here and gets
// an error from every Get.
func OpenTenancy(ctx context.Context, b *Bus, secretKey []byte) (*gust.Tenancy, error) {
	if len(secretKey) != SecretsKeySize {
		return nil, fmt.Errorf("open tenancy: secrets key is %d bytes, want %d", len(secretKey), SecretsKeySize)
	}
	nss, err := OpenTable[gust.Namespace](ctx, b, namespacesTable)
	if err != nil {
		return nil, err
	}
	keys, err := OpenTable[gust.APIKey](ctx, b, keysTable)
	if err != nil {
		return nil, err
	}
	secrets, err := openSecrets(ctx, b, secretKey, true)
	if err != nil {
		return nil, err
	}
	def := gust.Namespace{
		Name: gust.DefaultNamespace, Labels: map[string]string{}, Annotations: map[string]string{},
		Created: time.Now().UTC(),
	}
	if _, err := nss.Create(ctx, gust.DefaultNamespace, def); err != nil && !errors.Is(err, gust.ErrConflict) {
		return nil, fmt.Errorf("create namespace %s: %w", gust.DefaultNamespace, err)
	}
	return &gust.Tenancy{Namespaces: nss, Keys: keys, Secrets: secrets}, nil
}

// Secrets is a gust.SecretStore in a JetStream KV bucket. Each value is
// sealed with AES-256-GCM under the store's key with a random nonce, and
// bound to its own KV key (additional data), so a sealed value copied
// under another secret's key does not open.
type Secrets struct {
	kv     jetstream.KeyValue
	aead   cipher.AEAD
	logger *zap.Logger
}

var _ gust.SecretStore = (*Secrets)(nil)

// sealed is a secret as stored: nothing in it is secret.
type sealed struct {
	Nonce      []byte    `json:"nonce"`
	Ciphertext []byte    `json:"ciphertext"`
	Updated    time.Time `json:"updatedAt"`
}

// OpenSecrets opens (creating if needed) the secrets bucket alone, with
// secrets under secretKey: for a worker, which reads secrets and needs
// nothing else of access control.
func OpenSecrets(ctx context.Context, b *Bus, secretKey []byte) (*Secrets, error) {
	if len(secretKey) != SecretsKeySize {
		return nil, fmt.Errorf("open secrets: secrets key is %d bytes, want %d", len(secretKey), SecretsKeySize)
	}
	return openSecrets(ctx, b, secretKey, false)
}

// openSecrets opens the bucket; record says this role writes secrets and
// may record the key's fingerprint (a worker only reads it: a right to
// put any key into the bucket would let it roll the bucket up, wiping
// every secret).
func openSecrets(ctx context.Context, b *Bus, key []byte, record bool) (*Secrets, error) {
	kv, err := b.ensureKV(ctx, secretsBucket)
	if err != nil {
		return nil, fmt.Errorf("open kv bucket %s: %w", BucketSecrets, err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secrets cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets cipher: %w", err)
	}
	s := &Secrets{kv: kv, aead: aead, logger: b.logger.With(zap.String("bucket", BucketSecrets))}
	if err := s.checkKey(ctx, key, record); err != nil {
		return nil, err
	}
	return s, nil
}

// checkKey records a fingerprint of key (an HMAC, which says nothing of
// the key) on first use when record is set, and warns when this store's
// key differs from the one recorded: its secrets cannot be read with this
// key. A reader that finds no fingerprint yet has nothing to compare.
func (s *Secrets) checkKey(ctx context.Context, key []byte, record bool) error {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("gust secrets key check"))
	fp := []byte(hex.EncodeToString(mac.Sum(nil)))
	if record {
		_, err := s.kv.Create(ctx, keyCheckKey, fp)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("record secrets key check: %w", err)
		}
	}
	e, err := s.kv.Get(ctx, keyCheckKey)
	if !record && errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read secrets key check: %w", err)
	}
	if !hmac.Equal(e.Value(), fp) {
		s.logger.Warn("this secrets key differs from the one the stored secrets were written with; they cannot be read here: give every gateway and worker the same --secrets-key-file")
	}
	return nil
}

func secretKey(namespace, name string) (string, error) {
	if !gust.ValidName(namespace) {
		return "", gust.Invalidf("namespace", "namespace %q is not a valid name", namespace)
	}
	if !gust.ValidName(name) {
		return "", gust.Invalidf("name", "secret name %q is not a valid name", name)
	}
	return namespace + "." + name, nil
}

func (s *Secrets) seal(key string, value []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	rec := sealed{Nonce: nonce, Ciphertext: s.aead.Seal(nil, nonce, value, []byte(key)), Updated: time.Now().UTC()}
	return json.Marshal(rec)
}

// Put implements gust.SecretStore.
func (s *Secrets) Put(ctx context.Context, namespace, name string, value []byte, create bool) error {
	key, err := secretKey(namespace, name)
	if err != nil {
		return err
	}
	data, err := s.seal(key, value)
	if err != nil {
		return fmt.Errorf("seal secret %s: %w", key, err)
	}
	if create {
		_, err := s.kv.Create(ctx, key, data)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("create secret %s: %w", key, gust.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("create secret %s: %w", key, err)
		}
		return nil
	}
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("update secret %s: %w", key, gust.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("update secret %s: %w", key, err)
	}
	_, err = s.kv.Update(ctx, key, data, e.Revision())
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
		return fmt.Errorf("update secret %s: %w", key, gust.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("update secret %s: %w", key, err)
	}
	return nil
}

// Get implements gust.SecretStore.
func (s *Secrets) Get(ctx context.Context, namespace, name string) ([]byte, error) {
	key, err := secretKey(namespace, name)
	if err != nil {
		return nil, err
	}
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("get secret %s: %w", key, gust.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get secret %s: %w", key, err)
	}
	var rec sealed
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, fmt.Errorf("decode secret %s: %w", key, err)
	}
	if len(rec.Nonce) != s.aead.NonceSize() {
		return nil, fmt.Errorf("decrypt secret %s: malformed record", key)
	}
	value, err := s.aead.Open(nil, rec.Nonce, rec.Ciphertext, []byte(key))
	if err != nil {
		return nil, fmt.Errorf("decrypt secret %s: not written with this secrets key (every gateway and worker needs the same one): %w", key, err)
	}
	return value, nil
}

// List implements gust.SecretStore.
func (s *Secrets) List(ctx context.Context, namespace string) ([]string, error) {
	if !gust.ValidName(namespace) {
		return nil, gust.Invalidf("namespace", "namespace %q is not a valid name", namespace)
	}
	w, err := s.kv.Watch(ctx, namespace+".*", jetstream.IgnoreDeletes(), jetstream.MetaOnly())
	if err != nil {
		return nil, fmt.Errorf("list secrets of %s: %w", namespace, err)
	}
	defer w.Stop()
	out := []string{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				sort.Strings(out)
				return out, nil
			}
			out = append(out, strings.TrimPrefix(e.Key(), namespace+"."))
		case <-ctx.Done():
			return nil, fmt.Errorf("list secrets of %s: %w", namespace, ctx.Err())
		}
	}
}

// Delete implements gust.SecretStore.
func (s *Secrets) Delete(ctx context.Context, namespace, name string) error {
	key, err := secretKey(namespace, name)
	if err != nil {
		return err
	}
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete secret %s: %w", key, gust.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("delete secret %s: %w", key, err)
	}
	if err := s.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
		if isWrongSequence(err) {
			return fmt.Errorf("delete secret %s: %w", key, gust.ErrConflict)
		}
		return fmt.Errorf("delete secret %s: %w", key, err)
	}
	return nil
}
