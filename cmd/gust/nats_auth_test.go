package main

import (
	"path/filepath"
	"testing"

	"github.com/gustfaas/gust/internal/natsbus"
)

// roleNATS is how role connects to the server of n.
func roleNATS(n *NATSMain, role string) natsbus.ClientConfig {
	return natsbus.ClientConfig{URL: n.Server.UserURL(role)}
}

// roleURL is the URL of the NATS server at addr with the credentials of
// role, as the `gust nats` or `gust up` with data directory data keeps
// them.
func roleURL(tb testing.TB, addr, data, role string) string {
	tb.Helper()
	pw, err := readPasswordFile(rolePasswordPath(filepath.Join(data, natsAuthDir), role))
	if err != nil {
		tb.Fatalf("password of nats user %s: %v", role, err)
	}
	u, err := natsbus.URLWithUser("nats://"+addr, role, pw)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}
