package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// noLogShows fails the test if a logged line, message or field, holds s.
func noLogShows(tb testing.TB, logs *observer.ObservedLogs, s string) {
	tb.Helper()
	for _, l := range logs.All() {
		if line := l.Message + " " + fmt.Sprint(l.ContextMap()); strings.Contains(line, s) {
			tb.Errorf("a log line shows %q: %s", s, line)
		}
	}
}

func TestSecretsKey_Generated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	core, logs := observer.New(zapcore.DebugLevel)
	key, err := secretsKey("", dir, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 32 || bytes.Equal(key, make([]byte, 32)) {
		t.Fatalf("key = %x, want 32 random bytes", key)
	}
	p := filepath.Join(dir, secretsKeyFile)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("data directory has mode %v, want 0700", di.Mode().Perm())
	}
	if len(logs.FilterField(zap.String("file", p)).All()) != 1 {
		t.Errorf("the key file's path was not logged: %v", logs.All())
	}
	noLogShows(t, logs, hex.EncodeToString(key))

	// The next start reads the same key.
	again, err := secretsKey("", dir, zap.New(core))
	if err != nil || !bytes.Equal(again, key) {
		t.Fatalf("second start: %x, %v; want the generated key", again, err)
	}
	noLogShows(t, logs, hex.EncodeToString(key))
}

func TestSecretsKey_File(t *testing.T) {
	want := bytes.Repeat([]byte{0xab}, 32)
	for _, tt := range []struct {
		name    string
		content []byte
	}{
		{"Hex", []byte(hex.EncodeToString(want) + "\n")},
		{"Base64", []byte(base64.StdEncoding.EncodeToString(want))},
		{"Raw", want},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "key")
			if err := os.WriteFile(p, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			data := t.TempDir()
			got, err := secretsKey(p, data, zap.NewNop())
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("secretsKey = %x, %v; want %x", got, err, want)
			}
			if _, err := os.Stat(filepath.Join(data, secretsKeyFile)); err == nil {
				t.Error("a key was generated in the data directory though a file was given")
			}
		})
	}
	t.Run("ErrShort", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "key")
		if err := os.WriteFile(p, []byte("abcd\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := secretsKey(p, t.TempDir(), zap.NewNop()); err == nil || !strings.Contains(err.Error(), "--secrets-key-file") {
			t.Fatalf("a 2-byte key: %v, want an error naming --secrets-key-file", err)
		}
	})
	t.Run("MissingIsGenerated", func(t *testing.T) {
		// Roles of one cluster started at once on one shared key path
		// (compose) all get the key the first of them wrote.
		p := filepath.Join(t.TempDir(), "shared", "secrets.key")
		const roles = 8
		keys := make([][]byte, roles)
		errs := make([]error, roles)
		var wg sync.WaitGroup
		for i := range roles {
			wg.Add(1)
			go func() {
				defer wg.Done()
				keys[i], errs[i] = secretsKey(p, t.TempDir(), zap.NewNop())
			}()
		}
		wg.Wait()
		for i := range roles {
			if errs[i] != nil || len(keys[i]) != 32 || !bytes.Equal(keys[i], keys[0]) {
				t.Fatalf("role %d: key %x, %v; want the same 32-byte key as role 0 (%x)", i, keys[i], errs[i], keys[0])
			}
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("key file: %v, %v; want mode 0600", fi, err)
		}
	})
}

// Two roles on one cluster given the same key file read each other's
// secrets; a role whose data directory made its own key cannot.
func TestOpenTenancy_SharedKey(t *testing.T) {
	ctx := context.Background()
	srv := natsbustest.MustRunServer(t, t.TempDir())
	gwBus, wkBus, otherBus := natsbustest.MustConnect(t, srv), natsbustest.MustConnect(t, srv), natsbustest.MustConnect(t, srv)
	keyFile := filepath.Join(t.TempDir(), "secrets.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5a", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	gw, err := openTenancy(ctx, gwBus, keyFile, t.TempDir(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	wk, err := openTenancy(ctx, wkBus, keyFile, t.TempDir(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Secrets.Put(ctx, gust.DefaultNamespace, "db", []byte("pw"), true); err != nil {
		t.Fatal(err)
	}
	if v, err := wk.Secrets.Get(ctx, gust.DefaultNamespace, "db"); err != nil || string(v) != "pw" {
		t.Fatalf("the worker read %q, %v; want pw", v, err)
	}
	other, err := openTenancy(ctx, otherBus, "", t.TempDir(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Secrets.Get(ctx, gust.DefaultNamespace, "db"); err == nil {
		t.Fatal("a role with its own generated key read the secret")
	}
}
