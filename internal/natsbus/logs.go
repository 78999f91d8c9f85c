package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gustfaas/gust"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// The log stream keeps the lines the workers collect from their
// instances, one line per message on SubjectLogsPrefix + namespace + "." +
// function, after the instances are gone. It is bounded three ways, the
// oldest lines going first (docs/logs.md): by age, by total size, and by
// lines per function, so that one function that prints without end
// cannot push every other function's lines out.
const (
	StreamLogs        = "GUST_LOGS"
	SubjectLogsPrefix = "gust.logs."
	// LogsMaxAge is how long a line is kept.
	LogsMaxAge = 7 * 24 * time.Hour
	// LogsMaxBytes bounds the whole stream on disk.
	LogsMaxBytes = 1 << 30
	// LogsMaxPerFunction bounds the lines kept per function.
	LogsMaxPerFunction = 100_000
)

// logsMaxMsgSize is the largest message of the stream: a line of
// gust.MaxLogLine bytes of text, escaped, with its fields.
const logsMaxMsgSize = 8*gust.MaxLogLine + 4096

// LogSubject is the subject of the lines of function ns.name.
func LogSubject(ns, name string) string { return SubjectLogsPrefix + ns + "." + name }

// LogLimits bound the log stream; a zero field takes its default
// (LogsMaxAge, LogsMaxBytes, LogsMaxPerFunction).
type LogLimits struct {
	MaxAge         time.Duration
	MaxBytes       int64
	MaxPerFunction int64
}

func (l LogLimits) withDefaults() LogLimits {
	if l.MaxAge <= 0 {
		l.MaxAge = LogsMaxAge
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = LogsMaxBytes
	}
	if l.MaxPerFunction <= 0 {
		l.MaxPerFunction = LogsMaxPerFunction
	}
	return l
}

// EnsureLogStream creates or updates the log stream with lim.
func EnsureLogStream(ctx context.Context, b *Bus, lim LogLimits) error {
	lim = lim.withDefaults()
	err := b.ensureStream(ctx, jetstream.StreamConfig{
		Name:              StreamLogs,
		Description:       "Gust function logs (one line per message, per function subject)",
		Subjects:          []string{SubjectLogsPrefix + ">"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            lim.MaxAge,
		MaxBytes:          lim.MaxBytes,
		MaxMsgsPerSubject: lim.MaxPerFunction,
		MaxMsgSize:        logsMaxMsgSize,
	})
	if err != nil {
		return fmt.Errorf("log stream: %w", err)
	}
	return nil
}

// Logs is the log stream as a worker writes it (gust.LogSink) and a
// gateway reads it (gust.LogReader).
type Logs struct {
	bus     *Bus
	logger  *zap.Logger
	dropped atomic.Uint64
	warned  atomic.Int64 // unix seconds of the last warning about drops
}

var (
	_ gust.LogSink   = (*Logs)(nil)
	_ gust.LogReader = (*Logs)(nil)
)

// OpenLogs binds to the log stream; the provisioning connection creates
// it, or updates it to lim.
func OpenLogs(ctx context.Context, b *Bus, lim LogLimits, logger *zap.Logger) (*Logs, error) {
	if err := EnsureLogStream(ctx, b, lim); err != nil {
		return nil, err
	}
	return &Logs{bus: b, logger: logger.Named("logs")}, nil
}

// AddLog implements gust.LogSink. The line is published without waiting
// for JetStream's acknowledgement (a plain NATS publish the stream
// captures): a log line is worth neither a round trip nor a retry, and
// while NATS is away the client buffers a few MiB and then drops. Drops
// are counted and reported at most once a minute.
func (l *Logs) AddLog(line *gust.LogLine) {
	data, err := json.Marshal(line)
	if err == nil {
		err = l.bus.NC.Publish(LogSubject(line.Namespace, line.Name), data)
	}
	if err == nil {
		return
	}
	n := l.dropped.Add(1)
	now := time.Now().Unix()
	if last := l.warned.Load(); now-last >= 60 && l.warned.CompareAndSwap(last, now) {
		l.logger.Warn("function log lines dropped", zap.Uint64("dropped_total", n), zap.Error(err))
	}
}

// Dropped is the number of lines AddLog could not publish.
func (l *Logs) Dropped() uint64 { return l.dropped.Load() }

// sinceSlack widens a query's start on the stream's clock: the stream
// stamps a line when it stores it, a little after the line's own time.
const sinceSlack = 5 * time.Second

// backlogWait is how long ReadLogs waits for the next stored line
// before it asks the consumer whether any is still pending.
const backlogWait = 2 * time.Second

// ReadLogs implements gust.LogReader with an ordered consumer (no state
// kept on the server) filtered to the function's subject. With a Tail,
// the lines stored when the query starts are read through a ring of Tail
// lines and only the last ones are delivered; the rest stream as they
// come.
func (l *Logs) ReadLogs(ctx context.Context, q gust.LogQuery, fn func(*gust.LogLine) error) error {
	s, err := l.bus.JS.Stream(ctx, StreamLogs)
	if err != nil {
		return fmt.Errorf("log stream: %w", err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{LogSubject(q.Namespace, q.Name)}}
	if !q.Since.IsZero() {
		start := q.Since.Add(-sinceSlack)
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &start
	}
	oc, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("read logs: %w", err)
	}
	info, err := oc.Info(ctx)
	if err != nil {
		return fmt.Errorf("read logs: %w", err)
	}
	backlog := info.NumPending > 0
	if !backlog && !q.Follow {
		return nil
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("read logs: %w", err)
	}
	defer it.Stop()
	defer context.AfterFunc(ctx, it.Stop)()
	tail := newLogRing(q.Tail)
	for {
		var (
			msg jetstream.Msg
			err error
		)
		if backlog {
			// The stream's limits may delete the lines still pending
			// (a function printing past its bound while we read): then
			// no message says "none pending" and Next would wait for
			// ever. A quiet backlogWait asks the consumer instead.
			msg, err = it.Next(jetstream.NextMaxWait(backlogWait))
			if errors.Is(err, nats.ErrTimeout) {
				info, ierr := oc.Info(ctx)
				if ierr != nil {
					return fmt.Errorf("read logs: %w", ierr)
				}
				if info.NumPending > 0 {
					continue
				}
				backlog = false
				if err := tail.each(fn); err != nil {
					return err
				}
				if !q.Follow {
					return nil
				}
				continue
			}
		} else {
			msg, err = it.Next()
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("read logs: %w", err)
		}
		var line gust.LogLine
		if json.Unmarshal(msg.Data(), &line) == nil && logMatches(&q, &line) {
			if backlog && tail != nil {
				tail.add(&line)
			} else if err := fn(&line); err != nil {
				return err
			}
		}
		if !backlog {
			continue
		}
		if meta, err := msg.Metadata(); err == nil && meta.NumPending > 0 {
			continue
		}
		// Caught up with what was stored when the query began.
		backlog = false
		if err := tail.each(fn); err != nil {
			return err
		}
		if !q.Follow {
			return nil
		}
	}
}

// logMatches is the part of a query the subject filter does not do.
func logMatches(q *gust.LogQuery, line *gust.LogLine) bool {
	if q.Instance != "" && line.Instance != q.Instance {
		return false
	}
	return q.Since.IsZero() || !line.Timestamp.Before(q.Since)
}

// logRing keeps the last n lines given to it; a nil ring keeps none
// (no tail: lines go straight through). It grows as lines come, up to n.
type logRing struct {
	lines   []*gust.LogLine
	n, next int
}

func newLogRing(n int) *logRing {
	if n <= 0 {
		return nil
	}
	return &logRing{n: n}
}

func (r *logRing) add(line *gust.LogLine) {
	if len(r.lines) < r.n {
		r.lines = append(r.lines, line)
		return
	}
	r.lines[r.next] = line
	r.next = (r.next + 1) % r.n
}

// each calls fn on the lines kept, oldest first, and empties the ring.
func (r *logRing) each(fn func(*gust.LogLine) error) error {
	if r == nil {
		return nil
	}
	for i := range r.lines {
		if err := fn(r.lines[(r.next+i)%len(r.lines)]); err != nil {
			return err
		}
	}
	r.lines, r.next = nil, 0
	return nil
}
