package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestListenURL(t *testing.T) {
	for _, c := range []struct {
		addr, url string
		all       bool
	}{
		{"127.0.0.1:8080", "http://127.0.0.1:8080", false},
		{"[::]:8080", "http://127.0.0.1:8080", true},
		{"0.0.0.0:9000", "http://127.0.0.1:9000", true},
		{"10.0.0.5:80", "http://10.0.0.5:80", false},
		{"[::1]:8080", "http://[::1]:8080", false},
	} {
		if url, all := listenURL(c.addr); url != c.url || all != c.all {
			t.Errorf("listenURL(%q) = %q, %v; want %q, %v", c.addr, url, all, c.url, c.all)
		}
	}
}

// gust up says where its parts are and where the passwords are kept,
// never the passwords (issue 12, point 4).
func TestUpPrintWhere(t *testing.T) {
	t.Setenv("GUST_ADMIN_PASSWORD", "")
	t.Setenv("GUST_EVENTS_PASSWORD", "")
	m := MustRunUp(t, "", func(m *UpMain) {
		pw, err := adminPassword("", "", m.DataDir, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		m.Gateway.AdminPassword = pw
	})
	var buf bytes.Buffer
	m.PrintWhere(&buf)
	out := buf.String()
	t.Logf("gust up printed:\n%s", out)
	data, _ := filepath.Abs(m.DataDir)
	for _, want := range []string{
		"gateway          " + gw(m) + "\n",
		"dashboard        " + gw(m) + "/ui/",
		"metrics          " + gw(m) + "/metrics",
		"NATS             nats://",
		"data             " + data + "\n",
		"admin password   in " + filepath.Join(data, adminPasswordFile),
		"events password  in " + filepath.Join(data, eventsPasswordFile),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	events, err := readPasswordFile(filepath.Join(data, eventsPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{m.Gateway.AdminPassword, events} {
		if secret == "" || strings.Contains(out, secret) {
			t.Errorf("a password (%d bytes) is printed, or empty:\n%s", len(secret), out)
		}
	}
	if strings.Contains(out, "@") {
		t.Errorf("a URL with credentials:\n%s", out)
	}
}
