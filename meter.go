package gust

import (
	"context"
	"time"
)

// Call triggers.
const (
	TriggerHTTP  = "http"
	TriggerAsync = "async"
	TriggerEvent = "event"
)

// Call outcomes.
const (
	OutcomeOK       = "ok"       // the function answered (any status below 500 it chose, or 5xx it chose)
	OutcomeError    = "error"    // the function answered with a 5xx status
	OutcomeTimeout  = "timeout"  // no answer within the function's timeout
	OutcomeCrashed  = "crashed"  // the connection broke or the answer was not HTTP
	OutcomeRejected = "rejected" // the call never ran: no instance could be had, body too large
)

// CallRecord is the metering record of one call, made by the worker that
// ran it. Times are UTC; durations are nanoseconds. It is published to
// JetStream with CallID as the message id and stored keyed by CallID.
type CallRecord struct {
	CallID    string    `json:"callId"`
	Namespace string    `json:"namespace"`
	Function  string    `json:"function"`
	Version   uint64    `json:"version"`
	Image     string    `json:"image"`
	Worker    string    `json:"worker"`
	Instance  string    `json:"instance,omitempty"`
	Trigger   string    `json:"trigger"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	// DurationNs is End - Start: from the request leaving the worker for
	// the instance until the last byte of the answer was read (for calls
	// that ran), or the time spent waiting (for rejected calls).
	DurationNs int64 `json:"durationNs"`
	// BilledNs is DurationNs rounded up to the billing granularity; 0 for
	// rejected calls, which never ran.
	BilledNs  int64 `json:"billedNs"`
	MemoryMiB int64 `json:"memoryMiB"`
	ColdStart bool  `json:"coldStart"`
	// InitNs is how long the instance took from container start until
	// ready, for the call that waited for it.
	InitNs   int64  `json:"initNs,omitempty"`
	Status   int    `json:"status"`
	Outcome  string `json:"outcome"`
	BytesIn  int64  `json:"bytesIn"`
	BytesOut int64  `json:"bytesOut"`
}

// InstanceRecord is the metering record of one instance's life, made when
// it stops: the capacity a function held, for billing by held capacity.
type InstanceRecord struct {
	Instance  string    `json:"instance"`
	Namespace string    `json:"namespace"`
	Function  string    `json:"function"`
	Worker    string    `json:"worker"`
	MemoryMiB int64     `json:"memoryMiB"`
	Ready     time.Time `json:"ready"`
	Stopped   time.Time `json:"stopped"`
}

// Meter takes the records a worker makes. Record must be cheap and must
// not block the call for long: it runs on the invoke path, before the
// caller sees the end of the answer, so that an answered call always has
// its record.
type Meter interface {
	RecordCall(rec *CallRecord)
	RecordInstance(rec *InstanceRecord)
}

// BilledDuration rounds d up to a multiple of granularity (at least one
// granule for a call that ran at all).
func BilledDuration(d, granularity time.Duration) time.Duration {
	if granularity <= 0 || d <= 0 {
		return max(d, 0)
	}
	return (d + granularity - 1) / granularity * granularity
}

// CallFilter selects call records.
type CallFilter struct {
	Namespace string
	Function  string
	From, To  time.Time // [From, To) on Start; zero means open
	Outcome   string
	Limit     int
	// Cursor continues a listing where the previous page ended.
	Cursor string
}

// BillingStore keeps metering records and answers reports. Adding a record
// twice (same CallID or Instance) changes nothing.
type BillingStore interface {
	// AddCalls commits a batch of call records atomically.
	AddCalls(ctx context.Context, recs []CallRecord) error
	// AddInstances commits a batch of instance records atomically.
	AddInstances(ctx context.Context, recs []InstanceRecord) error
	// Call returns one record, or an error wrapping ErrNotFound.
	Call(ctx context.Context, callID string) (CallRecord, error)
	// Calls lists records newest first and returns the cursor of the next
	// page ("" at the end).
	Calls(ctx context.Context, f CallFilter) ([]CallRecord, string, error)
	// Usage sums the calls and instance time matching f, grouped by
	// groupBy (one of the GroupBy* values).
	Usage(ctx context.Context, f CallFilter, groupBy string) ([]UsageRow, []InstanceUsageRow, error)
}

// Report groupings.
const (
	GroupByNamespace = "namespace"
	GroupByFunction  = "function"
	GroupByHour      = "hour"
	GroupByDay       = "day"
	GroupByMonth     = "month"
)

// UsageRow is the raw usage of one group in one namespace (prices may
// differ per namespace): counts and integer sums, no money. Pricing turns
// it into costs.
type UsageRow struct {
	Group      string `json:"group"`
	Namespace  string `json:"namespace"`
	Requests   int64  `json:"requests"`
	Errors     int64  `json:"errors"` // outcome other than ok
	ColdStarts int64  `json:"coldStarts"`
	DurationNs int64  `json:"durationNs"`
	BilledNs   int64  `json:"billedNs"`
	// MiBMicros is Σ memory MiB × billed µs: GB-seconds without rounding
	// (billing granularity is a whole number of µs).
	MiBMicros int64 `json:"mibMicros"`
}

// InstanceUsageRow is the held capacity of one function at one memory
// size: Σ (stopped - ready).
type InstanceUsageRow struct {
	Namespace string `json:"namespace"`
	Function  string `json:"function"`
	MemoryMiB int64  `json:"memoryMiB"`
	Instances int64  `json:"instances"`
	HeldNs    int64  `json:"heldNs"`
}
