package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gustfaas/gust"
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

// TestPublishCredentials runs `gust publish` against `gust nats`: as user
// events with the password in the URL, in a --creds file, in
// $GUST_EVENTS_PASSWORD or found in the data directory, the message
// reaches a trigger subscription; without credentials or with a wrong
// password the connection is refused, and a reserved subject (a billing
// record) is refused with the server's permissions violation.
func TestPublishCredentials(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	t.Setenv("GUST_EVENTS_PASSWORD", "") // generated into data
	n := &NATSMain{Listen: "127.0.0.1:0", DataDir: data, Roles: true, Logger: testLogger(t)}
	if err := n.Run(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	pw, err := readPasswordFile(filepath.Join(data, eventsPasswordFile))
	if err != nil {
		t.Fatalf("events password: %v", err)
	}
	gw, err := natsbus.Connect(n.Server.UserURL(natsbus.UserGateway), "test-gateway", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	got := make(chan string, 16)
	stop, err := gw.Subscribe("orders.>", "", func(m *gust.Message) { got <- string(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	addr := strings.TrimPrefix(n.Server.ClientURL(), "nats://")
	withPW, _ := natsbus.URLWithUser("nats://"+addr, natsbus.UserEvents, pw)
	wrong, _ := natsbus.URLWithUser("nats://"+addr, natsbus.UserEvents, "wrong")
	creds := filepath.Join(t.TempDir(), "events.creds")
	if err := os.WriteFile(creds, []byte("events:"+pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	for _, tt := range []struct {
		name string
		env  []string
		args []string
		ok   bool
		want string // in stderr when refused
	}{
		{"URL", nil, []string{"--nats", withPW}, true, ""},
		{"CredsFile", nil, []string{"--nats", "nats://" + addr, "--creds", creds}, true, ""},
		{"Env", []string{"GUST_EVENTS_PASSWORD=" + pw}, []string{"--nats", "nats://" + addr}, true, ""},
		{"DataDir", []string{"GUST_DATA=" + data}, []string{"--nats", "nats://" + addr}, true, ""},
		{"None", nil, []string{"--nats", "nats://" + addr}, false, "Authorization Violation"},
		{"WrongPassword", nil, []string{"--nats", wrong}, false, "Authorization Violation"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := append([]string{"GUST_EVENTS_PASSWORD=", "GUST_NATS_CREDS=", "GUST_DATA=" + elsewhere}, tt.env...)
			code, _, errOut := gustCLIEnv(t, env, "", append([]string{"publish"}, append(tt.args, "orders."+tt.name, tt.name)...)...)
			if tt.ok {
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errOut)
				}
				if m := <-got; m != tt.name {
					t.Errorf("the trigger got %q, want %q", m, tt.name)
				}
				return
			}
			if code == 0 || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, %s; want a failure naming %q", code, errOut, tt.want)
			}
		})
	}
	code, _, errOut := gustCLIEnv(t, []string{"GUST_EVENTS_PASSWORD="}, "", "publish", "--nats", withPW, natsbus.SubjectMeterCalls, `{"callId":"forged"}`)
	if code == 0 || !strings.Contains(errOut, "Permissions Violation") {
		t.Errorf("publishing a billing record as events: exit %d, %s; want a permissions violation", code, errOut)
	}
}
