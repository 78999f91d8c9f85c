package gust

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Call triggers.
const (
	TriggerHTTP  = "http"
	TriggerAsync = "async"
	TriggerEvent = "event"
)

// Call outcomes.
const (
	OutcomeOK       = "ok"       // the function answered with a status below 500
	OutcomeError    = "error"    // the function answered with a 5xx status
	OutcomeTimeout  = "timeout"  // no answer within the function's timeout
	OutcomeCrashed  = "crashed"  // the connection broke or the answer was not HTTP
	OutcomeRejected = "rejected" // the call never ran: no instance could be had, body too large
)

// CallRecord is the metering record of one call, made by the worker that
// ran it. Times are UTC; durations are nanoseconds. It is published to
// JetStream with CallID as the message id and stored keyed by CallID.
type CallRecord struct {
	// CallID is Gust's own id of the call, unique per call (and per
	// attempt of an async call): the key of its record.
	CallID string `json:"callId"`
	// CallerID is the X-Call-Id the caller sent, if it sent one; a
	// caller's id need not be unique, so it is not the key.
	CallerID  string    `json:"callerId,omitempty"`
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

// AttemptID names the record of one attempt of a call: the call id for
// the first attempt, "ID~N" for the Nth after it. The function sees the
// call id every time; each attempt is a call of its own on the record.
func AttemptID(callID string, attempt int) string {
	if attempt <= 1 {
		return callID
	}
	return callID + "~" + strconv.Itoa(attempt)
}

// SplitAttemptID is the inverse of AttemptID: "ID~N" gives ID and N, any
// other id itself and 1.
func SplitAttemptID(id string) (callID string, attempt int) {
	for i := len(id) - 1; i > 0; i-- {
		if id[i] == '~' {
			n, err := strconv.Atoi(id[i+1:])
			if err != nil || n < 2 || id[i+1] == '0' {
				return id, 1
			}
			return id[:i], n
		}
	}
	return id, 1
}

// RejectedCall is the record of a call of fn that never ran (no instance,
// no worker, a body over the limit): it waited from arrived until now,
// answered status, and bills nothing.
func RejectedCall(fn *Function, callID, trigger string, arrived time.Time, status int) CallRecord {
	d := time.Since(arrived)
	return CallRecord{
		CallID: callID, Namespace: fn.Spec.Namespace, Function: fn.Spec.Service, Version: fn.Version,
		Image: fn.Spec.Image, Trigger: trigger, Start: arrived.UTC(), End: arrived.Add(d).UTC(),
		DurationNs: int64(d), Status: status, Outcome: OutcomeRejected,
	}
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
	// PausedMs is how much of the time from Ready to Stopped the instance
	// spent paused (the paused tier: frozen, it holds its memory but
	// uses no CPU), in milliseconds.
	PausedMs int64 `json:"pausedMs,omitempty"`
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

// PruningStore is a BillingStore that deletes raw call records past an
// age (retention) while keeping their rollups, from which reports over
// the pruned range still answer, at the granularity of whole hours.
type PruningStore interface {
	BillingStore
	// Prune deletes the call records that started before the hour that
	// holds before, in small transactions so that ingest goes on, and
	// returns how many it deleted.
	Prune(ctx context.Context, before time.Time) (int64, error)
	// RawFrom returns the start of the first hour from which call
	// records are all kept: earlier ones were pruned. It is the zero
	// time when none were.
	RawFrom(ctx context.Context) (time.Time, error)
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
// size: Σ (stopped - ready), and the part of it spent paused.
type InstanceUsageRow struct {
	Namespace string `json:"namespace"`
	Function  string `json:"function"`
	MemoryMiB int64  `json:"memoryMiB"`
	Instances int64  `json:"instances"`
	HeldNs    int64  `json:"heldNs"`
	// PausedNs is the part of HeldNs the instances spent paused (holding
	// memory, using no CPU): Σ PausedMs in nanoseconds, each record's at
	// most its own held time (internal/billing's PausedNs).
	PausedNs int64 `json:"pausedNs"`
}

// AppendJSON appends r as JSON (the same document encoding/json makes of
// it) to b. It allocates nothing beyond growing b: it runs once per call on
// the invoke path.
func (r *CallRecord) AppendJSON(b []byte) []byte {
	b = append(b, `{"callId":`...)
	b = appendJSONString(b, r.CallID)
	if r.CallerID != "" {
		b = append(b, `,"callerId":`...)
		b = appendJSONString(b, r.CallerID)
	}
	b = append(b, `,"namespace":`...)
	b = appendJSONString(b, r.Namespace)
	b = append(b, `,"function":`...)
	b = appendJSONString(b, r.Function)
	b = append(b, `,"version":`...)
	b = strconv.AppendUint(b, r.Version, 10)
	b = append(b, `,"image":`...)
	b = appendJSONString(b, r.Image)
	b = append(b, `,"worker":`...)
	b = appendJSONString(b, r.Worker)
	if r.Instance != "" {
		b = append(b, `,"instance":`...)
		b = appendJSONString(b, r.Instance)
	}
	b = append(b, `,"trigger":`...)
	b = appendJSONString(b, r.Trigger)
	b = append(b, `,"start":"`...)
	b = r.Start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","end":"`...)
	b = r.End.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","durationNs":`...)
	b = strconv.AppendInt(b, r.DurationNs, 10)
	b = append(b, `,"billedNs":`...)
	b = strconv.AppendInt(b, r.BilledNs, 10)
	b = append(b, `,"memoryMiB":`...)
	b = strconv.AppendInt(b, r.MemoryMiB, 10)
	b = append(b, `,"coldStart":`...)
	b = strconv.AppendBool(b, r.ColdStart)
	if r.InitNs != 0 {
		b = append(b, `,"initNs":`...)
		b = strconv.AppendInt(b, r.InitNs, 10)
	}
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, `,"outcome":`...)
	b = appendJSONString(b, r.Outcome)
	b = append(b, `,"bytesIn":`...)
	b = strconv.AppendInt(b, r.BytesIn, 10)
	b = append(b, `,"bytesOut":`...)
	b = strconv.AppendInt(b, r.BytesOut, 10)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, everything else as is (valid UTF-8 is valid
// JSON; invalid bytes are replaced, as encoding/json does).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
			i++
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			i++
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
		}
	}
	return append(b, '"')
}

// DecodeJSON sets r to the record the JSON document b holds, as
// json.Unmarshal does into a zero record, errors included. Documents in
// AppendJSON's form (no spaces, no escapes, fields known by their exact
// names) are decoded without reflection: the billing ingest decodes every
// record of every call, and encoding/json costs several times as much.
// Any other document goes to encoding/json.
func (r *CallRecord) DecodeJSON(b []byte) error {
	*r = CallRecord{}
	if r.decodeFast(b) {
		return nil
	}
	*r = CallRecord{}
	return json.Unmarshal(b, r)
}

// decodeFast decodes a document in AppendJSON's form and says whether b
// was one; if not, r is left half set.
func (r *CallRecord) decodeFast(b []byte) bool {
	if len(b) < 2 || b[0] != '{' {
		return false
	}
	if b[1] == '}' {
		return len(b) == 2
	}
	i := 1
	for {
		key, j, ok := fastJSONString(b, i)
		if !ok || j >= len(b) || b[j] != ':' {
			return false
		}
		i = j + 1
		var n int64
		switch string(key) {
		case "callId":
			r.CallID, i, ok = fastJSONText(b, i)
		case "callerId":
			r.CallerID, i, ok = fastJSONText(b, i)
		case "namespace":
			r.Namespace, i, ok = fastJSONText(b, i)
		case "function":
			r.Function, i, ok = fastJSONText(b, i)
		case "version":
			if i < len(b) && b[i] == '-' {
				return false
			}
			var u uint64
			var digits []byte
			if digits, i, ok = fastJSONDigits(b, i); ok {
				var err error
				u, err = strconv.ParseUint(string(digits), 10, 64)
				ok = err == nil
			}
			r.Version = u
		case "image":
			r.Image, i, ok = fastJSONText(b, i)
		case "worker":
			r.Worker, i, ok = fastJSONText(b, i)
		case "instance":
			r.Instance, i, ok = fastJSONText(b, i)
		case "trigger":
			r.Trigger, i, ok = fastJSONText(b, i)
		case "start":
			i, ok = fastJSONTime(b, i, &r.Start)
		case "end":
			i, ok = fastJSONTime(b, i, &r.End)
		case "durationNs":
			r.DurationNs, i, ok = fastJSONInt(b, i)
		case "billedNs":
			r.BilledNs, i, ok = fastJSONInt(b, i)
		case "memoryMiB":
			r.MemoryMiB, i, ok = fastJSONInt(b, i)
		case "coldStart":
			switch {
			case bytes.HasPrefix(b[i:], []byte("true")):
				r.ColdStart, i = true, i+4
			case bytes.HasPrefix(b[i:], []byte("false")):
				r.ColdStart, i = false, i+5
			default:
				return false
			}
		case "initNs":
			r.InitNs, i, ok = fastJSONInt(b, i)
		case "status":
			n, i, ok = fastJSONInt(b, i)
			r.Status = int(n)
			ok = ok && int64(r.Status) == n
		case "outcome":
			r.Outcome, i, ok = fastJSONText(b, i)
		case "bytesIn":
			r.BytesIn, i, ok = fastJSONInt(b, i)
		case "bytesOut":
			r.BytesOut, i, ok = fastJSONInt(b, i)
		default:
			return false
		}
		if !ok || i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return i+1 == len(b)
		default:
			return false
		}
	}
}

// fastJSONString returns the content of the JSON string at b[i] and the
// index past it, if it is printable ASCII without escapes.
func fastJSONString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return nil, i, false
		}
	}
	return nil, i, false
}

// fastJSONText is fastJSONString as a Go string; the values metering
// repeats on every record are shared, not copied.
func fastJSONText(b []byte, i int) (string, int, bool) {
	s, j, ok := fastJSONString(b, i)
	if !ok {
		return "", i, false
	}
	switch string(s) {
	case "":
		return "", j, true
	case TriggerHTTP:
		return TriggerHTTP, j, true
	case TriggerAsync:
		return TriggerAsync, j, true
	case TriggerEvent:
		return TriggerEvent, j, true
	case OutcomeOK:
		return OutcomeOK, j, true
	case OutcomeError:
		return OutcomeError, j, true
	case OutcomeTimeout:
		return OutcomeTimeout, j, true
	case OutcomeCrashed:
		return OutcomeCrashed, j, true
	case OutcomeRejected:
		return OutcomeRejected, j, true
	}
	return string(s), j, true
}

// fastJSONDigits returns the JSON integer at b[i] (an optional minus, no
// leading zero, no fraction or exponent) and the index past it.
func fastJSONDigits(b []byte, i int) ([]byte, int, bool) {
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	d := j
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == d || b[d] == '0' && j-d > 1 {
		return nil, i, false
	}
	if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return nil, i, false
	}
	return b[i:j], j, true
}

func fastJSONInt(b []byte, i int) (int64, int, bool) {
	digits, j, ok := fastJSONDigits(b, i)
	if !ok {
		return 0, i, false
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	return n, j, err == nil
}

// fastJSONTime parses the RFC 3339 string at b[i] into t as
// time.Time.UnmarshalJSON does (the same strict parser).
func fastJSONTime(b []byte, i int, t *time.Time) (int, bool) {
	s, j, ok := fastJSONString(b, i)
	if !ok || t.UnmarshalText(s) != nil {
		return i, false
	}
	return j, true
}
