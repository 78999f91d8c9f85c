package natsbus

import "github.com/gustfaas/gust"

var _ gust.Link = (*Bus)(nil)

// LinkState implements gust.Link: whether this process can hear the
// changes it watches now (the connection is up, no watched stream is
// stalled in a cluster's leader election and no watch is still starting
// over: fabric.go), and how many times that came back (nats.go's
// reconnects, the stalls that ended, the watches that started over).
func (b *Bus) LinkState() (connected bool, reconnects uint64) {
	return b.linkUp()
}
