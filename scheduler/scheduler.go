// Package scheduler is the brain of Gust: it places each function's pool on
// workers, keeps placements on live workers, and answers activation
// requests for functions that have no placement yet.
package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// Config of the scheduler.
type Config struct {
	// WorkerTimeout is how long a worker may go without a heartbeat before
	// it counts as gone.
	WorkerTimeout time.Duration
	// ReconcileInterval is how often placements are checked against the
	// registry and the live workers.
	ReconcileInterval time.Duration
	// PrepareTimeout bounds a worker's answer to a prepare request (an
	// image pull plus a first start).
	PrepareTimeout time.Duration
}

// DefaultConfig returns the scheduler defaults.
func DefaultConfig() Config {
	return Config{
		WorkerTimeout:     5 * time.Second,
		ReconcileInterval: 2 * time.Second,
		PrepareTimeout:    6 * time.Minute,
	}
}

// Placer picks the workers of a function's placement.
type Placer interface {
	// Place returns n workers for fn out of alive (sorted by id), keeping
	// those of current that are still alive. load counts the placements
	// each worker holds.
	Place(fn *gust.Function, n int, current []string, alive []gust.WorkerInfo, load map[string]int) []string
}

// SpreadPlacer keeps current workers and adds the least-loaded others.
type SpreadPlacer struct{}

// Place implements Placer.
func (SpreadPlacer) Place(fn *gust.Function, n int, current []string, alive []gust.WorkerInfo, load map[string]int) []string {
	out := make([]string, 0, n)
	for _, id := range current {
		if len(out) < n && !slices.Contains(out, id) && slices.ContainsFunc(alive, func(w gust.WorkerInfo) bool { return w.ID == id }) {
			out = append(out, id)
		}
	}
	rest := make([]gust.WorkerInfo, 0, len(alive))
	for _, w := range alive {
		if !slices.Contains(out, w.ID) {
			rest = append(rest, w)
		}
	}
	slices.SortStableFunc(rest, func(a, b gust.WorkerInfo) int { return load[a.ID] - load[b.ID] })
	for _, w := range rest {
		if len(out) == n {
			break
		}
		out = append(out, w.ID)
	}
	return out
}

// Scheduler keeps placements.
type Scheduler struct {
	cfg    Config
	state  *gust.State
	reqs   gust.Requests
	placer Placer
	logger *zap.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stop   func() error

	// live judges workers by when their heartbeats arrived here.
	live *gust.Liveness

	mu       sync.Mutex
	workers  map[string]gust.WorkerInfo
	inflight map[string]*placeCall
}

type placeCall struct {
	done chan struct{}
	pl   gust.Placement
	err  error
}

// New returns a scheduler; Start brings it up.
func New(cfg Config, state *gust.State, reqs gust.Requests, logger *zap.Logger) *Scheduler {
	link, _ := reqs.(gust.Link)
	return &Scheduler{
		live:     gust.NewLiveness(link),
		cfg:      cfg,
		state:    state,
		reqs:     reqs,
		placer:   SpreadPlacer{},
		logger:   logger.Named("scheduler"),
		workers:  map[string]gust.WorkerInfo{},
		inflight: map[string]*placeCall{},
	}
}

// Start watches the workers, serves placement requests and starts the
// reconcile loop. ctx bounds starting: if it ends first, Start fails. What
// Start sets going runs until Close.
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
	// One scheduler answers each request when several run.
	s.stop, err = s.reqs.Handle(s.ctx, gust.SubjectPlace, "gust-scheduler", s.handlePlace)
	if err != nil {
		return fmt.Errorf("serve %s: %w", gust.SubjectPlace, err)
	}
	s.wg.Add(1)
	go s.loop()
	s.logger.Info("scheduler started")
	return nil
}

// Close stops the scheduler and waits for its goroutines (the reconcile
// loop and the re-placements it started). Closing again does nothing.
func (s *Scheduler) Close() error {
	if s.cancel == nil {
		return nil
	}
	if s.stop != nil {
		_ = s.stop()
		s.stop = nil
	}
	s.cancel()
	s.wg.Wait()
	return nil
}

func (s *Scheduler) handlePlace(ctx context.Context, data []byte) any {
	var req gust.PlaceRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return gust.PlaceReply{Reply: gust.ReplyOf(gust.Errorf(gust.EINVALID, "decode place request: %v", err))}
	}
	pl, err := s.Place(ctx, gust.FunctionKey(req.Namespace, req.Name))
	return gust.PlaceReply{Placement: pl, Reply: gust.ReplyOf(err)}
}

// Place makes sure the function has a placement on live workers and that
// each of them has it ready. Concurrent calls for one function share one
// placement.
func (s *Scheduler) Place(ctx context.Context, key string) (gust.Placement, error) {
	s.mu.Lock()
	if c, ok := s.inflight[key]; ok {
		s.mu.Unlock()
		select {
		case <-c.done:
			return c.pl, c.err
		case <-ctx.Done():
			return gust.Placement{}, ctx.Err()
		}
	}
	c := &placeCall{done: make(chan struct{})}
	s.inflight[key] = c
	s.mu.Unlock()
	c.pl, c.err = s.place(ctx, key)
	s.mu.Lock()
	delete(s.inflight, key)
	s.mu.Unlock()
	close(c.done)
	return c.pl, c.err
}

// alive returns the live, non-draining workers sorted by id, and how many
// placements each holds.
func (s *Scheduler) alive() []gust.WorkerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]gust.WorkerInfo, 0, len(s.workers))
	for _, w := range s.workers {
		if !w.Draining && !s.live.Silent(w.ID, s.cfg.WorkerTimeout) {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b gust.WorkerInfo) int {
		if a.ID < b.ID {
			return -1
		} else if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

func (s *Scheduler) place(ctx context.Context, key string) (gust.Placement, error) {
	fn, _, err := s.state.Functions.Get(ctx, key)
	if errors.Is(err, gust.ErrNotFound) {
		return gust.Placement{}, gust.Errorf(gust.ENOTFOUND, "function %s not found", key)
	}
	if err != nil {
		return gust.Placement{}, err
	}
	alive := s.alive()
	if len(alive) == 0 {
		return gust.Placement{}, gust.Errorf(gust.EUNAVAILABLE, "no worker is available to run %s", key)
	}
	cfg := fn.Config()
	n := min(len(alive), max(1, cfg.Min), cfg.Max)
	cur, _, err := s.state.Placements.Get(ctx, key)
	if err != nil && !errors.Is(err, gust.ErrNotFound) {
		return gust.Placement{}, err
	}
	load, err := s.load(ctx)
	if err != nil {
		return gust.Placement{}, err
	}
	pl := gust.Placement{Workers: s.placer.Place(&fn, n, cur.Workers, alive, load), Version: fn.Version}
	if !slices.Equal(pl.Workers, cur.Workers) || pl.Version != cur.Version {
		if _, err := s.state.Placements.Put(ctx, key, pl); err != nil {
			return gust.Placement{}, err
		}
		s.logger.Info("placed function", zap.String("function", key), zap.Strings("workers", pl.Workers), zap.Uint64("version", fn.Version))
	}
	return pl, s.prepare(ctx, &fn, pl)
}

// load counts placements per worker.
func (s *Scheduler) load(ctx context.Context) (map[string]int, error) {
	all, err := s.state.Placements.List(ctx, ">")
	if err != nil {
		return nil, err
	}
	load := map[string]int{}
	for _, pl := range all {
		for _, id := range pl.Workers {
			load[id]++
		}
	}
	return load, nil
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
			if err := s.reconcile(s.ctx); err != nil && s.ctx.Err() == nil {
				s.logger.Warn("reconcile", zap.Error(err))
			}
		}
	}
}

// reconcile forgets dead workers, drops placements of deleted functions
// and re-places functions whose placement lost a worker or is stale.
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
		if ok && pl.Version == fn.Version && allAlive(pl.Workers, alive) {
			cfg := fn.Config()
			if want := min(len(alive), max(1, cfg.Min), cfg.Max); want == len(pl.Workers) {
				continue
			}
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
			if _, err := s.Place(ctx, key); err != nil && ctx.Err() == nil {
				s.logger.Warn("re-place function", zap.String("function", key), zap.Error(err))
			}
		}()
	}
	return nil
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
