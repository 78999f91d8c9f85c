package gust

import (
	"context"
	"time"
)

// Labels Gust puts on every container and network it creates, so that a
// worker can find (and clean up) what it owns.
const (
	LabelManaged   = "gust.managed"   // always "true"
	LabelFunction  = "gust.function"  // function name
	LabelNamespace = "gust.namespace" // function namespace
	LabelVersion   = "gust.version"   // function version (deploy counter)
	LabelInstance  = "gust.instance"  // instance id, unique per container
	LabelWorker    = "gust.worker"    // id of the worker that started it
)

// ContainerSpec is everything a Runtime needs to start one instance.
type ContainerSpec struct {
	Name        string // container name; unique
	Image       string
	Env         []string // KEY=VALUE
	Labels      map[string]string
	Port        int   // port the function serves on inside the container
	MemoryBytes int64 // 0: no limit
	NanoCPUs    int64 // 0: no limit
	PidsLimit   int64
	// ReadOnly makes the root file system read-only; /tmp is then a
	// writable, size-limited tmpfs.
	ReadOnly bool
	// User is "UID" or "UID:GID" to run as; "" runs as the image's user,
	// or as DefaultUser when the image names none.
	User string
	// Secrets (name → value) become read-only files SecretsDir+"/"+name
	// inside the container, readable by the user it runs as and held in
	// memory (a tmpfs or equivalent). A runtime never puts their values
	// in the container's environment, labels or anything else it reports
	// about the container: only the mount's path shows. Names are plain
	// file names (no '/', not "." or ".."); others are an EINVALID
	// *Error on the field "secrets".
	Secrets map[string][]byte
}

// Instance is a started container as the Runtime sees it.
type Instance struct {
	ID     string // container id
	Name   string
	Labels map[string]string
	Addr   string // host:port the function answers on, reachable from the worker
	// NetNS is a path to the instance's network namespace that the worker
	// may enter to reach the function over its own loopback interface
	// (internal/netns), "" when the runtime has none to give.
	NetNS   string
	Running bool // running, or paused (Pauser): alive, holding its memory
	Created time.Time
}

// Exit is how a container ended.
type Exit struct {
	Code      int
	OOMKilled bool
}

// Runtime runs function containers on one host. Every method takes a ctx;
// unknown ids give an error wrapping ErrInstanceNotFound, except in Remove,
// for which a container already gone is done. A user function that fails
// is not a Runtime error: Wait reports it as an Exit. internal/runtimetest
// is the contract in code: every implementation passes it.
type Runtime interface {
	// EnsureImage makes ref available locally: present images are used as
	// they are, missing ones are pulled. Concurrent calls for one ref share
	// one pull. An image that cannot be had is an EINVALID *Error.
	EnsureImage(ctx context.Context, ref string) error
	// Start creates and starts a container and returns it with its address.
	Start(ctx context.Context, spec ContainerSpec) (Instance, error)
	// Wait blocks until the container exits or ctx ends.
	Wait(ctx context.Context, id string) (Exit, error)
	// Stop asks the container to stop, killing it after grace.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Remove removes the container, killing it if it still runs; an id
	// that is already gone is not an error.
	Remove(ctx context.Context, id string) error
	// List returns the containers carrying all the given labels.
	List(ctx context.Context, labels map[string]string) ([]Instance, error)
}

// LogTailer is an optional Runtime ability: the last lines a container
// wrote, used to explain why an instance did not become ready.
type LogTailer interface {
	TailLogs(ctx context.Context, id string, lines int) (string, error)
}

// CPUSampler is an optional Runtime ability: the CPU time a container has
// used since it started (user and system, all its processes, all cores),
// a counter that only grows while the container runs. The worker samples
// it every few seconds for functions scaled by CPU
// (com.openfaas.scale.type=cpu) and turns the deltas into millicores.
// Unknown ids give an error wrapping ErrInstanceNotFound.
type CPUSampler interface {
	CPUUsage(ctx context.Context, id string) (time.Duration, error)
}

// Pauser is an optional Runtime ability: freezing every process of a
// running container (the cgroup freezer) and thawing them. A paused
// container keeps its memory and its address and uses no CPU; a call
// reaches it again as soon as Unpause returns. The worker's paused tier
// (gust.pause-after) needs it. Unknown ids give an error wrapping
// ErrInstanceNotFound.
type Pauser interface {
	Pause(ctx context.Context, id string) error
	Unpause(ctx context.Context, id string) error
}

// Preparer is an optional Runtime ability: a container made ready ahead
// of need, everything a Start does but starting it (for Docker: created,
// in a network namespace of its own, not started), so that a cold start
// is only the start. A later Start of the same spec (same Name and every
// other field) starts the prepared container; a Start of a spec that
// differs removes it and starts afresh. A prepared container carries the
// spec's labels, so a worker's reconcile by label removes it after a
// crash. Unprepare removes the container prepared under name, if it was
// not started; an unknown name is not an error. Specs with Secrets are
// not prepared (an EINVALID error): they are read at each start.
type Preparer interface {
	Prepare(ctx context.Context, spec ContainerSpec) error
	Unprepare(ctx context.Context, name string) error
}
