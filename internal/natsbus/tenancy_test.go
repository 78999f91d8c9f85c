package natsbus_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, natsbus.SecretsKeySize) }

func mustOpenTenancy(t *testing.T, b *natsbus.Bus, key []byte) *gust.Tenancy {
	t.Helper()
	tn, err := natsbus.OpenTenancy(context.Background(), b, key)
	if err != nil {
		t.Fatalf("OpenTenancy: %v", err)
	}
	return tn
}

func TestOpenTenancy_DefaultNamespace(t *testing.T) {
	ctx := context.Background()
	b := natsbustest.MustOpenBus(t)
	tn := mustOpenTenancy(t, b, testKey(1))
	ns, _, err := tn.Namespaces.Get(ctx, gust.DefaultNamespace)
	if err != nil {
		t.Fatalf("default namespace: %v", err)
	}
	if ns.Name != gust.DefaultNamespace || ns.Created.IsZero() {
		t.Fatalf("default namespace = %+v", ns)
	}
	// Opening again (another role, a restart) keeps what is there.
	tn2 := mustOpenTenancy(t, b, testKey(1))
	ns2, _, err := tn2.Namespaces.Get(ctx, gust.DefaultNamespace)
	if err != nil || !ns2.Created.Equal(ns.Created) {
		t.Fatalf("reopened default namespace = %+v, %v; want it unchanged", ns2, err)
	}
}

func TestOpenTenancy_ErrKeySize(t *testing.T) {
	b := natsbustest.MustOpenBus(t)
	if _, err := natsbus.OpenTenancy(context.Background(), b, []byte("short")); err == nil {
		t.Fatal("OpenTenancy with a 5-byte key: nil error")
	}
}

func TestSecrets(t *testing.T) {
	ctx := context.Background()
	b := natsbustest.MustOpenBus(t)
	sec := mustOpenTenancy(t, b, testKey(1)).Secrets
	const plain = "very-secret-plaintext-42"

	if err := sec.Put(ctx, "team-a", "db", []byte(plain), true); err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Run("ErrConflict", func(t *testing.T) {
		if err := sec.Put(ctx, "team-a", "db", []byte("x"), true); !errors.Is(err, gust.ErrConflict) {
			t.Fatalf("create again = %v, want gust.ErrConflict", err)
		}
	})
	t.Run("ErrUpdateMissing", func(t *testing.T) {
		if err := sec.Put(ctx, "team-a", "nope", []byte("x"), false); !errors.Is(err, gust.ErrNotFound) {
			t.Fatalf("update missing = %v, want gust.ErrNotFound", err)
		}
	})
	t.Run("ErrInvalidName", func(t *testing.T) {
		if err := sec.Put(ctx, "team-a", "a.b", []byte("x"), true); gust.ErrorField(err) != "name" {
			t.Fatalf("create a.b = %v, want an error naming name", err)
		}
	})
	t.Run("Get", func(t *testing.T) {
		v, err := sec.Get(ctx, "team-a", "db")
		if err != nil || string(v) != plain {
			t.Fatalf("Get = %q, %v; want %q", v, err, plain)
		}
		if _, err := sec.Get(ctx, "team-b", "db"); !errors.Is(err, gust.ErrNotFound) {
			t.Fatalf("Get in another namespace = %v, want gust.ErrNotFound", err)
		}
	})
	t.Run("StoredEncrypted", func(t *testing.T) {
		kv, err := b.JS.KeyValue(ctx, natsbus.BucketSecrets)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, "team-a.db")
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(e.Value(), []byte(plain)) {
			t.Fatalf("the stored record holds the plaintext: %s", e.Value())
		}
		// Two writes of the same value differ: a fresh nonce each time.
		if err := sec.Put(ctx, "team-a", "db", []byte(plain), false); err != nil {
			t.Fatal(err)
		}
		e2, err := kv.Get(ctx, "team-a.db")
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(e.Value(), e2.Value()) {
			t.Fatal("the same value was stored twice as the same bytes")
		}
	})
	t.Run("ErrWrongKey", func(t *testing.T) {
		other := mustOpenTenancy(t, b, testKey(2)).Secrets
		v, err := other.Get(ctx, "team-a", "db")
		if err == nil || bytes.Contains(v, []byte(plain)) {
			t.Fatalf("Get with another key = %q, %v; want an error", v, err)
		}
	})
	t.Run("ErrMovedRecord", func(t *testing.T) {
		// A sealed value copied under another secret's key does not open.
		kv, err := b.JS.KeyValue(ctx, natsbus.BucketSecrets)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, "team-a.db")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, "team-b.db", e.Value()); err != nil {
			t.Fatal(err)
		}
		if _, err := sec.Get(ctx, "team-b", "db"); err == nil {
			t.Fatal("a record moved to team-b.db opened")
		}
		if err := kv.Delete(ctx, "team-b.db"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ListDelete", func(t *testing.T) {
		if err := sec.Put(ctx, "team-a", "api", []byte("v"), true); err != nil {
			t.Fatal(err)
		}
		if err := sec.Put(ctx, "team-ab", "other", []byte("v"), true); err != nil {
			t.Fatal(err)
		}
		names, err := sec.List(ctx, "team-a")
		if err != nil || !slices.Equal(names, []string{"api", "db"}) {
			t.Fatalf("List = %v, %v; want [api db]", names, err)
		}
		if err := sec.Delete(ctx, "team-a", "api"); err != nil {
			t.Fatal(err)
		}
		if err := sec.Delete(ctx, "team-a", "api"); !errors.Is(err, gust.ErrNotFound) {
			t.Fatalf("delete again = %v, want gust.ErrNotFound", err)
		}
		names, err = sec.List(ctx, "team-a")
		if err != nil || !slices.Equal(names, []string{"db"}) {
			t.Fatalf("List after delete = %v, %v; want [db]", names, err)
		}
		if names, err := sec.List(ctx, "empty"); err != nil || names == nil || len(names) != 0 {
			t.Fatalf("List(empty) = %#v, %v; want an empty list", names, err)
		}
		// A deleted secret can be created again.
		if err := sec.Put(ctx, "team-a", "api", []byte("v2"), true); err != nil {
			t.Fatalf("create after delete: %v", err)
		}
	})
}

func TestKeys_StoredByHash(t *testing.T) {
	ctx := context.Background()
	b := natsbustest.MustOpenBus(t)
	tn := mustOpenTenancy(t, b, testKey(1))
	k := gust.APIKey{ID: "abc", Name: "ci", Namespace: "team-a", Hash: "00ff"}
	if _, err := tn.Keys.Create(ctx, k.ID, k); err != nil {
		t.Fatal(err)
	}
	got, _, err := tn.Keys.Get(ctx, "abc")
	if err != nil || got.Hash != "00ff" || got.Namespace != "team-a" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if err := tn.Keys.Delete(ctx, "abc"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tn.Keys.Get(ctx, "abc"); !errors.Is(err, gust.ErrNotFound) {
		t.Fatalf("Get after delete = %v, want gust.ErrNotFound", err)
	}
}
