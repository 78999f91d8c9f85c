package gust

import (
	"context"
	"net/http"
	"time"
)

// Annotations a function uses to declare event triggers.
const (
	// AnnotationTopic lists the core-NATS subjects that trigger the
	// function, comma-separated, wildcards allowed (as OpenFaaS's event
	// connectors read it).
	AnnotationTopic = "topic"
	// AnnotationStream names a JetStream stream whose messages trigger the
	// function durably: Gust keeps a durable consumer per function and
	// acknowledges a message only after its call succeeded or was
	// dead-lettered.
	AnnotationStream = "gust.stream"
	// AnnotationStreamFilter optionally narrows AnnotationStream to a
	// subject filter.
	AnnotationStreamFilter = "gust.stream-filter"
)

// Retry labels of async and durable-event calls, with their defaults.
const (
	LabelRetryAttempts = "gust.retry.max-attempts" // 3
	LabelRetryMinDelay = "gust.retry.min-delay"    // 1s
	LabelRetryMaxDelay = "gust.retry.max-delay"    // 1m
	LabelRetryOn       = "gust.retry.on"           // "5xx,429,timeout,crash"
	LabelRetryMaxAge   = "gust.retry.max-age"      // 24h
)

// Async headers.
const (
	HeaderCallbackURL    = "X-Callback-Url"
	HeaderIdempotencyKey = "X-Idempotency-Key"
	HeaderFunctionStatus = "X-Function-Status"
	HeaderFunctionName   = "X-Function-Name"
	// HeaderAttempt is the attempt number (1, 2, ...) of an async or
	// event call, passed to the function.
	HeaderAttempt = "X-Gust-Attempt"
)

// RetryPolicy says how async and durable-event calls are retried.
type RetryPolicy struct {
	MaxAttempts int
	MinDelay    time.Duration
	MaxDelay    time.Duration
	// On5xx, On429, OnTimeout and OnCrash select which failures retry.
	On5xx, On429, OnTimeout, OnCrash bool
	// MaxAge is how old a call may get before it is dead-lettered
	// instead of tried again.
	MaxAge time.Duration
}

// Retryable reports whether a call that ended with status and outcome is
// tried again under p.
func (p RetryPolicy) Retryable(status int, outcome string) bool {
	switch {
	case outcome == OutcomeTimeout:
		return p.OnTimeout
	case outcome == OutcomeCrashed:
		return p.OnCrash
	case status == http.StatusTooManyRequests:
		return p.On429
	case status >= 500:
		return p.On5xx
	}
	return false
}

// Backoff is the delay before attempt n+1 after attempt n failed:
// exponential from MinDelay, capped at MaxDelay, with full jitter drawn by
// rnd (a number in [0, 1)) over its upper half so it never collapses to 0.
func (p RetryPolicy) Backoff(n int, rnd float64) time.Duration {
	d := p.MinDelay
	for i := 1; i < n && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	return d/2 + time.Duration(rnd*float64(d/2))
}

// AsyncRequest is an accepted async call as it waits in the queue.
type AsyncRequest struct {
	CallID      string      `json:"callId"`
	Namespace   string      `json:"namespace"`
	Function    string      `json:"function"`
	Method      string      `json:"method"`
	Path        string      `json:"path"`
	Query       string      `json:"query,omitempty"`
	Header      http.Header `json:"header,omitempty"`
	Body        []byte      `json:"body,omitempty"`
	CallbackURL string      `json:"callbackUrl,omitempty"`
	// CallbackLoopback says the admin made the call: its callback may
	// go to the gateway host's loopback, except Gust's own listeners.
	CallbackLoopback bool      `json:"callbackLoopback,omitempty"`
	Enqueued         time.Time `json:"enqueued"`
	// Trigger is async, or event for durable-event calls dead-lettered
	// and redriven through the async queue.
	Trigger string `json:"trigger"`
	// AttemptOffset counts the attempts made before a redrive, so the
	// attempts after it are numbered on (and metered under ids of their
	// own).
	AttemptOffset int `json:"attemptOffset,omitempty"`
	// NoStatus says the gateway stored no status when it enqueued the
	// call (one release did so, and such calls may still be queued):
	// until an attempt starts, the call's message, waiting in the queue
	// under its own subject (SubjectAsyncPrefix+"NS.FN.ID"), is its
	// "queued" status. The first attempt creates the status ("running")
	// only if none exists: one write that is also the check that no
	// attempt ran before (a message coming back after a crash).
	NoStatus bool `json:"noStatus,omitempty"`
	// StatusRev is the revision of the "queued" status written just
	// before the call was enqueued (by the gateway, or by a redrive), 0
	// when none is known. The dispatcher marks the call running only if
	// its status is still at that revision: again one conditional write
	// for the check and the "running" status. When either write fails,
	// the dispatcher reads the status and decides as without them.
	StatusRev uint64 `json:"statusRev,omitempty"`
}

// Async call states.
const (
	AsyncQueued       = "queued"
	AsyncRunning      = "running"
	AsyncSucceeded    = "succeeded"
	AsyncFailed       = "failed" // an attempt failed; another will follow
	AsyncDeadLettered = "dead-lettered"
)

// AsyncStatus is the state of one async call.
type AsyncStatus struct {
	CallID     string    `json:"callId"`
	Namespace  string    `json:"namespace"`
	Function   string    `json:"function"`
	State      string    `json:"state"`
	Attempts   int       `json:"attempts"`
	LastStatus int       `json:"lastStatus,omitempty"`
	LastError  string    `json:"lastError,omitempty"`
	Enqueued   time.Time `json:"enqueued"`
	Updated    time.Time `json:"updated"`
	// NextAttempt is when a failed call is tried again.
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
}

// DeadLetter is a call that exhausted its attempts (or its age).
type DeadLetter struct {
	Request   AsyncRequest `json:"request"`
	Attempts  int          `json:"attempts"`
	LastError string       `json:"lastError"`
	Status    int          `json:"lastStatus,omitempty"`
	Failed    time.Time    `json:"failed"`
	Seq       uint64       `json:"seq"` // position in the dead-letter stream
}

// Delivery is one message handed to a queue consumer.
type Delivery interface {
	Subject() string
	Header() map[string][]string
	Data() []byte
	// Attempt is 1 for the first delivery, 2 for the next, ...
	Attempt() int
	// Published is when the message entered the queue.
	Published() time.Time
	Ack() error
	// Retry asks for the message again after delay.
	Retry(delay time.Duration) error
	// InProgress tells the queue the message is still being worked on.
	InProgress() error
}

// Queue is a durable work queue (JetStream in production).
type Queue interface {
	// Enqueue stores data under subject; msgID deduplicates.
	Enqueue(ctx context.Context, subject, msgID string, data []byte) error
	// Consume delivers the messages of stream matching filter to fn
	// through the durable consumer durable, at most max at a time
	// unacknowledged, each given ackWait before it is delivered again. It
	// returns once consuming started; stop ends it.
	Consume(ctx context.Context, c ConsumerSpec, fn func(Delivery)) (stop func(), err error)
	// DeleteConsumer removes a durable consumer; a missing one is not an
	// error.
	DeleteConsumer(ctx context.Context, stream, durable string) error
}

// ConsumerSpec describes a durable queue consumer.
type ConsumerSpec struct {
	Stream  string
	Durable string
	// Adopt is an earlier name of this consumer: when a consumer of that
	// name stands on the stream with this Filter, it is consumed through
	// instead of Durable, so its position is kept. With another filter it
	// belongs to someone else and is left alone.
	Adopt  string
	Filter string
	// Filters are more subjects the consumer reads besides Filter.
	Filters []string
	Max     int
	AckWait time.Duration
}

// Message is one core-NATS message given to an event trigger.
type Message struct {
	Subject string
	Data    []byte
	Header  map[string][]string
	// Reply is the subject to answer on, for request/reply; Respond
	// answers it.
	Reply   string
	Respond func(data []byte, header map[string][]string) error
}

// Events is the core-NATS side of event triggers.
type Events interface {
	// Subscribe calls fn for each message on subject, shared in queue
	// group queue so several subscribers never run one message twice.
	Subscribe(subject, queue string, fn func(*Message)) (stop func() error, err error)
	// Publish sends data on subject.
	Publish(subject string, data []byte, header map[string][]string) error
}

// DeadLetters keeps calls that ran out of attempts.
type DeadLetters interface {
	// Add stores a dead letter.
	Add(ctx context.Context, d DeadLetter) error
	// List returns dead letters, oldest first, of one function (or all
	// when fn is empty) in namespace ns (or all when empty), at most limit.
	List(ctx context.Context, ns, fn string, limit int) ([]DeadLetter, error)
	// Get returns the dead letter of a call, or an error wrapping
	// ErrNotFound.
	Get(ctx context.Context, callID string) (DeadLetter, error)
	// Delete removes one dead letter.
	Delete(ctx context.Context, seq uint64) error
	// Purge removes the dead letters of a function (all when fn is
	// empty) and returns how many.
	Purge(ctx context.Context, ns, fn string) (int, error)
}

// Subjects of the async queue and the dead-letter stream; the function
// key follows.
const (
	SubjectAsyncPrefix      = "gust.async."
	SubjectDeadLetterPrefix = "gust.dlq."
)
