package worker

import (
	"context"
	"encoding/json"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/autoscale"
	"go.uber.org/zap"
)

// onFunction follows the function registry: a new version reconfigures
// the pool, a delete closes it.
func (w *Worker) onFunction(c gust.Change[gust.Function]) {
	w.mu.Lock()
	if c.Deleted {
		delete(w.functions, c.Key)
		p := w.pools[c.Key]
		delete(w.pools, c.Key)
		w.mu.Unlock()
		if p != nil {
			w.closePool(p)
		}
		return
	}
	defer w.mu.Unlock()
	fn := c.Value
	if known := w.functions[c.Key]; known != nil && newer(known, &fn) {
		return // a call brought the newer version first (poolFor)
	}
	w.functions[c.Key] = &fn
	if p := w.pools[c.Key]; p != nil {
		w.configurePoolLocked(p)
	}
}

// onPlacement follows placements: this worker's share of a function's
// min and max follows from its place in the list.
func (w *Worker) onPlacement(c gust.Change[gust.Placement]) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.Deleted {
		delete(w.placements, c.Key)
	} else {
		w.placements[c.Key] = c.Value
	}
	p := w.pools[c.Key]
	created := false
	if p == nil {
		if fn := w.functions[c.Key]; fn != nil && !c.Deleted && !w.draining && slicesIndex(c.Value.Workers, w.cfg.ID) >= 0 {
			p = newPool(w, fn)
			w.pools[c.Key] = p
			created = true
		} else {
			return
		}
	}
	w.configurePoolLocked(p)
	if created {
		// Its first call finds its container prepared (prepare.go).
		w.tasks.Go(func(context.Context) { w.prepareFirst(p) })
	}
}

// configurePoolLocked gives the pool its function and share.
func (w *Worker) configurePoolLocked(p *pool) {
	fn := w.functions[p.key]
	if fn == nil {
		return
	}
	cfg := fn.Config()
	minShare, maxShare := 0, cfg.Max
	orderShare := 0
	if fn.Scaled != nil {
		orderShare = fn.Scaled.Replicas
	}
	if pl, ok := w.placements[p.key]; ok {
		if i := slicesIndex(pl.Workers, w.cfg.ID); i >= 0 {
			minShare = gust.Share(cfg.Min, i, len(pl.Workers))
			maxShare = gust.Share(cfg.Max, i, len(pl.Workers))
			orderShare = gust.Share(orderShare, i, len(pl.Workers))
		}
	}
	p.mu.Lock()
	p.setFunctionLocked(fn, minShare, maxShare, orderShare)
	if !w.draining {
		p.ensureDesiredLocked()
	}
	p.mu.Unlock()
}

// newer reports whether a is a later deploy than b of the same key.
// Versions count deploys of one function; a function deleted and deployed
// again starts counting anew, with a later CreatedAt.
func newer(a, b *gust.Function) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	return a.Version > b.Version
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// poolFor returns the pool of fn, making it if this worker has none yet.
func (w *Worker) poolFor(fn *gust.Function) (*pool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.poolForLocked(fn)
}

// enterCall is poolFor for a call: it also counts the call in flight,
// under the same lock that Drain sets closing with. callDone ends it.
func (w *Worker) enterCall(fn *gust.Function) (*pool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, err := w.poolForLocked(fn)
	if err == nil {
		w.calls.Add(1)
	}
	return p, err
}

// callDone ends a call counted by enterCall.
func (w *Worker) callDone() {
	if w.calls.Add(-1) == 0 {
		select {
		case w.callsIdle <- struct{}{}:
		default: // a token is there already
		}
	}
}

func (w *Worker) poolForLocked(fn *gust.Function) (*pool, error) {
	if w.closing {
		return nil, gust.ErrDraining
	}
	// The warm path, a known function with a pool, looks its key up from
	// a buffer on the stack (a map index by string(bytes) does not
	// allocate); the key is made a string only to be stored.
	var buf [128]byte
	kb := append(append(append(buf[:0], fn.Spec.Namespace...), '.'), fn.Spec.Service...)
	if known := w.functions[string(kb)]; known != nil && !newer(fn, known) {
		if p := w.pools[string(kb)]; p != nil {
			return p, nil
		}
	}
	key := fn.Key()
	if known := w.functions[key]; known == nil || newer(fn, known) {
		// The caller saw a deploy before this worker's watch did: apply
		// it now, so that the call runs on the new version, with its
		// config.
		w.functions[key] = fn
		if p := w.pools[key]; p != nil {
			w.configurePoolLocked(p)
		}
	}
	if p := w.pools[key]; p != nil {
		return p, nil
	}
	if w.draining {
		// A draining worker serves the pools it has, and no new one.
		return nil, gust.ErrDraining
	}
	p := newPool(w, w.functions[key])
	w.pools[key] = p
	w.configurePoolLocked(p)
	return p, nil
}

// closePool stops every instance of p once its calls have finished; a
// call still in flight stops its instance when it releases it. Called
// without w.mu.
func (w *Worker) closePool(p *pool) {
	p.mu.Lock()
	p.closed = true
	p.broadcastLocked()
	p.mu.Unlock()
	w.dropPrepared(p)
	w.reapPool(p)
	w.mu.Lock()
	delete(w.published, p.key)
	w.mu.Unlock()
	if err := w.state.Status.Delete(w.ctx, p.key+"."+w.cfg.ID); err != nil && w.ctx.Err() == nil {
		w.logger.Warn("delete pool status", zap.String("function", p.key), zap.Error(err))
	}
}

// handlePrepare answers the scheduler's request to get a function ready
// here: image present and one instance ready.
func (w *Worker) handlePrepare(ctx context.Context, data []byte) any {
	var req gust.PrepareRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return gust.ReplyOf(gust.Errorf(gust.EINVALID, "decode prepare request: %v", err))
	}
	fn := req.Function
	if err := w.ensureImage(ctx, fn.Spec.Image); err != nil {
		return gust.ReplyOf(err)
	}
	if o := fn.Scaled; o != nil && o.Replicas == 0 && autoscale.OrderFresh(o.At, time.Now()) {
		// Placed after an order to scale to zero: ready to start here,
		// not started. (An instance started now, after the order had
		// stopped the others, would stay: a call-less start is held at
		// the minimum.)
		return gust.ReplyOf(nil)
	}
	p, err := w.poolFor(&fn)
	if err != nil {
		return gust.ReplyOf(err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ReadyTimeout+30*time.Second)
	defer cancel()
	return gust.ReplyOf(p.waitReady(ctx))
}
