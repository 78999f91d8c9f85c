package natsbus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/spool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// The metering stream: call records on SubjectMeterCalls, instance records
// on SubjectMeterInstances, several to a message (MeterFormatHeader). The
// billing store keeps a record once by its id, so a record published twice
// costs nothing but its bytes. (Workers before batches sent one record per
// message with its id as the message id; the stream's duplicate window is
// for them.)
const (
	StreamMeter           = "GUST_METER"
	SubjectMeterCalls     = "gust.meter.call"
	SubjectMeterInstances = "gust.meter.instance"
)

// EnsureMeterStream creates or updates the metering stream. Records are
// kept (retention 0: for ever) so that a billing store can be rebuilt by
// replaying them.
// DefaultMeterRetention is how long the metering stream keeps a record
// (`--meter-retention`): the billing store holds the records; the stream
// is what a new or rebuilt store is fed from.
const DefaultMeterRetention = 30 * 24 * time.Hour

// MeterMaxBytes bounds the metering stream's size on disk.
const MeterMaxBytes = 10 << 30

func EnsureMeterStream(ctx context.Context, b *Bus, retention time.Duration) error {
	err := b.ensureStream(ctx, jetstream.StreamConfig{
		Name:        StreamMeter,
		Description: "Gust metering records (one per call, one per instance life)",
		Subjects:    []string{"gust.meter.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      retention,
		// Full, the stream refuses new records rather than drop old ones
		// the billing store may not have yet: the workers' spools keep
		// them meanwhile (and say so in gust_meter_spool_bytes).
		MaxBytes:   MeterMaxBytes,
		Discard:    jetstream.DiscardNew,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("metering stream: %w", err)
	}
	return nil
}

// Meter is the gust.Meter of a worker: every record is first appended to a
// local spool (durable against the process being killed, and a buffer
// while NATS is away), then published to JetStream by a background loop
// that acknowledges it in the spool once the server has it.
type Meter struct {
	bus     *Bus
	spool   *spool.Spool
	logger  *zap.Logger
	metrics *metrics.Metrics

	bufs sync.Pool
	// ackWait bounds the wait for a round's acknowledgements; the records
	// of messages not acknowledged by then are sent again (the billing
	// store keeps each record once).
	ackWait time.Duration

	// syncWait, when positive, makes RecordCall return only once JetStream
	// has acknowledged the record, or syncWait has passed (see SetSync).
	syncWait time.Duration
	// stalled: a wait ran out and no batch has been acknowledged whole
	// since; calls do not wait then (NATS is away: each would pay the
	// whole wait), until the publisher gets through again.
	stalled atomic.Bool
	mu      sync.Mutex
	waiters map[uint64]chan struct{} // by spool sequence, guarded by mu

	cancel context.CancelFunc
	done   chan struct{}
}

var _ gust.Meter = (*Meter)(nil)

// SetSync makes RecordCall wait, up to wait, until JetStream has the
// record: the worker records a call before the caller sees the end of the
// answer, so an answered call then has its record in the cluster even if
// the worker's host is lost the next instant. Without it the record is in
// the local spool at once and in JetStream some milliseconds later: a
// worker killed in between publishes it when it starts again, and one
// whose host never comes back loses it. It costs the call one JetStream
// round trip (records of concurrent calls share it); a wait that runs out
// (NATS away) answers the call anyway and leaves the record in the spool,
// and later calls do not wait until a batch gets through again.
// Call it before Start.
func (m *Meter) SetSync(wait time.Duration) {
	m.syncWait = wait
	m.waiters = make(map[uint64]chan struct{})
}

// NewMeter returns a meter spooling into sp and publishing through b.
func NewMeter(b *Bus, sp *spool.Spool, m *metrics.Metrics, logger *zap.Logger) *Meter {
	return &Meter{
		bus: b, spool: sp, metrics: m, logger: logger.Named("meter"), ackWait: 10 * time.Second,
		bufs: sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }},
	}
}

// spooled records are "c <id> <json>" for calls and "i <id> <json>" for
// instances.
const (
	kindCall     = 'c'
	kindInstance = 'i'
)

// RecordCall implements gust.Meter.
func (m *Meter) RecordCall(rec *gust.CallRecord) {
	bp := m.bufs.Get().(*[]byte)
	b := append((*bp)[:0], kindCall, ' ')
	b = append(b, rec.CallID...)
	b = append(b, ' ')
	b = rec.AppendJSON(b)
	seq, ok := m.append(b, rec.CallID)
	*bp = b
	m.bufs.Put(bp)
	if ok && m.syncWait > 0 {
		m.waitAcked(seq)
	}
}

// waitAcked waits until the publisher has record seq acknowledged, or
// syncWait passes.
func (m *Meter) waitAcked(seq uint64) {
	if m.stalled.Load() {
		m.metrics.MeterUnsynced()
		return
	}
	ch := make(chan struct{})
	m.mu.Lock()
	m.waiters[seq] = ch
	m.mu.Unlock()
	// Registered first, checked second: a publisher that acknowledged seq
	// before the registration is seen here; one after it closes ch.
	if m.spool.Acked(seq) {
		m.forget(seq)
		return
	}
	t := time.NewTimer(m.syncWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		m.forget(seq)
		m.stalled.Store(true)
		m.metrics.MeterUnsynced()
	}
}

func (m *Meter) forget(seq uint64) {
	m.mu.Lock()
	delete(m.waiters, seq)
	m.mu.Unlock()
}

// wake releases the calls waiting for the records acked.
func (m *Meter) wake(acked []uint64) {
	if m.waiters == nil {
		return
	}
	m.mu.Lock()
	for _, q := range acked {
		if ch, ok := m.waiters[q]; ok {
			close(ch)
			delete(m.waiters, q)
		}
	}
	m.mu.Unlock()
}

// RecordInstance implements gust.Meter.
func (m *Meter) RecordInstance(rec *gust.InstanceRecord) {
	data, err := json.Marshal(rec)
	if err != nil {
		m.logger.Error("encode instance record", zap.Error(err))
		return
	}
	b := append([]byte{kindInstance, ' '}, rec.Instance...)
	b = append(append(b, ' '), data...)
	m.append(b, rec.Instance)
}

func (m *Meter) append(b []byte, id string) (uint64, bool) {
	seq, err := m.spool.AppendSeq(b)
	if err != nil {
		// Never silent: the record is lost, and an operator must know.
		m.logger.Error("metering record dropped", zap.String("invocation_id", id), zap.Error(err))
		m.metrics.MeterDropped(false)
		return 0, false
	}
	m.metrics.MeterSpooled()
	return seq, true
}

// Start runs the publishing loop until Close.
func (m *Meter) Start() {
	// The loop belongs to the meter, not to a caller: Close ends it.
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.done = make(chan struct{})
	if n, _ := m.spool.Len(); n > 0 {
		m.logger.Info("publishing metering records left from an earlier run", zap.Int("records", n))
		m.metrics.MeterBuffered(n)
	}
	go m.loop(ctx)
}

// Close publishes what it can until ctx ends, then stops. Records not
// published stay in the spool for the next run.
func (m *Meter) Close(ctx context.Context) error {
	if m.cancel == nil {
		return nil
	}
	for {
		if n, _ := m.spool.Len(); n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			n, _ := m.spool.Len()
			m.logger.Warn("metering records left in the spool for the next run", zap.Int("records", n))
			m.cancel()
			<-m.done
			return m.spool.Close()
		case <-time.After(10 * time.Millisecond):
		}
	}
	m.cancel()
	<-m.done
	return m.spool.Close()
}

// linger is how long the publisher lets records gather after the first
// one arrives: publishing them in bursts costs far fewer wake-ups and
// system calls (in the worker and in NATS) than one at a time, and keeps
// that background work from competing with calls for the CPU. At 3000
// records a second through spool, JetStream and a SQLite ingest in one
// process, 100 ms took 51 µs of CPU a record against 61 µs for 20 ms
// (medians of 4 runs each). The records are in the local spool meanwhile,
// safe from the process being killed; calls that wait for JetStream
// (SetSync) do not linger.
const linger = 100 * time.Millisecond

func (m *Meter) loop(ctx context.Context) {
	defer close(m.done)
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.spool.Notify():
		case <-time.After(time.Second): // retry what a failure left
		}
		// Calls wait for their records in sync mode: no lingering then;
		// records that arrive during a publish go together in the next.
		if m.syncWait == 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(linger):
			}
		}
		for ctx.Err() == nil {
			recs := m.spool.Take(meterTake)
			if len(recs) == 0 {
				break
			}
			failed := m.publish(ctx, recs)
			if len(failed) == 0 {
				backoff = 100 * time.Millisecond
				continue
			}
			m.spool.Requeue(failed)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// Metering messages: a message with the header MeterFormatHeader set to
// MeterFormatLines holds several records of its subject's kind, one JSON
// document per line; a message without it holds one record (as every
// message did before batches, and as the stream may still hold).
const (
	MeterFormatHeader = "Gust-Meter-Format"
	MeterFormatLines  = "lines"
)

// meterBatchBytes bounds the body of one metering message: a burst of
// records goes as one message (one publish, one stored message, one
// acknowledgement each way instead of one per record), well under the
// smallest max payload a NATS server is configured with (1 MiB by default;
// Gust's embedded server allows 8 MiB).
const meterBatchBytes = 128 << 10

// meterTake is how many spooled records one round of the publisher takes:
// several messages' worth, published together, their acknowledgements
// awaited together.
const meterTake = 4096

// meterBatch is one message being built: the records of one subject.
type meterBatch struct {
	subject string
	body    []byte
	recs    []int // indexes into the records taken
	future  jetstream.PubAckFuture
}

// publish sends recs in batches, one message per subject and up to
// meterBatchBytes, asynchronously, waits for their acknowledgements and
// returns the records whose message was not acknowledged. A record is
// acknowledged in the spool only once JetStream has acknowledged the
// message that holds it. Messages carry no message id: a batch sent again
// is stored again, and the billing store, keyed by call id, keeps each
// record once.
func (m *Meter) publish(ctx context.Context, recs []spool.Record) []spool.Record {
	var batches []*meterBatch
	open := map[string]*meterBatch{} // the batch being filled, by subject
	// A batch's body is made once at about its final size: the records'
	// bytes, up to the bound (a call record is some 300 bytes, and most
	// of a burst is calls).
	size := 0
	for _, r := range recs {
		size += len(r.Data)
	}
	size = min(size, meterBatchBytes)
	var dropped []uint64
	for i, r := range recs {
		subject, _, data, ok := splitSpooled(r.Data)
		if !ok {
			m.logger.Error("undecodable spooled metering record dropped", zap.ByteString("record", r.Data))
			dropped = append(dropped, r.Seq)
			m.metrics.MeterDropped(true)
			continue
		}
		b := open[subject]
		if b != nil && len(b.body)+1+len(data) > meterBatchBytes {
			b = nil
		}
		if b == nil {
			b = &meterBatch{subject: subject, body: make([]byte, 0, size)}
			open[subject] = b
			batches = append(batches, b)
		} else {
			b.body = append(b.body, '\n')
		}
		b.body = append(b.body, data...)
		b.recs = append(b.recs, i)
	}
	if len(dropped) > 0 {
		_ = m.spool.Ack(dropped...)
	}
	var firstErr error
	for _, b := range batches {
		msg := &nats.Msg{Subject: b.subject, Data: b.body, Header: nats.Header{MeterFormatHeader: []string{MeterFormatLines}}}
		f, err := m.bus.JS.PublishMsgAsync(msg)
		if err != nil {
			firstErr = err
			continue
		}
		b.future = f
	}
	// One deadline for every message, and one that stays expired: a
	// timer's channel fires once, so with it every future after the first
	// one to time out would be waited for without end. A publish whose
	// acknowledgement is lost (the stream's leader died with the reply
	// unsent, while this client stayed connected) never resolves its
	// future, and such losses come several at a time.
	wctx, cancel := context.WithTimeout(ctx, m.ackWait)
	defer cancel()
	var acked []uint64
	var failed []spool.Record
	for _, b := range batches {
		ok := false
		if b.future != nil {
			select {
			case <-b.future.Ok():
				ok = true
			case err := <-b.future.Err():
				firstErr = err
			case <-wctx.Done():
				if ctx.Err() == nil {
					firstErr = fmt.Errorf("no acknowledgement within %s", m.ackWait)
				}
			}
		}
		for _, i := range b.recs {
			if ok {
				acked = append(acked, recs[i].Seq)
			} else {
				failed = append(failed, recs[i])
			}
		}
	}
	if err := m.spool.Ack(acked...); err != nil {
		m.logger.Error("acknowledge spooled records", zap.Error(err))
	}
	m.wake(acked)
	if len(acked) > 0 && len(failed) == 0 {
		m.stalled.Store(false)
	}
	m.metrics.MeterPublished(len(acked))
	if firstErr != nil && ctx.Err() == nil {
		m.logger.Warn("metering records not published yet; kept in the spool", zap.Int("records", len(failed)), zap.Error(firstErr))
	}
	return failed
}

// splitRecord parses a spooled record into subject, record id and body.
func splitRecord(b []byte) (subject, id string, data []byte, ok bool) {
	subject, rid, data, ok := splitSpooled(b)
	if !ok {
		return "", "", nil, false
	}
	if subject == SubjectMeterInstances {
		return subject, "instance-" + string(rid), data, true
	}
	return subject, string(rid), data, true
}

// splitSpooled is splitRecord without copying the id, for the publisher,
// which sends the body only.
func splitSpooled(b []byte) (subject string, id, data []byte, ok bool) {
	if len(b) < 3 || b[1] != ' ' {
		return "", nil, nil, false
	}
	rest := b[2:]
	sp := bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return "", nil, nil, false
	}
	id, data = rest[:sp], rest[sp+1:]
	switch b[0] {
	case kindCall:
		return SubjectMeterCalls, id, data, true
	case kindInstance:
		return SubjectMeterInstances, id, data, true
	}
	return "", nil, nil, false
}

// Ingest feeds a billing store from the metering stream through a durable
// consumer. A message is acknowledged only after the store committed every
// record in it; the store ignores records it already has, so redelivery
// changes nothing.
type Ingest struct {
	bus     *Bus
	store   gust.BillingStore
	durable string
	metrics *metrics.Metrics
	logger  *zap.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

// NewIngest returns an ingest for store under the durable consumer name
// durable (one per store: each store gets every record).
func NewIngest(b *Bus, store gust.BillingStore, durable string, m *metrics.Metrics, logger *zap.Logger) *Ingest {
	return &Ingest{bus: b, store: store, durable: durable, metrics: m, logger: logger.Named("billing.ingest")}
}

// Start creates the consumer and starts consuming.
func (in *Ingest) Start(ctx context.Context) error {
	cfg := jetstream.ConsumerConfig{
		Durable: in.durable,
		// Each message is acknowledged on its own: acknowledging a fetch
		// by its last message (AckAll) would also acknowledge records an
		// earlier, killed run had fetched and not committed.
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// Short, so that records a killed earlier run had fetched but not
		// acknowledged come back within seconds of a restart; a batch
		// commits well within it, and a redelivered record changes
		// nothing.
		AckWait:       5 * time.Second,
		MaxAckPending: 20000,
	}
	cons, err := in.bus.JS.CreateOrUpdateConsumer(ctx, StreamMeter, cfg)
	if err != nil {
		// A consumer made by an older version with settings that cannot
		// change: make it anew. It starts from the beginning of the
		// stream; the store keeps what it has.
		in.logger.Warn("recreating the metering consumer", zap.String("consumer", in.durable), zap.Error(err))
		if derr := in.bus.JS.DeleteConsumer(ctx, StreamMeter, in.durable); derr == nil {
			cons, err = in.bus.JS.CreateOrUpdateConsumer(ctx, StreamMeter, cfg)
		}
	}
	if err != nil {
		return fmt.Errorf("metering consumer %s: %w", in.durable, err)
	}
	// Consuming outlives Start's ctx and ends in Close.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	in.cancel, in.done = cancel, make(chan struct{})
	go in.loop(cctx, cons)
	return nil
}

// Close stops consuming; the batch being stored finishes first.
func (in *Ingest) Close() {
	if in.cancel != nil {
		in.cancel()
		<-in.done
	}
}

func (in *Ingest) loop(ctx context.Context, cons jetstream.Consumer) {
	defer close(in.done)
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxBytes(ingestFetchBytes), jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			if ctx.Err() == nil {
				in.logger.Warn("fetch metering records", zap.Error(err))
				sleep(ctx, 500*time.Millisecond)
			}
			continue
		}
		var msgs []jetstream.Msg
		for msg := range batch.Messages() {
			msgs = append(msgs, msg)
		}
		if len(msgs) == 0 {
			continue
		}
		// The batch fetched is committed even if Close comes meanwhile:
		// Close waits for it, as documented.
		if err := in.store1(context.WithoutCancel(ctx), msgs); err != nil {
			// Not acknowledged: the batch comes back after the ack wait.
			in.logger.Error("store metering records; they will be redelivered", zap.Int("records", len(msgs)), zap.Error(err))
			sleep(ctx, time.Second)
		}
	}
}

// sleep waits for d or until ctx ends, so that Close does not wait out a
// back-off.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// ingestFetchBytes bounds what one fetch takes from the stream, and so one
// transaction of the billing store: a few thousand records in batches, or
// up to a thousand messages of one record (as older workers sent them).
// (FetchBytes alone would do, but it makes channels for a million
// messages, 32 MB, on every fetch.)
const ingestFetchBytes = 2 << 20

// store1 commits the records of msgs and then acknowledges the messages.
func (in *Ingest) store1(ctx context.Context, msgs []jetstream.Msg) error {
	// The calls of a fetch (thousands) go in one slice made at its size.
	n := 0
	for _, msg := range msgs {
		if msg.Subject() == SubjectMeterCalls {
			n += 1 + bytes.Count(msg.Data(), []byte{'\n'})
		}
	}
	calls := make([]gust.CallRecord, 0, n)
	var insts []gust.InstanceRecord
	stored := 0
	for _, msg := range msgs {
		data := msg.Data()
		format := ""
		if h := msg.Headers(); h != nil {
			format = h.Get(MeterFormatHeader)
		}
		switch format {
		case "", MeterFormatLines:
		default:
			in.logger.Error("metering message of an unknown format dropped", zap.String("subject", msg.Subject()), zap.String("format", format))
			in.metrics.MeterDropped(false)
			continue
		}
		// One record, or one per line.
		for more := true; more; {
			rec := data
			more = false
			if format == MeterFormatLines {
				if rec, data, more = bytes.Cut(data, []byte{'\n'}); len(rec) == 0 {
					continue
				}
			}
			var err error
			switch msg.Subject() {
			case SubjectMeterCalls:
				calls = append(calls, gust.CallRecord{})
				if err = calls[len(calls)-1].DecodeJSON(rec); err != nil {
					calls = calls[:len(calls)-1]
				}
			case SubjectMeterInstances:
				var r gust.InstanceRecord
				if err = json.Unmarshal(rec, &r); err == nil {
					insts = append(insts, r)
				}
			default:
				err = fmt.Errorf("unknown subject %s", msg.Subject())
			}
			if err != nil {
				in.logger.Error("undecodable metering record dropped", zap.String("subject", msg.Subject()), zap.ByteString("record", rec[:min(len(rec), 512)]), zap.Error(err))
				in.metrics.MeterDropped(false)
				continue
			}
			stored++
		}
	}
	if len(calls) > 0 {
		if err := in.store.AddCalls(ctx, calls); err != nil {
			return err
		}
	}
	if len(insts) > 0 {
		if err := in.store.AddInstances(ctx, insts); err != nil {
			return err
		}
	}
	for _, msg := range msgs {
		_ = msg.Ack()
	}
	in.metrics.MeterStored(stored)
	return nil
}

// Drain waits (until ctx ends) for the consumer to have taken in every
// record published so far.
func (in *Ingest) Drain(ctx context.Context) {
	for ctx.Err() == nil {
		cons, err := in.bus.JS.Consumer(ctx, StreamMeter, in.durable)
		if err != nil {
			return
		}
		info, err := cons.Info(ctx)
		if err != nil || info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
