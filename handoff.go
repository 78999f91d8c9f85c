package gust

// Handing a call from a gateway to a worker. A call that a worker turns
// away before its function saw any of it (the worker drains, or does not
// hold the function) may go to another worker of the placement; a call
// the function may have seen never goes twice.
const (
	// HeaderHandoff is, on a call from a gateway to a worker,
	// HandoffRetry: the gateway may send the call to another worker if
	// this one cannot take it. On the worker's answer it is
	// HandoffRefused: the worker turned the call away before its function
	// saw any of it and metered nothing, so that the one worker that runs
	// it (or the gateway, when none does) meters it once.
	HeaderHandoff  = "X-Gust-Handoff"
	HandoffRetry   = "retry"
	HandoffRefused = "refused"
)

// SubjectDrainPrefix + workerID asks a worker to drain (DrainRequest →
// DrainReply): take no new functions, let its calls and its functions'
// replacements elsewhere settle, then stop its instances.
const SubjectDrainPrefix = "gust.worker.drain."

// DrainRequest asks a worker to drain.
type DrainRequest struct{}

// DrainReply is a worker's answer to a DrainRequest: the error, if any,
// and the state it is in.
type DrainReply struct {
	Reply
	// Instances is how many instances the worker held when it answered.
	Instances int `json:"instances"`
}
