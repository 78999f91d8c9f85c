package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gustfaas/gust"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Buckets of the cluster's shared state.
const (
	BucketFunctions  = "gust_functions"
	BucketPlacements = "gust_placements"
	BucketWorkers    = "gust_workers"
	BucketStatus     = "gust_status"
)

// Table is a gust.Table of JSON values in a JetStream KV bucket.
type Table[T any] struct {
	kv     jetstream.KeyValue
	bus    *Bus // runs the watches
	logger *zap.Logger
	// volatile: the bucket lives in memory (TableConfig.Memory) and is
	// lost when its servers restart, its writers putting their keys back
	// within seconds (heartbeats): a watch that starts over does not
	// take a key missing meanwhile for deleted.
	volatile bool
}

var _ gust.Table[int] = (*Table[int])(nil)

// TableConfig says how a table's bucket is made.
type TableConfig struct {
	Bucket string
	// TTL expires keys not written for this long (0: never).
	TTL time.Duration
	// Memory keeps the bucket in memory only: for state that is rebuilt
	// when the cluster restarts, such as heartbeats.
	Memory bool
}

// OpenTable creates the bucket if needed and returns the table.
func OpenTable[T any](ctx context.Context, b *Bus, cfg TableConfig) (*Table[T], error) {
	storage := jetstream.FileStorage
	if cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	kv, err := b.ensureKV(ctx, jetstream.KeyValueConfig{
		Bucket:  cfg.Bucket,
		History: 1,
		TTL:     cfg.TTL,
		Storage: storage,
	})
	if err != nil {
		return nil, fmt.Errorf("open kv bucket %s: %w", cfg.Bucket, err)
	}
	return &Table[T]{kv: kv, bus: b, logger: b.logger.With(zap.String("bucket", cfg.Bucket)), volatile: cfg.Memory}, nil
}

// Get implements gust.Table.
func (t *Table[T]) Get(ctx context.Context, key string) (T, uint64, error) {
	var v T
	e, err := t.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return v, 0, fmt.Errorf("get %s: %w", key, gust.ErrNotFound)
	}
	if err != nil {
		return v, 0, fmt.Errorf("get %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return v, e.Revision(), nil
}

// Put implements gust.Table.
func (t *Table[T]) Put(ctx context.Context, key string, v T) (uint64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", key, err)
	}
	var rev uint64
	// A put is safe to send again across a stream's election (fabric.go).
	err = acrossElection(ctx, func(ctx context.Context) (err error) {
		rev, err = t.kv.Put(ctx, key, data)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}
	return rev, nil
}

// Create implements gust.Table.
func (t *Table[T]) Create(ctx context.Context, key string, v T) (uint64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", key, err)
	}
	rev, err := t.kv.Create(ctx, key, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("create %s: %w", key, gust.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", key, err)
	}
	return rev, nil
}

// Update implements gust.Table.
func (t *Table[T]) Update(ctx context.Context, key string, v T, rev uint64) (uint64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", key, err)
	}
	nrev, err := t.kv.Update(ctx, key, data, rev)
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
		return 0, fmt.Errorf("update %s: %w", key, gust.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("update %s: %w", key, err)
	}
	return nrev, nil
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Delete implements gust.Table.
func (t *Table[T]) Delete(ctx context.Context, key string) error {
	if err := t.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// List implements gust.Table.
func (t *Table[T]) List(ctx context.Context, pattern string) (map[string]T, error) {
	w, err := t.kv.Watch(ctx, pattern, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", pattern, err)
	}
	defer w.Stop()
	out := map[string]T{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				return out, nil
			}
			var v T
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				t.logger.Warn("skip undecodable entry", zap.String("key", e.Key()), zap.Error(err))
				continue
			}
			out[e.Key()] = v
		case <-ctx.Done():
			return nil, fmt.Errorf("list %s: %w", pattern, ctx.Err())
		}
	}
}

// watchResyncCheck is how often a watch looks whether its connection came
// back, to start over, while it waits for that (the link is down, came
// back, or the watch is starting over). Otherwise it waits for the link
// to change (Bus.fabricChanged) and looks only every watchResyncIdle
// besides: an idle process wakes for none of its watches.
const (
	watchResyncCheck = 250 * time.Millisecond
	watchResyncIdle  = 5 * time.Second
)

// Watch implements gust.Table. The watch runs in a goroutine of the bus
// until ctx ends or the bus closes (Close waits for it); fn is not called
// once Watch has returned an error.
func (t *Table[T]) Watch(ctx context.Context, pattern string, fn func(gust.Change[T])) error {
	w, err := t.kv.Watch(ctx, pattern)
	if err != nil {
		return fmt.Errorf("watch %s: %w", pattern, err)
	}
	// Besides ctx, the bus closing ends the watch.
	wctx, stop := context.WithCancel(ctx)
	unhook := context.AfterFunc(t.bus.tasks.Context(), stop)
	initial, done := make(chan struct{}), make(chan struct{})
	// While the watched stream has no leader, heartbeats read here are
	// not judged (fabric.go).
	release := t.bus.watchStream("KV_" + t.kv.Bucket())
	started := t.bus.tasks.Go(func(context.Context) {
		defer close(done)
		defer release()
		defer stop()
		defer unhook()
		defer func() { _ = w.Stop() }()
		first := true
		// present holds the keys delivered as present. After the link
		// comes back the watch starts over (a restarted server may have
		// lost an in-memory bucket and numbers its entries from 1 again,
		// which the old watch would skip): resync collects the keys of
		// the new watch's initial values, and those of present it lacks
		// are delivered as deleted.
		present := map[string]bool{}
		var resync map[string]bool
		_, reconnects := t.bus.fabricState()
		restarting := false
		defer func() {
			if restarting {
				t.bus.watchRestarting(-1, false)
			}
		}()
		tick := time.NewTimer(watchResyncCheck)
		defer tick.Stop()
		changed := t.bus.fabricChanged()
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok || wctx.Err() != nil {
					return
				}
				if e == nil {
					if first {
						first = false
						close(initial)
					}
					if resync != nil {
						for key := range present {
							if !resync[key] && !t.volatile {
								delete(present, key)
								fn(gust.Change[T]{Key: key, Deleted: true, Received: time.Now()})
							}
						}
						resync = nil
					}
					continue
				}
				c := gust.Change[T]{Key: e.Key(), Revision: e.Revision(), Received: time.Now()}
				if first && e.Created().Before(c.Received) {
					c.Received = e.Created() // written before this watch began
				}
				if e.Operation() != jetstream.KeyValuePut {
					if first || (resync != nil && !present[e.Key()]) {
						continue // deleted before the watch began: not a change
					}
					delete(present, e.Key())
					c.Deleted = true
				} else if err := json.Unmarshal(e.Value(), &c.Value); err != nil {
					t.logger.Warn("skip undecodable entry", zap.String("key", e.Key()), zap.Error(err))
					continue
				} else {
					present[e.Key()] = true
					if resync != nil {
						resync[e.Key()] = true
					}
				}
				fn(c)
			case <-changed:
				// Look now; the look takes the next channel.
				changed = nil
				tick.Reset(0)
			case <-tick.C:
				// The channel first, then the state: a change after
				// the look closes the new channel.
				changed = t.bus.fabricChanged()
				up, n := t.bus.fabricState()
				if !up || n != reconnects || first || restarting {
					tick.Reset(watchResyncCheck)
				} else {
					tick.Reset(watchResyncIdle)
				}
				if !up || n == reconnects || first {
					continue
				}
				if !restarting {
					// Until it has, the link does not count as back
					// (fabric.go).
					restarting = true
					t.bus.watchRestarting(1, false)
				}
				nw, err := t.kv.Watch(wctx, pattern)
				if err != nil {
					// The bucket, or the cluster's meta leader, may not
					// be back yet: next tick.
					t.logger.Debug("restart watch", zap.String("pattern", pattern), zap.Error(err))
					continue
				}
				restarting = false
				t.bus.watchRestarting(-1, true)
				_ = w.Stop()
				w, reconnects, resync = nw, n, map[string]bool{}
			case <-wctx.Done():
				return
			}
		}
	})
	if !started {
		release()
		unhook()
		stop()
		_ = w.Stop()
		return fmt.Errorf("watch %s: %w", pattern, errClosed)
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	select {
	case <-initial:
		return nil
	case <-done:
	case <-wctx.Done():
	case <-timeout.C:
		err = fmt.Errorf("watch %s: initial values did not arrive within 30s", pattern)
	}
	select {
	case <-initial:
		if err == nil {
			return nil // delivered just as the watch ended
		}
	default:
	}
	switch {
	case err != nil:
	case ctx.Err() != nil:
		err = fmt.Errorf("watch %s: %w", pattern, ctx.Err())
	case t.bus.tasks.Context().Err() != nil:
		err = fmt.Errorf("watch %s: %w", pattern, errClosed)
	default:
		err = fmt.Errorf("watch %s: ended before the initial values arrived", pattern)
	}
	// Make sure fn is not called after the error is returned.
	stop()
	<-done
	return err
}
