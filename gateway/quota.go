package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gustfaas/gust"
)

// Quotas of namespaces (gust.Quota), as the gateway enforces them:
//
//   - instances and memory when a deploy or a scale changes a namespace's
//     warm minimums (holdQuota): the registry is read then, once per
//     management call;
//   - concurrency on every call (quotas): a sync call past the bound is
//     turned away at once with 429 and Retry-After; the dispatcher's async
//     calls and events wait for a slot instead, in their queue.
//
// Nothing here runs unless the gateway has a Tenancy and the namespace a
// quota; a zero field of a quota is no bound.

// quotas keeps the namespaces' concurrency bounds in memory, fed by a
// watch of Tenancy.Namespaces, and counts each bounded namespace's calls
// in flight. A call never waits for NATS here: it loads a map without a
// lock and does one or two atomic operations; a namespace without a bound
// costs the map lookup alone.
//
// The bound is per gateway. Each gateway counts only the calls it holds,
// so behind a load balancer with N gateways a namespace may run up to N ×
// its concurrency calls at once. Counting across gateways would put a
// NATS round trip (or a lease protocol) on the warm path of every call;
// operators who need a cluster-wide bound divide it by the number of
// gateways.
type quotas struct {
	mu     sync.Mutex                        // serializes writers of limits
	limits atomic.Pointer[map[string]*limit] // by namespace; copied on write
}

// quotaState is the Server's part of quotas.
type quotaState struct {
	// calls counts calls against the namespaces' concurrency; nil on a
	// gateway without tenancy, or before Open.
	calls *quotas
	// deploy serializes the check and the registry write of deploys and
	// scales on this gateway, so two of them in one namespace cannot both
	// pass a bound that only one fits in. Gateways do not coordinate this:
	// two deploys on two gateways at the same moment may pass it together.
	deploy sync.Mutex
}

// limit counts the calls in flight of one namespace against its bound.
// Once made it stays for as long as the gateway runs, even when the bound
// goes (bound 0): its count must stay true for calls that began before a
// change of the quota and end after it.
type limit struct {
	bound    atomic.Int64 // 0: no bound
	inflight atomic.Int64
	waiting  atomic.Int64 // callers in wait

	mu    sync.Mutex
	freed chan struct{} // closed (and replaced) when a slot may have freed
}

func newQuotas() *quotas {
	q := &quotas{}
	q.limits.Store(&map[string]*limit{})
	return q
}

// set makes bound the concurrency of namespace ns (0: none).
func (q *quotas) set(ns string, bound int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	old := *q.limits.Load()
	if l := old[ns]; l != nil {
		l.bound.Store(int64(bound))
		l.wake() // a larger bound (or none) lets waiting calls go
		return
	}
	if bound <= 0 {
		return
	}
	l := &limit{freed: make(chan struct{})}
	l.bound.Store(int64(bound))
	m := maps.Clone(old)
	m[ns] = l
	q.limits.Store(&m)
}

// of returns the limit of ns, nil when it has never had a bound. A nil
// *quotas (a gateway without tenancy) has none.
func (q *quotas) of(ns string) *limit {
	if q == nil {
		return nil
	}
	return (*q.limits.Load())[ns]
}

// take takes a slot of ns for a sync call, or answers ETOOMANY at once
// when the namespace has its bound of calls in flight. The caller
// releases the slot it got (a nil *limit, for no bound, releases nothing).
func (q *quotas) take(ns string) (*limit, error) {
	l := q.of(ns)
	if l == nil {
		return nil, nil
	}
	if b, ok := l.tryTake(); !ok {
		return nil, &gust.Error{Code: gust.ETOOMANY, Field: "quota.concurrency",
			Message: fmt.Sprintf("namespace %s has %d calls in flight, its quota.concurrency on this gateway; retry later", ns, b)}
	}
	return l, nil
}

// wait takes a slot of ns, waiting for one while the namespace has its
// bound of calls in flight, until ctx ends. It is for calls that wait in
// a queue anyway (async calls and events).
func (q *quotas) wait(ctx context.Context, ns string) (*limit, error) {
	l := q.of(ns)
	if l == nil {
		return nil, nil
	}
	if _, ok := l.tryTake(); ok {
		return l, nil
	}
	// waiting goes up before freed is read, and a release reads waiting
	// after it lowers inflight: either tryTake below sees that release's
	// slot, or the release sees this waiter and closes the channel read
	// here (or a later one, which tryTake then sees). No wake-up is lost.
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	for {
		l.mu.Lock()
		freed := l.freed
		l.mu.Unlock()
		if _, ok := l.tryTake(); ok {
			return l, nil
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for a slot of namespace %s's quota.concurrency: %w", ns, ctx.Err())
		}
	}
}

// tryTake counts one more call in flight unless that passes the bound; it
// returns the bound it saw.
func (l *limit) tryTake() (int64, bool) {
	for {
		n, b := l.inflight.Load(), l.bound.Load()
		if b > 0 && n >= b {
			return b, false
		}
		if l.inflight.CompareAndSwap(n, n+1) {
			return b, true
		}
	}
}

// release gives back a slot that take or wait returned.
func (l *limit) release() {
	if l == nil {
		return
	}
	l.inflight.Add(-1)
	if l.waiting.Load() > 0 {
		l.wake()
	}
}

// wake lets every waiter try again.
func (l *limit) wake() {
	l.mu.Lock()
	close(l.freed)
	l.freed = make(chan struct{})
	l.mu.Unlock()
}

// startQuotas follows the namespaces' quotas into memory when the gateway
// has a tenancy, and gives the dispatcher the same counts, so that sync
// calls, async calls and events of a namespace share one bound. It
// returns once the current quotas are loaded (ctx bounds that); the watch
// runs until Close, or until the returned stop.
func (s *Server) startQuotas(ctx context.Context) (stop func(), err error) {
	if s.tenancy == nil || s.tenancy.Namespaces == nil {
		return func() {}, nil
	}
	q := newQuotas()
	wctx, started := s.tasks.During(ctx)
	wctx, cancel := context.WithCancel(wctx)
	err = s.tenancy.Namespaces.Watch(wctx, ">", func(c gust.Change[gust.Namespace]) {
		bound := 0
		if !c.Deleted && c.Value.Quota != nil {
			bound = c.Value.Quota.Concurrency
		}
		q.set(c.Key, bound)
	})
	if err == nil {
		err = started()
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("quotas: %w", err)
	}
	s.quota.calls = q
	if s.dispatcher != nil {
		s.dispatcher.quotas = q
	}
	return cancel, nil
}

// usage is what a namespace's functions hold warm.
type usage struct {
	instances int
	memory    int64
}

func (u *usage) add(fn *gust.Function) {
	c := fn.Config()
	n := c.Min
	if fn.Scaled != nil {
		// A scale-function order starts that many now.
		n = max(n, fn.Scaled.Replicas)
	}
	u.instances += n
	u.memory += int64(n) * c.MemoryBytes
}

// holdQuota checks that next, replacing whatever version of its function
// the registry holds, keeps its namespace within its quota of instances
// (the sum of the warm minimums: com.openfaas.scale.min, or the replicas
// of a scale) and memory (the sum of minimum × memory limit). A change
// that passes a bound is an EFORBIDDEN error naming the quota, unless it
// lowers or keeps the use (a namespace whose quota was lowered below what
// it holds can still scale down and redeploy). what says what the change
// is ("deploy", "scale") in the message.
//
// On success the caller writes the registry and then calls release; until
// then other deploys and scales on this gateway wait, so that two cannot
// both pass a bound only one fits in.
func (s *Server) holdQuota(ctx context.Context, next *gust.Function, what string) (release func(), err error) {
	if s.tenancy == nil || s.tenancy.Namespaces == nil {
		return func() {}, nil
	}
	nsName := next.Spec.Namespace
	ns, _, err := s.tenancy.Namespaces.Get(ctx, nsName)
	if errors.Is(err, gust.ErrNotFound) {
		return func() {}, nil // no namespace, no quota: refusing that is the deploy's own check
	}
	if err != nil {
		return nil, fmt.Errorf("read namespace %s: %w", nsName, err)
	}
	q := ns.Quota
	if q == nil || (q.Instances <= 0 && q.Memory == "") {
		return func() {}, nil
	}
	var memBound int64
	if q.Memory != "" {
		if memBound, err = gust.ParseMemory(q.Memory); err != nil {
			return nil, &gust.Error{Code: gust.EFORBIDDEN, Field: "quota.memory",
				Message: fmt.Sprintf("namespace %s has a quota.memory %q that does not parse (%v); fix the namespace first", nsName, q.Memory, err)}
		}
	}
	// One lock for the whole gateway: deploys and scales are rare, and
	// this orders them only while the registry is read and written.
	s.quota.deploy.Lock()
	defer func() {
		if err != nil {
			s.quota.deploy.Unlock()
		}
	}()
	fns, err := s.state.Functions.List(ctx, nsName+".*")
	if err != nil {
		return nil, fmt.Errorf("list functions of namespace %s: %w", nsName, err)
	}
	var before, after usage
	for key, fn := range fns {
		before.add(&fn)
		if key != next.Key() {
			after.add(&fn)
		}
	}
	after.add(next)
	if q.Instances > 0 && after.instances > q.Instances && after.instances > before.instances {
		return nil, &gust.Error{Code: gust.EFORBIDDEN, Field: "quota.instances", Message: fmt.Sprintf(
			"namespace %s's quota.instances is %d; with this %s its functions would keep %d warm instances (the sum of %s, or of scaled replicas)",
			nsName, q.Instances, what, after.instances, gust.LabelScaleMin)}
	}
	if memBound > 0 && after.memory > memBound && after.memory > before.memory {
		return nil, &gust.Error{Code: gust.EFORBIDDEN, Field: "quota.memory", Message: fmt.Sprintf(
			"namespace %s's quota.memory is %s; with this %s its warm instances would use %s (minimum × limits.memory, %s when unset)",
			nsName, q.Memory, what, quantity(after.memory), quantity(gust.DefaultMemory))}
	}
	return s.quota.deploy.Unlock, nil
}

// quantity writes bytes in the largest binary unit that divides them.
func quantity(b int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if b >= u.size && b%u.size == 0 {
			return strconv.FormatInt(b/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(b, 10)
}
