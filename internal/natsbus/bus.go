package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Bus is one connection to NATS with its JetStream context.
type Bus struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	logger *zap.Logger
	// handlers tracks requests being served, so Close lets them reply.
	handlers sync.WaitGroup
}

// Connect dials NATS at url and keeps reconnecting for ever after a loss.
func Connect(url, name string, logger *zap.Logger) (*Bus, error) {
	logger = logger.Named("natsbus")
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", zap.String("url", nc.ConnectedUrl()))
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Bus{NC: nc, JS: js, logger: logger}, nil
}

// Close drains the connection: subscriptions finish the messages they hold
// before the connection closes.
func (b *Bus) Close() error {
	b.handlers.Wait()
	if err := b.NC.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		b.NC.Close()
		return fmt.Errorf("drain nats connection: %w", err)
	}
	for b.NC.IsDraining() {
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Request sends req as JSON to subject and decodes the reply into resp.
// No responder gives an EUNAVAILABLE *gust.Error.
func (b *Bus) Request(ctx context.Context, subject string, req, resp any) error {
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	msg, err := b.NC.RequestWithContext(ctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return gust.Errorf(gust.EUNAVAILABLE, "nothing answers on %s", subject)
	}
	if err != nil {
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if err := json.Unmarshal(msg.Data, resp); err != nil {
		return fmt.Errorf("decode reply from %s: %w", subject, err)
	}
	return nil
}

// Handle serves requests on subject (in queue group queue, if not empty).
// Each request runs fn in its own goroutine with a context that ends when
// ctx does; fn's result is sent back as JSON.
func (b *Bus) Handle(ctx context.Context, subject, queue string, fn func(ctx context.Context, data []byte) any) (func() error, error) {
	sub, err := b.NC.QueueSubscribe(subject, queue, func(m *nats.Msg) {
		b.handlers.Add(1)
		go func() {
			defer b.handlers.Done()
			out, err := json.Marshal(fn(ctx, m.Data))
			if err != nil {
				b.logger.Error("encode reply", zap.String("subject", subject), zap.Error(err))
				return
			}
			if err := m.Respond(out); err != nil {
				b.logger.Warn("respond", zap.String("subject", subject), zap.Error(err))
			}
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	// Make sure the server has the subscription before callers request.
	if err := b.NC.Flush(); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return sub.Drain, nil
}

var _ gust.Requests = (*Bus)(nil)

// OpenState opens (creating if needed) the tables of the cluster's shared
// state. Heartbeats and pool status live in memory: they are rebuilt
// within seconds after a restart.
func OpenState(ctx context.Context, b *Bus) (*gust.State, error) {
	fns, err := OpenTable[gust.Function](ctx, b, TableConfig{Bucket: BucketFunctions})
	if err != nil {
		return nil, err
	}
	pls, err := OpenTable[gust.Placement](ctx, b, TableConfig{Bucket: BucketPlacements})
	if err != nil {
		return nil, err
	}
	wks, err := OpenTable[gust.WorkerInfo](ctx, b, TableConfig{Bucket: BucketWorkers, Memory: true, TTL: time.Minute})
	if err != nil {
		return nil, err
	}
	sts, err := OpenTable[gust.PoolStatus](ctx, b, TableConfig{Bucket: BucketStatus, Memory: true, TTL: time.Hour})
	if err != nil {
		return nil, err
	}
	return &gust.State{Functions: fns, Placements: pls, Workers: wks, Status: sts}, nil
}

// RequestRaw sends data with headers on subject and returns the reply's
// data.
func (b *Bus) RequestRaw(ctx context.Context, subject string, data []byte, header map[string][]string) ([]byte, error) {
	msg, err := b.NC.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Data: data, Header: nats.Header(header)})
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, gust.Errorf(gust.EUNAVAILABLE, "nothing answers on %s", subject)
	}
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", subject, err)
	}
	return msg.Data, nil
}
