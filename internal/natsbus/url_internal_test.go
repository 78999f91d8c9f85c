package natsbus

import (
	"strings"
	"testing"
)

// TestURLList: a list of a cluster's servers, each with its credentials,
// names its user and hides every password, not only the first one's.
func TestURLList(t *testing.T) {
	list := "nats://gateway:pw1@nats1:4222, nats://gateway:pw2@nats2:4222,nats://nats3:4222"
	if u := URLUser(list); u != "gateway" {
		t.Errorf("URLUser(%q) = %q, want gateway", list, u)
	}
	if u := URLUser("nats://nats1:4222,nats://worker:pw@nats2:4222"); u != "worker" {
		t.Errorf("URLUser of a list whose second URL has the credentials = %q, want worker", u)
	}
	r := redactURL(list)
	if strings.Contains(r, "pw1") || strings.Contains(r, "pw2") || strings.Count(r, "nats://") != 3 {
		t.Errorf("redactURL(%q) = %q: want the three URLs without their passwords", list, r)
	}
}
