package gust

import (
	"context"
	"net/http"
	"time"
)

// WorkerInfo is what a worker advertises about itself. It is refreshed by a
// heartbeat and disappears when the worker stops beating.
type WorkerInfo struct {
	ID   string `json:"id"`
	Addr string `json:"addr"` // base URL of its invoke endpoint, e.g. http://10.0.0.5:8081
	// MemoryBytes is the memory the worker offers to instances; 0 says
	// nothing, and the scheduler then places on it without a bound
	// (workers of an earlier release).
	MemoryBytes int64 `json:"memoryBytes"`
	// NanoCPUs is the CPU it offers, in billionths of a core.
	NanoCPUs int64     `json:"nanoCPUs,omitempty"`
	Started  time.Time `json:"started"`
	Draining bool      `json:"draining,omitempty"`
	// Pools is what the worker holds: its instances, by function.
	Pools []HeldPool `json:"pools,omitempty"`
	// Images are the images present on the worker's host that it knows
	// of (those of the functions it pulled or ran).
	Images []string `json:"images,omitempty"`
	// Seen is the time of the last heartbeat; a worker not seen for a
	// few heartbeats is gone.
	Seen time.Time `json:"seen"`
}

// Worker states, as WorkerInfo.State reports them.
const (
	WorkerReady    = "ready"
	WorkerDraining = "draining"
)

// State is the worker's state: WorkerDraining takes no new placement.
func (w *WorkerInfo) State() string {
	if w.Draining {
		return WorkerDraining
	}
	return WorkerReady
}

// HeldPool is one function's instances on a worker.
type HeldPool struct {
	Function  string `json:"function"` // FunctionKey
	Instances int    `json:"instances"`
	// MemoryBytes is the memory limit of each instance.
	MemoryBytes int64 `json:"memoryBytes"`
}

// HeldMemory is the memory the worker's instances hold, leaving out those
// of the function except (a FunctionKey; "" leaves out none).
func (w *WorkerInfo) HeldMemory(except string) int64 {
	var n int64
	for _, p := range w.Pools {
		if p.Function != except {
			n += int64(p.Instances) * p.MemoryBytes
		}
	}
	return n
}

// HasImage reports whether the worker holds image.
func (w *WorkerInfo) HasImage(image string) bool {
	for _, im := range w.Images {
		if im == image {
			return true
		}
	}
	return false
}

// Lease is the value of the scheduler leader's key (LeaderKey): the
// scheduler that holds it leads, as long as it keeps writing it within
// the bucket's TTL. A lease whose Holder is empty was given up: the next
// to write it (at its revision) leads.
type Lease struct {
	Holder string    `json:"holder"`
	Since  time.Time `json:"since"`
}

// LeaderKey is the key of the scheduler leader's lease.
const LeaderKey = "scheduler"

// Placement says which workers keep a pool for a function. Each worker
// takes an even share of the function's min and max (see Share).
type Placement struct {
	Workers []string `json:"workers"`
	// Version is the function version this placement was made for.
	Version uint64 `json:"version"`
}

// Share returns the part of total that the i-th of n workers takes: total
// split as evenly as possible, earlier workers taking the remainder.
func Share(total, i, n int) int {
	if n <= 0 {
		return 0
	}
	s := total / n
	if i < total%n {
		s++
	}
	return s
}

// PoolStatus is what a worker reports about its pool of one function.
type PoolStatus struct {
	Worker      string `json:"worker"`
	Replicas    int    `json:"replicas"`         // instances starting or ready
	Available   int    `json:"available"`        // instances ready (paused ones included: a call thaws them)
	Paused      int    `json:"paused,omitempty"` // of Available, those paused (worker/pause.go)
	InFlight    int    `json:"inFlight"`
	Invocations uint64 `json:"invocations"`
	// Desired is how many instances the pool's decider wants
	// (internal/autoscale), within the pool's share of min and max; Want
	// is what it would want without that max: a pool that wants more
	// than its share makes the scheduler widen the placement.
	Desired int       `json:"desired"`
	Want    int       `json:"want,omitempty"`
	Updated time.Time `json:"updated"`
}

// Change is one update seen by a Table watch. Value is the zero value when
// Deleted is set.
type Change[T any] struct {
	Key      string
	Value    T
	Revision uint64
	Deleted  bool
	// Received is when this process received the change. For the values
	// current when a watch begins it is when the store took the write (by
	// the store's clock, never later than now): no writer's clock is
	// believed, so a worker whose clock runs ahead cannot look alive.
	Received time.Time
}

// Table is a typed key-value table of the cluster's shared state
// (JetStream KV in production). Keys are dot-separated tokens.
type Table[T any] interface {
	// Get returns the value and its revision, or an error wrapping
	// ErrNotFound.
	Get(ctx context.Context, key string) (T, uint64, error)
	// Put writes the value unconditionally.
	Put(ctx context.Context, key string, v T) (uint64, error)
	// Create writes the value only if the key is absent, else ErrConflict.
	Create(ctx context.Context, key string, v T) (uint64, error)
	// Update writes the value only if the key is at revision rev, else
	// ErrConflict.
	Update(ctx context.Context, key string, v T, rev uint64) (uint64, error)
	// Delete removes the key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns every value whose key matches the NATS-style pattern
	// ("*" one token, ">" the rest), by key.
	List(ctx context.Context, pattern string) (map[string]T, error)
	// Watch calls fn for the current value of every matching key and then
	// for every change, until ctx ends. It returns once the current values
	// have been delivered.
	Watch(ctx context.Context, pattern string, fn func(Change[T])) error
}

// Invoker runs one call of a function and writes the function's answer to
// w, streamed. The gateway holds one per worker: in process for the worker
// that shares its process, over HTTP for the others. A call that got no
// answer of the function's (no instance, draining, the function crashed or
// timed out) returns an *Error and has written no body to w: the caller
// answers it, with HTTPStatus. The headers it set on w by then (call id,
// figures, HeaderOutcome when a worker metered the call) stay for that
// answer. A caller that went away gets nil.
type Invoker interface {
	Invoke(w http.ResponseWriter, r *http.Request, fn *Function) error
}

// Subjects and request shapes of the control plane.
const (
	// SubjectPlace asks the scheduler to place a function (PlaceRequest →
	// PlaceReply).
	SubjectPlace = "gust.scheduler.place"
	// SubjectPlaceLeader is SubjectPlace served by the leading scheduler
	// only: a standby that took a place request passes it on there.
	SubjectPlaceLeader = "gust.scheduler.leader.place"
	// SubjectPreparePrefix + workerID asks a worker to prepare a function:
	// make its image available and start its first instance (PrepareRequest
	// → Reply).
	SubjectPreparePrefix = "gust.worker.prepare."
)

// PlaceRequest asks the scheduler to place one function now.
type PlaceRequest struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// NoWait asks for the answer once the placement is decided and
	// written; its workers get ready afterwards.
	NoWait bool `json:"noWait,omitempty"`
}

// PlaceReply is the scheduler's answer.
type PlaceReply struct {
	Placement Placement `json:"placement"`
	Reply
}

// PrepareRequest asks a worker to get a function ready.
type PrepareRequest struct {
	Function Function `json:"function"`
}

// Reply carries an error over the bus with its code, field and message.
type Reply struct {
	ErrCode  string `json:"errCode,omitempty"`
	ErrField string `json:"errField,omitempty"`
	ErrMsg   string `json:"error,omitempty"`
}

// Err turns the reply back into an error (nil when it holds none).
func (r Reply) Err() error {
	if r.ErrCode == "" {
		return nil
	}
	return &Error{Code: r.ErrCode, Field: r.ErrField, Message: r.ErrMsg}
}

// ReplyOf packs err into a Reply.
func ReplyOf(err error) Reply {
	if err == nil {
		return Reply{}
	}
	return Reply{ErrCode: ErrorCode(err), ErrField: ErrorField(err), ErrMsg: ErrorMessage(err)}
}

// Headers Gust sets or reads on calls.
const (
	HeaderCallID = "X-Call-Id"
	// HeaderGustCallID carries Gust's own id of a call from the gateway to
	// the worker (X-Call-Id may be the caller's, and callers may reuse
	// theirs); the gateway overwrites any value a caller sends.
	HeaderGustCallID = "X-Gust-Call-Id"
	// HeaderWorkerToken carries the secret a worker's listener requires
	// of gateways; the worker removes it before the function sees a call.
	HeaderWorkerToken = "X-Gust-Worker-Token"
	HeaderDuration    = "X-Duration-Seconds"
	// HeaderStartTime is when the gateway received a sync call, in Unix
	// nanoseconds (OpenFaaS's gateway sets it).
	HeaderStartTime = "X-Start-Time"
	// HeaderColdStart is "true" on the answer of a call that waited for an
	// instance to start.
	HeaderColdStart = "X-Gust-Cold-Start"
	// HeaderBilled is the call's billed duration in seconds (the duration
	// rounded up to the billing granularity), as in its metering record.
	HeaderBilled = "X-Gust-Billed-Seconds"
	// HeaderTrigger tells the worker how a call was triggered (http,
	// async, event); the gateway drops any value a caller sends.
	HeaderTrigger = "X-Gust-Trigger"
	// HeaderDeadline is the call's deadline in RFC 3339 with nanoseconds,
	// passed to the function.
	HeaderDeadline = "X-Gust-Deadline"
	// HeaderOutcome is the outcome of a call as the worker metered it
	// (OutcomeOK, OutcomeError, ...): a header on buffered and error
	// answers, a trailer on streamed ones, whose end decides it. Its
	// presence also says that a worker metered the call, so nobody else
	// records it again.
	HeaderOutcome = "X-Gust-Outcome"
)

// State is the cluster's shared state, one table per kind. Keys:
// Functions and Placements by FunctionKey, Workers by worker id, Status by
// FunctionKey + "." + worker id.
type State struct {
	Functions  Table[Function]
	Placements Table[Placement]
	Workers    Table[WorkerInfo]
	Status     Table[PoolStatus]
}

// Requests sends and serves control-plane requests (NATS request/reply in
// production).
type Requests interface {
	// Request sends req as JSON and decodes the reply into resp. Nothing
	// answering gives an EUNAVAILABLE *Error.
	Request(ctx context.Context, subject string, req, resp any) error
	// Handle serves subject, in queue group queue when it is not empty, by
	// calling fn for each request, each in its own goroutine; fn's result
	// is the reply. The returned stop function drains the subscription.
	Handle(ctx context.Context, subject, queue string, fn func(ctx context.Context, data []byte) any) (stop func() error, err error)
}

// InvokePrefix is the path under which a worker serves calls from gateways
// on other hosts: InvokePrefix + namespace + "/" + name + function path.
const InvokePrefix = "/invoke/"

// HeaderFunctionVersion tells a worker which version of the function the
// gateway resolved, so a worker that has not seen a fresh deploy yet looks
// it up rather than run the old one.
const HeaderFunctionVersion = "X-Gust-Function-Version"
