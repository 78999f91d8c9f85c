package gateway

import (
	"regexp"
	"testing"
	"time"
)

// TestNewCallID: call ids are 32 lowercase hex digits, unique, and an id
// made a millisecond or more after another sorts after it (the billing
// store's index of ids grows at its end).
func TestNewCallID(t *testing.T) {
	hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := make(map[string]bool, 10000)
	for range 10000 {
		id := newCallID()
		if !hexID.MatchString(id) {
			t.Fatalf("call id %q: want 32 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("call id %q made twice", id)
		}
		seen[id] = true
	}
	for range 5 {
		a := newCallID()
		time.Sleep(2 * time.Millisecond)
		if b := newCallID(); b <= a {
			t.Errorf("call id %s made after %s sorts before it", b, a)
		}
	}
	// The time part is the clock's milliseconds.
	before := time.Now().UnixMilli()
	id := newCallID()
	var ms int64
	for _, c := range id[:12] {
		ms = ms<<4 | int64(hexDigit(byte(c)))
	}
	if after := time.Now().UnixMilli(); ms < before || ms > after {
		t.Errorf("call id %s carries %d ms, want between %d and %d", id, ms, before, after)
	}
}

func hexDigit(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}
