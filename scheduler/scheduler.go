// Package scheduler is the brain of Gust: it places each function's pool on
// workers within their memory, keeps placements on live workers, widens a
// placement onto more workers under load, and answers activation requests
// for functions that have no placement yet.
//
// Where things are:
//   - scheduler.go: the Scheduler, its place requests and reconcile loop.
//   - placer.go: which workers a placement gets (CapacityPlacer).
//   - leader.go: the election of the one scheduler that leads when several
//     run (a lease in a JetStream KV bucket with a TTL).
package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/autoscale"
	"github.com/gustfaas/gust/internal/metrics"
	"go.uber.org/zap"
)

// Config of the scheduler.
type Config struct {
	// ID names this scheduler in the leader's lease. It must differ
	// between the schedulers that run at once: a scheduler takes a lease
	// in its own name back at once.
	ID string
	// WorkerTimeout is how long a worker may go without a heartbeat before
	// it counts as gone.
	WorkerTimeout time.Duration
	// ReconcileInterval is how often placements are checked against the
	// registry and the live workers.
	ReconcileInterval time.Duration
	// PrepareTimeout bounds a worker's answer to a prepare request (an
	// image pull plus a first start).
	PrepareTimeout time.Duration
	// LeaseTTL is how long the leader's lease lasts unless renewed: the
	// TTL of the lease bucket (natsbus.LeaseTTL). A leader that could not
	// renew within it stops leading; a standby takes over after it.
	LeaseTTL time.Duration
	// LeaderWait bounds how long a standby holds a place request while
	// no scheduler leads (the leader died and its lease has not run out).
	LeaderWait time.Duration
}

// DefaultConfig returns the scheduler defaults.
func DefaultConfig() Config {
	return Config{
		WorkerTimeout:     5 * time.Second,
		ReconcileInterval: time.Second,
		PrepareTimeout:    6 * time.Minute,
		LeaseTTL:          4 * time.Second,
		LeaderWait:        30 * time.Second,
	}
}

// Scheduler keeps placements.
type Scheduler struct {
	cfg     Config
	state   *gust.State
	reqs    gust.Requests
	placer  Placer
	logger  *zap.Logger
	metrics *metrics.Metrics
	// election is nil when no lease table was given: this scheduler is
	// the only one, and leads.
	election *election

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stops  []func() error

	// leadMu guards stopLeader, the subscription of the leader.
	leadMu     sync.Mutex
	stopLeader func() error

	// live judges workers by when their heartbeats arrived here.
	live *gust.Liveness

	mu       sync.Mutex
	workers  map[string]gust.WorkerInfo
	inflight map[string]*placeCall
}

// placeCall is one placement in progress, which concurrent callers
// share: decided closes once pl is written (or decideErr says why not),
// done once its workers are ready (or err says why not).
type placeCall struct {
	decided   chan struct{}
	done      chan struct{}
	pl        gust.Placement
	decideErr error
	err       error
}

// New returns a scheduler; Start brings it up.
func New(cfg Config, state *gust.State, reqs gust.Requests, logger *zap.Logger) *Scheduler {
	link, _ := reqs.(gust.Link)
	return &Scheduler{
		live:     gust.NewLiveness(link),
		cfg:      cfg,
		state:    state,
		reqs:     reqs,
		placer:   CapacityPlacer{},
		logger:   logger.Named("scheduler"),
		workers:  map[string]gust.WorkerInfo{},
		inflight: map[string]*placeCall{},
	}
}

// WithMetrics makes the scheduler count its placement failures and its
// leadership in m. Call it before Start.
func (s *Scheduler) WithMetrics(m *metrics.Metrics) *Scheduler {
	s.metrics = m
	return s
}

// WithLeases makes the scheduler one of several: it leads only while it
// holds the lease in leases (a table whose keys expire after
// Config.LeaseTTL unless written). Call it before Start.
func (s *Scheduler) WithLeases(leases gust.Table[gust.Lease]) *Scheduler {
	s.election = newElection(leases, s.cfg.ID, s.cfg.LeaseTTL, s.logger)
	s.election.onChange = s.onLeading
	return s
}

// Start watches the workers, serves placement requests and starts the
// reconcile loop and, with leases, the election. ctx bounds starting: if
// it ends first, Start fails. What Start sets going runs until Close.
func (s *Scheduler) Start(ctx context.Context) (err error) {
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	abort := context.AfterFunc(ctx, s.cancel)
	defer func() {
		if !abort() && err == nil {
			err = fmt.Errorf("start scheduler: %w", ctx.Err())
		}
		if err != nil {
			_ = s.Close()
		}
	}()
	err = s.state.Workers.Watch(s.ctx, ">", func(c gust.Change[gust.WorkerInfo]) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if c.Deleted {
			delete(s.workers, c.Key)
			s.live.Forget(c.Key)
		} else {
			s.workers[c.Key] = c.Value
			s.live.Heard(c.Key, c.Received)
		}
	})
	if err != nil {
		return fmt.Errorf("watch workers: %w", err)
	}
	stopBeats, err := s.live.HearBeats(s.reqs)
	if err != nil {
		return err
	}
	s.stops = append(s.stops, stopBeats)
	// Every scheduler takes its turn in the queue group; a standby hands
	// the request to the leader (handlePlace).
	stop, err := s.reqs.Handle(s.ctx, gust.SubjectPlace, "gust-scheduler", s.handlePlace)
	if err != nil {
		return fmt.Errorf("serve %s: %w", gust.SubjectPlace, err)
	}
	s.stops = append(s.stops, stop)
	if s.election != nil {
		// Try at once, so that a lone scheduler leads as it starts.
		s.election.tick(ctx)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.election.run(s.ctx)
		}()
	} else {
		s.metrics.Leading(true)
	}
	s.wg.Add(1)
	go s.loop()
	s.logger.Info("scheduler started", zap.Bool("leading", s.leading()))
	return nil
}

// Close stops the scheduler and waits for its goroutines (the reconcile
// loop, the election and the re-placements it started). A leader gives
// its lease up, so that a standby takes over at once. Closing again does
// nothing.
func (s *Scheduler) Close() error {
	return s.close(true)
}

// close is Close; without release a leader leaves its lease to expire,
// as one that died does.
func (s *Scheduler) close(release bool) error {
	if s.cancel == nil {
		return nil
	}
	for _, stop := range s.stops {
		_ = stop()
	}
	s.stops = nil
	s.mu.Lock()
	s.cancel()
	s.mu.Unlock()
	s.wg.Wait()
	s.onLeading(false)
	if s.election != nil && release {
		s.election.release()
	}
	return nil
}

// onLeading follows the election: the leader serves SubjectPlaceLeader,
// where standbys pass their place requests on. Called after every
// attempt, so that a subscription that failed is tried again.
func (s *Scheduler) onLeading(leading bool) {
	s.metrics.Leading(leading)
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	switch {
	case leading && s.stopLeader == nil && s.ctx.Err() == nil:
		stop, err := s.reqs.Handle(s.ctx, gust.SubjectPlaceLeader, "", s.handleLeaderPlace)
		if err != nil {
			s.logger.Warn("serve "+gust.SubjectPlaceLeader, zap.Error(err))
			return
		}
		s.stopLeader = stop
	case !leading && s.stopLeader != nil:
		_ = s.stopLeader()
		s.stopLeader = nil
	}
}

// leading reports whether this scheduler places and reconciles.
func (s *Scheduler) leading() bool {
	return s.election == nil || s.election.leading()
}

// handlePlace answers a place request of the queue group: the leader
// places; a standby passes the request on to the leader and its answer
// back, waiting up to LeaderWait while no scheduler leads, so that a
// deploy or a first call made as the leader dies waits for the next one
// rather than fail.
func (s *Scheduler) handlePlace(ctx context.Context, data []byte) any {
	if s.leading() {
		return s.handleLeaderPlace(ctx, data)
	}
	wait, cancel := context.WithTimeout(ctx, s.cfg.LeaderWait)
	defer cancel()
	// The leader's answer may take as long as a prepare.
	rctx, rcancel := context.WithTimeout(ctx, s.cfg.LeaderWait+s.cfg.PrepareTimeout)
	defer rcancel()
	for {
		var rep gust.PlaceReply
		err := s.reqs.Request(rctx, gust.SubjectPlaceLeader, json.RawMessage(data), &rep)
		if err == nil && !notLeading(rep.Err()) {
			return rep
		}
		if err != nil && gust.ErrorCode(err) != gust.EUNAVAILABLE {
			return gust.PlaceReply{Reply: gust.ReplyOf(err)}
		}
		// Nothing answers as leader: the leader died or stepped down.
		// Wait for the next one, which may be this scheduler.
		select {
		case <-s.election.changed():
		case <-time.After(s.cfg.LeaseTTL / 8):
		case <-wait.Done():
			return gust.PlaceReply{Reply: gust.ReplyOf(gust.Errorf(gust.EUNAVAILABLE, "no scheduler leads: none took the lead within %s", s.cfg.LeaderWait))}
		}
		if s.leading() {
			return s.handleLeaderPlace(ctx, data)
		}
	}
}

// errNotLeading answers, on SubjectPlaceLeader, a request that reached a
// scheduler that lost the lead meanwhile; the standby that sent it waits
// for the next leader.
var errNotLeading = &gust.Error{Code: gust.EUNAVAILABLE, Field: "leader", Message: "this scheduler no longer leads"}

// notLeading reports whether err is errNotLeading, come back over the bus.
func notLeading(err error) bool {
	return gust.ErrorCode(err) == gust.EUNAVAILABLE && gust.ErrorField(err) == "leader"
}

// handleLeaderPlace places, as the leader.
func (s *Scheduler) handleLeaderPlace(ctx context.Context, data []byte) any {
	var req gust.PlaceRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return gust.PlaceReply{Reply: gust.ReplyOf(gust.Errorf(gust.EINVALID, "decode place request: %v", err))}
	}
	if !s.leading() {
		// It lost the lead since the request was sent: the sender asks
		// again, of the next leader.
		return gust.PlaceReply{Reply: gust.ReplyOf(errNotLeading)}
	}
	place := s.Place
	if req.NoWait {
		place = s.Decide
	}
	pl, err := place(ctx, gust.FunctionKey(req.Namespace, req.Name))
	return gust.PlaceReply{Placement: pl, Reply: gust.ReplyOf(err)}
}

// Place makes sure the function has a placement on live workers with room
// for it, and that each of them has it ready. Concurrent calls for one
// function share one placement, which goes on (until Close) when its
// callers stop waiting. When no worker has room it fails with an
// EUNAVAILABLE error on field "memory".
func (s *Scheduler) Place(ctx context.Context, key string) (gust.Placement, error) {
	return s.placeWidth(ctx, key, 0, true)
}

// Decide is Place, but returns once the placement is written (or
// refused): its workers get ready in the background.
func (s *Scheduler) Decide(ctx context.Context, key string) (gust.Placement, error) {
	return s.placeWidth(ctx, key, 0, false)
}

// placeWidth places key onto width workers (0: as many as its placement
// has now), within what the function's scale allows, and waits for the
// decision, or, with ready, for the workers too.
func (s *Scheduler) placeWidth(ctx context.Context, key string, width int, ready bool) (gust.Placement, error) {
	s.mu.Lock()
	c, ok := s.inflight[key]
	if !ok {
		// Checked under mu, which close cancels under: no Add after
		// close's Wait began.
		if s.ctx == nil || s.ctx.Err() != nil {
			s.mu.Unlock()
			return gust.Placement{}, gust.Errorf(gust.EUNAVAILABLE, "the scheduler is not running")
		}
		c = &placeCall{decided: make(chan struct{}), done: make(chan struct{})}
		s.inflight[key] = c
		s.wg.Add(1)
		go s.run(c, key, width)
	}
	s.mu.Unlock()
	wait := c.done
	if !ready {
		wait = c.decided
	}
	select {
	case <-wait:
	case <-ctx.Done():
		return gust.Placement{}, ctx.Err()
	}
	if !ready {
		return c.pl, c.decideErr
	}
	return c.pl, c.err
}

// run makes the placement of c and gets its workers ready.
func (s *Scheduler) run(c *placeCall, key string, width int) {
	defer s.wg.Done()
	fn, pl, err := s.decide(s.ctx, key, width)
	c.pl, c.decideErr = pl, err
	close(c.decided)
	if err == nil {
		if err = s.prepare(s.ctx, &fn, pl); err != nil {
			s.metrics.PlacementFailure("prepare")
		}
	}
	c.err = err
	s.mu.Lock()
	delete(s.inflight, key)
	s.mu.Unlock()
	close(c.done)
}

// Alive returns the ids of the workers placements may use now (live, not
// draining), in order: a worker that has just joined is among them once
// this scheduler has heard of it.
func (s *Scheduler) Alive() []string {
	var ids []string
	for _, w := range s.alive() {
		ids = append(ids, w.ID)
	}
	return ids
}

// alive returns the live, non-draining workers sorted by id.
func (s *Scheduler) alive() []gust.WorkerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]gust.WorkerInfo, 0, len(s.workers))
	for _, w := range s.workers {
		if !w.Draining && !s.live.Silent(w.ID, s.cfg.WorkerTimeout) {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b gust.WorkerInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// widthRange is how many workers a placement of fn spans: at least its
// warm minimum's (one per instance), or a fresh scale-function order's, at
// least one, at most its max.
func widthRange(fn *gust.Function, now time.Time) (lo, hi int) {
	cfg := fn.Config()
	hi = max(1, cfg.Max)
	floor := cfg.Min
	if o := fn.Scaled; o != nil && autoscale.OrderFresh(o.At, now) {
		floor = max(floor, o.Replicas)
	}
	return min(max(1, floor), hi), hi
}

// decide chooses the workers of key's placement and writes it.
func (s *Scheduler) decide(ctx context.Context, key string, width int) (gust.Function, gust.Placement, error) {
	fn, _, err := s.state.Functions.Get(ctx, key)
	if errors.Is(err, gust.ErrNotFound) {
		return fn, gust.Placement{}, gust.Errorf(gust.ENOTFOUND, "function %s not found", key)
	}
	if err != nil {
		return fn, gust.Placement{}, err
	}
	cur, _, err := s.state.Placements.Get(ctx, key)
	if err != nil && !errors.Is(err, gust.ErrNotFound) {
		return fn, gust.Placement{}, err
	}
	cands, err := s.candidates(ctx, key)
	if err != nil {
		return fn, gust.Placement{}, err
	}
	if width == 0 {
		width = len(cur.Workers)
	}
	lo, hi := widthRange(&fn, time.Now())
	workers, err := s.placer.Place(&fn, min(max(width, lo), hi), cur.Workers, cands)
	if err != nil {
		if gust.ErrorField(err) == "memory" {
			s.metrics.PlacementFailure("memory")
		} else {
			s.metrics.PlacementFailure("no_worker")
		}
		return fn, gust.Placement{}, err
	}
	pl := gust.Placement{Workers: workers, Version: fn.Version}
	if !slices.Equal(pl.Workers, cur.Workers) || pl.Version != cur.Version {
		if _, err := s.state.Placements.Put(ctx, key, pl); err != nil {
			return fn, gust.Placement{}, err
		}
		s.logger.Info("placed function", zap.String("function", key), zap.Strings("workers", pl.Workers), zap.Uint64("version", fn.Version))
	}
	return fn, pl, nil
}

// candidates returns the live, ready workers, each with the memory the
// functions other than key take on it and how many placements it holds.
func (s *Scheduler) candidates(ctx context.Context, key string) ([]Candidate, error) {
	alive := s.alive()
	if len(alive) == 0 {
		return nil, nil
	}
	fns, err := s.state.Functions.List(ctx, ">")
	if err != nil {
		return nil, err
	}
	pls, err := s.state.Placements.List(ctx, ">")
	if err != nil {
		return nil, err
	}
	reserved := map[string]int64{}
	count := map[string]int{}
	for k, pl := range pls {
		for _, id := range pl.Workers {
			count[id]++
		}
		fn, ok := fns[k]
		if !ok || k == key {
			continue
		}
		cfg := fn.Config()
		for i, id := range pl.Workers {
			reserved[id] += int64(gust.Share(cfg.Min, i, len(pl.Workers))) * cfg.MemoryBytes
		}
	}
	out := make([]Candidate, 0, len(alive))
	for _, w := range alive {
		out = append(out, Candidate{WorkerInfo: w, Used: max(reserved[w.ID], w.HeldMemory(key)), Placements: count[w.ID]})
	}
	return out, nil
}

// prepare asks every worker of the placement to get the function ready,
// and returns the first error.
func (s *Scheduler) prepare(ctx context.Context, fn *gust.Function, pl gust.Placement) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PrepareTimeout)
	defer cancel()
	errs := make([]error, len(pl.Workers))
	var wg sync.WaitGroup
	for i, id := range pl.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rep gust.Reply
			if err := s.reqs.Request(ctx, gust.SubjectPreparePrefix+id, gust.PrepareRequest{Function: *fn}, &rep); err != nil {
				errs[i] = err
				return
			}
			errs[i] = rep.Err()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Scheduler) loop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			if !s.leading() {
				continue
			}
			if err := s.reconcile(s.ctx); err != nil && s.ctx.Err() == nil {
				s.logger.Warn("reconcile", zap.Error(err))
			}
		}
	}
}

// reconcile forgets dead workers, drops placements of deleted functions,
// re-places functions whose placement lost a worker or is stale, and
// widens or narrows placements by demand (wantWidth).
func (s *Scheduler) reconcile(ctx context.Context) error {
	s.mu.Lock()
	var dead []string
	for id := range s.workers {
		if s.live.Silent(id, 3*s.cfg.WorkerTimeout) {
			dead = append(dead, id)
		}
	}
	s.mu.Unlock()
	for _, id := range dead {
		s.logger.Warn("worker gone", zap.String("worker_id", id))
		if err := s.state.Workers.Delete(ctx, id); err != nil {
			return err
		}
	}
	fns, err := s.state.Functions.List(ctx, ">")
	if err != nil {
		return err
	}
	pls, err := s.state.Placements.List(ctx, ">")
	if err != nil {
		return err
	}
	sts, err := s.state.Status.List(ctx, ">")
	if err != nil {
		return err
	}
	for key := range pls {
		if _, ok := fns[key]; !ok {
			if err := s.state.Placements.Delete(ctx, key); err != nil {
				return err
			}
		}
	}
	alive := s.alive()
	for key, fn := range fns {
		pl, ok := pls[key]
		if !ok && time.Since(fn.UpdatedAt) < deployGrace {
			continue // its deploy is placing it right now
		}
		width := 0
		if ok && pl.Version == fn.Version && allAlive(pl.Workers, alive) {
			lo, hi := widthRange(&fn, time.Now())
			want := min(wantWidth(key, &fn, pl, sts), len(alive))
			if want == len(pl.Workers) && want >= min(lo, len(alive)) && want <= hi {
				continue
			}
			width = want
		}
		if len(alive) == 0 || s.placing(key) {
			continue // nowhere to place it, or a placement of it is running
		}
		// In the background, so that one slow prepare does not hold up
		// the others. Adding to wg here cannot race with Close's Wait:
		// the loop calling reconcile holds a count of wg itself.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if _, err := s.placeWidth(ctx, key, width, true); err != nil && ctx.Err() == nil {
				s.logger.Warn("re-place function", zap.String("function", key), zap.Error(err))
			}
		}()
	}
	return nil
}

// wantWidth is how many workers the placement pl of a function should
// span by its demand, as its pools last reported (sts, by FunctionKey +
// "." + worker id). When every pool holds its share of the max and
// every slot is busy (or its decider wants more than that share:
// internal/autoscale), the function grows onto one more worker, which
// takes its share of the max (and the others give theirs up: the
// gateways spread calls over the workers of the placement). When no pool
// holds more than its share of the minimum and none has a call, the
// demand is gone and the placement narrows by one, down to the width of
// the warm minimum.
func wantWidth(key string, fn *gust.Function, pl gust.Placement, sts map[string]gust.PoolStatus) int {
	cfg := fn.Config()
	k := len(pl.Workers)
	lo, hi := widthRange(fn, time.Now())
	full, idle := k > 0, true
	for i, id := range pl.Workers {
		st, ok := sts[key+"."+id]
		share := max(1, gust.Share(cfg.Max, i, k))
		if !ok || st.Replicas < share || st.InFlight < st.Replicas*cfg.Concurrency && st.Want <= share {
			full = false
		}
		if ok && (st.InFlight > 0 || st.Replicas > gust.Share(cfg.Min, i, k)) {
			idle = false
		}
	}
	switch {
	case full && k < hi:
		return k + 1
	case idle && k > lo:
		return k - 1
	}
	return k
}

// placing reports whether a placement of key is running.
func (s *Scheduler) placing(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.inflight[key]
	return ok
}

// deployGrace is how long a freshly deployed function is left to the
// deploy's own placement before the reconcile loop steps in.
const deployGrace = 10 * time.Second

func allAlive(ids []string, alive []gust.WorkerInfo) bool {
	for _, id := range ids {
		if !slices.ContainsFunc(alive, func(w gust.WorkerInfo) bool { return w.ID == id }) {
			return false
		}
	}
	return true
}
