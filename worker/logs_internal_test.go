package worker

import (
	"fmt"
	"testing"
	"time"
)

// TestCallSpans: a line is tied to the one call that ran when it was
// written, to none when several or none ran, and to none when the call
// that ran then may have been forgotten.
func TestCallSpans(t *testing.T) {
	var c callSpans
	before := time.Now()
	a := c.begin("a")
	inA := time.Now()
	c.end(a)
	c.end(a) // a second end keeps the first
	afterA := time.Now()
	if got := c.at(inA); got != "a" {
		t.Errorf("during a: %q, want a", got)
	}
	if got := c.at(before.Add(-time.Second)); got != "" {
		t.Errorf("before any call: %q, want none", got)
	}

	b := c.begin("b")
	x := c.begin("x")
	both := time.Now()
	if got := c.at(both); got != "" {
		t.Errorf("while b and x ran: %q, want none", got)
	}
	c.end(b)
	onlyX := time.Now()
	if got := c.at(onlyX); got != "x" {
		t.Errorf("while x alone ran: %q, want x", got)
	}
	c.end(x)
	if got := c.at(time.Now().Add(time.Second)); got != "" {
		t.Errorf("well after every call: %q, want none", got)
	}
	// A line the Engine read just after the call's end is still its
	// (once the grace of the calls before has passed).
	time.Sleep(2 * callGrace)
	y := c.begin("y")
	c.end(y)
	if got := c.at(time.Now()); got != "y" {
		t.Errorf("right after y: %q, want y", got)
	}

	// Past the spans kept, a time some forgotten call may cover is tied
	// to none; a later one still is.
	for i := 0; i < callSpansKept; i++ {
		c.end(c.begin(fmt.Sprint(i)))
	}
	time.Sleep(2 * callGrace) // past the grace of the forgotten calls
	if got := c.at(inA); got != "" {
		t.Errorf("a forgotten call's time: %q, want none", got)
	}
	if got := c.at(afterA); got != "" {
		t.Errorf("a time between forgotten calls: %q, want none", got)
	}
	last := c.begin("last")
	now := time.Now()
	if got := c.at(now); got != "last" {
		t.Errorf("during the last call: %q, want last", got)
	}
	c.end(last)
}
