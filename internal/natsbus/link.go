package natsbus

import "github.com/gustfaas/gust"

var _ gust.Link = (*Bus)(nil)

// LinkState implements gust.Link: whether the connection is up and how many
// times nats.go has re-established it.
func (b *Bus) LinkState() (connected bool, reconnects uint64) {
	return b.NC.IsConnected(), b.NC.Stats().Reconnects
}
