package natsbus

import (
	"fmt"
	"strings"

	"github.com/gustfaas/gust"
	"github.com/nats-io/nats.go"
)

// BeatPrefix + worker id is the subject of a worker's plain heartbeat
// (gust.Beats). It lies outside "gust.>" because the gateway, which must
// hear beats, may subscribe to nothing under "gust.>"; it is reserved like
// every subject of Gust's.
const BeatPrefix = "_GUST_BEAT."

var _ gust.Beats = (*Bus)(nil)

// Beat implements gust.Beats: a core NATS message with no body.
func (b *Bus) Beat(id string) error {
	return b.NC.Publish(BeatPrefix+id, nil)
}

// OnBeat implements gust.Beats. A subscription of core NATS: nats.go
// renews it on whatever server the connection reaches next.
func (b *Bus) OnBeat(fn func(id string)) (func() error, error) {
	sub, err := b.NC.Subscribe(BeatPrefix+"*", func(m *nats.Msg) {
		fn(strings.TrimPrefix(m.Subject, BeatPrefix))
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s*: %w", BeatPrefix, err)
	}
	if err := b.NC.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe %s*: %w", BeatPrefix, err)
	}
	return sub.Unsubscribe, nil
}
