package gust

import (
	"sync"
	"time"
)

// Link is the state of a process's connection to the cluster's fabric
// (NATS), as far as judging others' heartbeats needs it.
type Link interface {
	// LinkState says whether the connection is up now and how many times
	// it has been re-established since it was made.
	LinkState() (connected bool, reconnects uint64)
}

// Liveness judges whether workers are alive by when their heartbeats were
// received here, never by the time a worker writes into its heartbeat (its
// clock may be wrong). Silence is only counted while this process could
// have heard: while its own link is down nobody is judged, and after the
// link comes back silence counts from then, so a gateway or scheduler that
// lost NATS keeps its last view instead of dropping every worker at once.
// The gateway's router and the scheduler both judge through it.
type Liveness struct {
	link Link // nil: the link is always up
	now  func() time.Time

	mu         sync.Mutex
	heard      map[string]time.Time
	reconnects uint64
	// back is when this process last saw its link come back.
	back time.Time
}

// NewLiveness returns a judge that reads link (nil when there is none to
// read, as in tests of one process).
func NewLiveness(link Link) *Liveness {
	return &Liveness{link: link, now: time.Now, heard: map[string]time.Time{}}
}

// Heard records a heartbeat of id received at at.
func (l *Liveness) Heard(id string, at time.Time) {
	l.mu.Lock()
	if at.After(l.heard[id]) {
		l.heard[id] = at
	}
	l.mu.Unlock()
}

// Forget drops what is known of id.
func (l *Liveness) Forget(id string) {
	l.mu.Lock()
	delete(l.heard, id)
	l.mu.Unlock()
}

// Silent reports whether id has been heard of not at all, or not for
// longer than d while this process could have heard it.
func (l *Liveness) Silent(id string, d time.Duration) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	last, ok := l.heard[id]
	if !ok {
		return true
	}
	if l.link != nil {
		up, n := l.link.LinkState()
		if !up {
			return false // we cannot hear anyone now: keep the last view
		}
		if n != l.reconnects {
			// The link came back since we last looked; seen lazily, so
			// "back" is no earlier than the real reconnect: more grace,
			// never less.
			l.reconnects, l.back = n, now
		}
		if l.back.After(last) {
			last = l.back
		}
	}
	return now.Sub(last) > d
}

// Beats carries workers' heartbeats as plain messages of the fabric (core
// NATS), besides their advertisement in the workers' table. A table write
// needs its stream's leader: in a NATS cluster that lost the server
// leading it, writes and watches stall until the others elect a new one
// (4 to 9 s of silence before they campaign, then the watches start over),
// long enough to make every worker look gone. A plain message reaches
// every listener while any server stands, so liveness is judged by both.
type Beats interface {
	// Beat tells every listener that worker id is alive now.
	Beat(id string) error
	// OnBeat calls fn with the worker's id for each beat heard, until the
	// returned stop is called.
	OnBeat(fn func(id string)) (stop func() error, err error)
}

// HearBeats makes l hear the plain heartbeats of the fabric src when src
// carries them (implements Beats; a test's in-process fabric need not),
// each as received now. It returns how to stop hearing them.
func (l *Liveness) HearBeats(src any) (stop func() error, err error) {
	b, ok := src.(Beats)
	if !ok {
		return func() error { return nil }, nil
	}
	return b.OnBeat(func(id string) { l.Heard(id, l.now()) })
}
