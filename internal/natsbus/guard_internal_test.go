package natsbus

import "testing"

func TestSubjectMatches(t *testing.T) {
	for _, tt := range []struct {
		pattern, subject string
		want             bool
	}{
		{"orders.new", "orders.new", true},
		{"orders.*", "orders.new", true},
		{"orders.*", "orders.new.x", false},
		{"orders.>", "orders.new.x", true},
		{"orders.>", "orders", false},
		{">", "anything.at.all", true},
		{"orders.new", "orders.old", false},
		{"orders.new", "$KV.gust_workers.evil", false},
		{"ns.team-x.*", "ns.team-y.a", false},
	} {
		if got := subjectMatches(tt.pattern, tt.subject); got != tt.want {
			t.Errorf("subjectMatches(%q, %q) = %v, want %v", tt.pattern, tt.subject, got, tt.want)
		}
	}
}
