package main

import (
	"flag"
	"slices"
	"testing"
)

func TestIsolationFlags(t *testing.T) {
	for _, c := range []struct {
		args  []string
		mode  string
		allow []int
		bad   bool
	}{
		{args: nil, mode: firewallAuto},
		{args: []string{"--firewall", "on", "--firewall-allow", "8080, 9090"}, mode: firewallOn, allow: []int{8080, 9090}},
		{args: []string{"--firewall=off"}, mode: firewallOff},
		{args: []string{"--firewall", "maybe"}, bad: true},
		{args: []string{"--firewall-allow", "http"}, bad: true},
		{args: []string{"--firewall-allow", "70000"}, bad: true},
	} {
		t.Setenv("GUST_FIREWALL", "")
		t.Setenv("GUST_FIREWALL_ALLOW", "")
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		get := isolationFlags(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		iso, err := get()
		if c.bad {
			if err == nil {
				t.Errorf("%q: got %+v, want an error", c.args, iso)
			}
			continue
		}
		if err != nil || iso.Mode != c.mode || !slices.Equal(iso.Allow, c.allow) {
			t.Errorf("%q: got %+v, %v, want mode %q allow %v", c.args, iso, err, c.mode, c.allow)
		}
	}
}
