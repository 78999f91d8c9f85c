// Package pgtest gives tests a PostgreSQL database of their own: a new
// schema on the server GUST_POSTGRES_URL names (scripts/postgres starts a
// throwaway one), dropped when the test ends. Without that variable the
// test skips, saying so, or fails where GUST_REQUIRE_DOCKER says that
// every real dependency must be there (CI).
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ServerURL returns GUST_POSTGRES_URL, or skips (fails under
// GUST_REQUIRE_DOCKER) when it is unset.
func ServerURL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv("GUST_POSTGRES_URL")
	if u == "" {
		if os.Getenv("GUST_REQUIRE_DOCKER") != "" {
			tb.Fatal("GUST_POSTGRES_URL is unset and GUST_REQUIRE_DOCKER is set: start PostgreSQL (eval \"$(scripts/postgres start)\")")
		}
		tb.Skip("SKIPPED: GUST_POSTGRES_URL is unset; eval \"$(scripts/postgres start)\" to test with PostgreSQL")
	}
	return u
}

var schemas atomic.Int64

// MustSchema creates a new, empty schema on the server and returns the
// server's URL with that schema as the connections' search_path (pgx
// passes unknown URL parameters on as run-time parameters), so that a
// store opened on it sees only its own tables. The schema is dropped
// when the test ends.
func MustSchema(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	base := ServerURL(tb)
	schema := fmt.Sprintf("gust_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano(), schemas.Add(1))
	exec := func(q string) error {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return fmt.Errorf("connect to GUST_POSTGRES_URL: %w", err)
		}
		defer func() { _ = conn.Close(ctx) }()
		_, err = conn.Exec(ctx, q)
		return err
	}
	if err := exec(`CREATE SCHEMA ` + schema); err != nil {
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		if err := exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	if !strings.Contains(base, "://") {
		return base + " search_path=" + schema
	}
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("GUST_POSTGRES_URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
