package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Streams and buckets of async calls.
const (
	StreamAsync       = "GUST_ASYNC"
	StreamDeadLetters = "GUST_DLQ"
	BucketCalls       = "gust_calls"
	BucketIdempotency = "gust_idempotency"
)

// Retention of the async streams (docs/limits.md). An async call older
// than AsyncMaxAge is past every retry age a deploy may set.
const (
	AsyncMaxAge        = 7 * 24 * time.Hour
	AsyncMaxBytes      = 10 << 30
	DeadLetterMaxAge   = 30 * 24 * time.Hour
	DeadLetterMaxBytes = 1 << 30
)

// AsyncState holds the tables of async calls.
type AsyncState struct {
	// Calls is the status of each async call, by call id.
	Calls *Table[gust.AsyncStatus]
	// Idempotency maps "ns.fn.key-hash" to the call id of the first
	// enqueue with that key, for the idempotency window.
	Idempotency *Table[string]
}

// OpenAsync creates the async queue and dead-letter streams and the async
// tables. window is how long an idempotency key holds.
func OpenAsync(ctx context.Context, b *Bus, window time.Duration) (*AsyncState, error) {
	if err := b.ensureStream(ctx, jetstream.StreamConfig{
		Name: StreamAsync, Description: "Gust async calls waiting to run",
		Subjects: []string{gust.SubjectAsyncPrefix + ">"}, Storage: jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy, Duplicates: 2 * time.Minute, MaxMsgSize: 8 << 20,
		// Full, an enqueue is refused (503) rather than an accepted call
		// dropped; past the age no retry is allowed anyway
		// (gust.Bounds.MaxRetryAge).
		MaxAge: AsyncMaxAge, MaxBytes: AsyncMaxBytes, Discard: jetstream.DiscardNew,
	}); err != nil {
		return nil, fmt.Errorf("async stream: %w", err)
	}
	if err := b.ensureStream(ctx, jetstream.StreamConfig{
		Name: StreamDeadLetters, Description: "Gust calls that ran out of attempts",
		Subjects: []string{gust.SubjectDeadLetterPrefix + ">"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, MaxMsgSize: 8 << 20,
		// A dead letter is kept for redrive this long; the oldest go
		// first when the stream is full.
		MaxAge: DeadLetterMaxAge, MaxBytes: DeadLetterMaxBytes, Discard: jetstream.DiscardOld,
	}); err != nil {
		return nil, fmt.Errorf("dead-letter stream: %w", err)
	}
	calls, err := OpenTable[gust.AsyncStatus](ctx, b, TableConfig{Bucket: BucketCalls, TTL: 7 * 24 * time.Hour})
	if err != nil {
		return nil, err
	}
	idem, err := OpenTable[string](ctx, b, TableConfig{Bucket: BucketIdempotency, TTL: window})
	if err != nil {
		return nil, err
	}
	return &AsyncState{Calls: calls, Idempotency: idem}, nil
}

var (
	_ gust.Queue       = (*Bus)(nil)
	_ gust.Events      = (*Bus)(nil)
	_ gust.DeadLetters = (*DeadLetterStream)(nil)
)

// Enqueue implements gust.Queue: the message is stored (and deduplicated
// by msgID) when Enqueue returns.
func (b *Bus) Enqueue(ctx context.Context, subject, msgID string, data []byte) error {
	// Deduplicated by msgID, the publish is safe to send again across a
	// stream's election (fabric.go).
	err := acrossElection(ctx, func(ctx context.Context) error {
		_, err := b.JS.Publish(ctx, subject, data, jetstream.WithMsgID(msgID))
		return err
	})
	if err != nil {
		if apiErr := (*jetstream.APIError)(nil); errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStoreFailed {
			// The stream is full (its limits refuse new messages): the
			// caller may retry later; nothing was accepted.
			return gust.Errorf(gust.EUNAVAILABLE, "the queue is full (%s); retry later", apiErr.Description)
		}
		return fmt.Errorf("enqueue on %s: %w", subject, err)
	}
	return nil
}

// errCodeStoreFailed is nats-server's JSStreamStoreFailedF: a stream
// refused to store a message, e.g. past MaxBytes with DiscardNew.
const errCodeStoreFailed jetstream.ErrorCode = 10077

// delivery adapts a JetStream message to gust.Delivery.
type delivery struct {
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
}

func (d delivery) Data() []byte                    { return d.msg.Data() }
func (d delivery) Subject() string                 { return d.msg.Subject() }
func (d delivery) Header() map[string][]string     { return d.msg.Headers() }
func (d delivery) Attempt() int                    { return int(d.meta.NumDelivered) }
func (d delivery) Published() time.Time            { return d.meta.Timestamp }
func (d delivery) Ack() error                      { return d.msg.Ack() }
func (d delivery) Retry(delay time.Duration) error { return d.msg.NakWithDelay(delay) }
func (d delivery) InProgress() error               { return d.msg.InProgress() }

// Consume implements gust.Queue with a durable pull consumer. Deliveries
// are handed to fn in their own goroutines, never more than c.Max at once:
// the rest wait in the stream, which is the back-pressure. Consuming ends
// when stop is called or the bus closes; both wait for the deliveries in
// flight.
func (b *Bus) Consume(ctx context.Context, c gust.ConsumerSpec, fn func(gust.Delivery)) (func(), error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       c.AckWait,
		MaxAckPending: c.Max,
		MaxDeliver:    -1,
	}
	switch {
	case len(c.Filters) > 0:
		cfg.FilterSubjects = append([]string{c.Filter}, c.Filters...)
	case c.Filter != "":
		cfg.FilterSubject = c.Filter
	}
	if c.Adopt != "" {
		if old, err := b.JS.Consumer(ctx, c.Stream, c.Adopt); err == nil && old.CachedInfo().Config.FilterSubject == cfg.FilterSubject {
			cfg.Durable = c.Adopt
		}
	}
	cons, err := b.JS.CreateOrUpdateConsumer(ctx, c.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", c.Durable, c.Stream, err)
	}
	slots := make(chan struct{}, c.Max)
	cctx, err := cons.Messages(jetstream.PullMaxMessages(c.Max))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", c.Durable, err)
	}
	// ctx only bounds setting up: consuming ends through stop or when the
	// bus closes, and ending the loop stops the iterator, which is what
	// wakes a Next that waits for a message.
	loop, endLoop := context.WithCancel(context.WithoutCancel(ctx))
	unhook := context.AfterFunc(b.tasks.Context(), endLoop)
	context.AfterFunc(loop, cctx.Stop)
	done := make(chan struct{})
	started := b.tasks.Go(func(context.Context) {
		defer close(done)
		for {
			select {
			case slots <- struct{}{}:
			case <-loop.Done():
				return
			}
			msg, err := cctx.Next()
			if err != nil {
				<-slots
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) || loop.Err() != nil {
					return
				}
				b.logger.Warn("consume: next message", zap.String("consumer", c.Durable), zap.Error(err))
				select {
				case <-loop.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			meta, err := msg.Metadata()
			if err != nil {
				<-slots
				_ = msg.Term()
				continue
			}
			if !b.tasks.Go(func(context.Context) {
				defer func() { <-slots }()
				fn(delivery{msg: msg, meta: meta})
			}) {
				// The bus is closing: hand the message back for another
				// consumer (or the next run) at once.
				<-slots
				_ = msg.Nak()
				return
			}
		}
	})
	if !started {
		endLoop()
		unhook()
		return nil, fmt.Errorf("consume %s: %w", c.Durable, errClosed)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			endLoop()
			<-done
			unhook()
			// Wait for the deliveries in flight.
			for i := 0; i < cap(slots); i++ {
				slots <- struct{}{}
			}
		})
	}
	return stop, nil
}

// DeleteConsumer removes a durable consumer (for a function that is gone).
func (b *Bus) DeleteConsumer(ctx context.Context, stream, durable string) error {
	err := b.JS.DeleteConsumer(ctx, stream, durable)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	return nil
}

// Subscribe implements gust.Events.
func (b *Bus) Subscribe(subject, queue string, fn func(*gust.Message)) (func() error, error) {
	sub, err := b.NC.QueueSubscribe(subject, queue, func(m *nats.Msg) {
		if reservedSubject(m.Subject) || !subjectMatches(subject, m.Subject) {
			// Delivered by a push consumer onto this subscription, not
			// published on a trigger subject (guard.go).
			b.logger.Warn("dropped a message with a reserved subject", zap.String("subscription", subject), zap.String("subject", m.Subject))
			return
		}
		gm := &gust.Message{Subject: m.Subject, Data: m.Data, Header: m.Header}
		if answerableReply(m.Reply) {
			gm.Reply = m.Reply
			gm.Respond = func(data []byte, header map[string][]string) error {
				return m.RespondMsg(&nats.Msg{Data: data, Header: nats.Header(withoutNATSHeaders(header))})
			}
		} else if m.Reply != "" {
			b.logger.Warn("no answer to a reply subject that is not an inbox", zap.String("subject", m.Subject), zap.String("reply", m.Reply))
		}
		fn(gm)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	// Deliver a flood to the handler, which keeps its own bounded queue.
	_ = sub.SetPendingLimits(1<<20, 1<<30)
	if err := b.NC.Flush(); err != nil {
		return nil, err
	}
	return sub.Drain, nil
}

// Publish implements gust.Events.
func (b *Bus) Publish(subject string, data []byte, header map[string][]string) error {
	return b.NC.PublishMsg(&nats.Msg{Subject: subject, Data: data, Header: nats.Header(header)})
}

// DeadLetterStream keeps dead letters in a JetStream stream, one message
// per call on gust.dlq.<namespace>.<function>.
type DeadLetterStream struct{ b *Bus }

// NewDeadLetters returns the dead letters of the stream OpenAsync made.
func NewDeadLetters(b *Bus) *DeadLetterStream { return &DeadLetterStream{b: b} }

// Add implements gust.DeadLetters.
func (d *DeadLetterStream) Add(ctx context.Context, dl gust.DeadLetter) error {
	data, err := json.Marshal(dl)
	if err != nil {
		return err
	}
	subj := gust.SubjectDeadLetterPrefix + gust.FunctionKey(dl.Request.Namespace, dl.Request.Function)
	if _, err := d.b.JS.Publish(ctx, subj, data, jetstream.WithMsgID("dlq-"+dl.Request.CallID+"-"+fmt.Sprint(dl.Attempts))); err != nil {
		return fmt.Errorf("dead-letter %s: %w", dl.Request.CallID, err)
	}
	return nil
}

// scan calls fn for each dead letter matching the subject filter, oldest
// first, until fn returns false.
func (d *DeadLetterStream) scan(ctx context.Context, filter string, fn func(gust.DeadLetter) bool) error {
	s, err := d.b.JS.Stream(ctx, StreamDeadLetters)
	if err != nil {
		return fmt.Errorf("dead-letter stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs == 0 {
		return nil
	}
	// An ordered consumer reads the filtered messages in order without
	// state on the server.
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return err
	}
	for {
		ci, err := oc.Info(ctx)
		if err != nil {
			return err
		}
		if ci.NumPending == 0 {
			return nil
		}
		msg, err := oc.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			return err
		}
		var dl gust.DeadLetter
		if err := json.Unmarshal(msg.Data(), &dl); err != nil {
			continue
		}
		if meta, err := msg.Metadata(); err == nil {
			dl.Seq = meta.Sequence.Stream
		}
		if !fn(dl) {
			return nil
		}
	}
}

func dlqFilter(ns, fn string) string {
	switch {
	case ns == "" && fn == "":
		return gust.SubjectDeadLetterPrefix + ">"
	case ns == "":
		return gust.SubjectDeadLetterPrefix + "*." + fn
	case fn == "":
		return gust.SubjectDeadLetterPrefix + ns + ".*"
	}
	return gust.SubjectDeadLetterPrefix + ns + "." + fn
}

// List implements gust.DeadLetters.
func (d *DeadLetterStream) List(ctx context.Context, ns, fn string, limit int) ([]gust.DeadLetter, error) {
	out := []gust.DeadLetter{}
	err := d.scan(ctx, dlqFilter(ns, fn), func(dl gust.DeadLetter) bool {
		out = append(out, dl)
		return len(out) < limit
	})
	return out, err
}

// Get implements gust.DeadLetters.
func (d *DeadLetterStream) Get(ctx context.Context, callID string) (gust.DeadLetter, error) {
	var found *gust.DeadLetter
	err := d.scan(ctx, dlqFilter("", ""), func(dl gust.DeadLetter) bool {
		if dl.Request.CallID == callID {
			found = &dl
			return false
		}
		return true
	})
	if err != nil {
		return gust.DeadLetter{}, err
	}
	if found == nil {
		return gust.DeadLetter{}, fmt.Errorf("dead letter %s: %w", callID, gust.ErrNotFound)
	}
	return *found, nil
}

// Delete implements gust.DeadLetters.
func (d *DeadLetterStream) Delete(ctx context.Context, seq uint64) error {
	s, err := d.b.JS.Stream(ctx, StreamDeadLetters)
	if err != nil {
		return err
	}
	if err := s.DeleteMsg(ctx, seq); err != nil && !strings.Contains(err.Error(), "no message found") {
		return fmt.Errorf("delete dead letter %d: %w", seq, err)
	}
	return nil
}

// Purge implements gust.DeadLetters.
func (d *DeadLetterStream) Purge(ctx context.Context, ns, fn string) (int, error) {
	s, err := d.b.JS.Stream(ctx, StreamDeadLetters)
	if err != nil {
		return 0, err
	}
	n := 0
	if err := d.scan(ctx, dlqFilter(ns, fn), func(gust.DeadLetter) bool { n++; return true }); err != nil {
		return 0, err
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(dlqFilter(ns, fn))); err != nil {
		return 0, fmt.Errorf("purge dead letters: %w", err)
	}
	return n, nil
}
