package gateway

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gustfaas/gust"
)

// Worker states as GET /system/workers reports them: WorkerSilent is a
// worker whose heartbeats this gateway has not heard for longer than its
// worker timeout (no call goes to it); the others are gust.WorkerInfo's.
const (
	WorkerReady    = "ready"
	WorkerDraining = "draining"
	WorkerSilent   = "silent"
)

// WorkerStatus is a worker as GET /system/workers lists it: what it
// advertises (its capacity, what it holds) and its state as this gateway
// judges it.
type WorkerStatus struct {
	gust.WorkerInfo
	State string `json:"state"`
}

// DrainAnswer is the answer of POST /system/workers/{id}/drain.
type DrainAnswer struct {
	ID    string `json:"id"`
	State string `json:"state"`
	// Instances is how many instances the worker held when it started
	// to drain; they stop as their functions are replaced elsewhere.
	Instances int `json:"instances"`
}

// drainTimeout bounds the drain request to a worker: it answers at once,
// the drain goes on without the caller.
const drainTimeout = 10 * time.Second

// Workers returns the workers the router knows, by id, with their state.
func (rt *Router) Workers() []WorkerStatus {
	rt.mu.RLock()
	out := make([]WorkerStatus, 0, len(rt.workers))
	for id, w := range rt.workers {
		st := WorkerReady
		switch {
		case rt.live.Silent(id, rt.workerTimeout):
			st = WorkerSilent
		case w.Draining:
			st = WorkerDraining
		}
		out = append(out, WorkerStatus{WorkerInfo: w, State: st})
	}
	rt.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// listWorkers answers GET /system/workers (admin).
func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, s.router.Workers())
	return nil
}

// drainWorker answers POST /system/workers/{id}/drain (admin): it asks
// the worker, over NATS, to drain (worker.Worker.Evacuate) and answers
// 202 once the worker has started to: the worker takes no new function,
// and stops its instances as the scheduler places their functions
// elsewhere; no call fails because of it.
func (s *Server) drainWorker(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "id")
	known := false
	for _, ws := range s.router.Workers() {
		if ws.ID == id {
			known = true
		}
	}
	if !known {
		return gust.Errorf(gust.ENOTFOUND, "worker %s not found", id)
	}
	ctx, cancel := context.WithTimeout(r.Context(), drainTimeout)
	defer cancel()
	var rep gust.DrainReply
	if err := s.reqs.Request(ctx, gust.SubjectDrainPrefix+id, gust.DrainRequest{}, &rep); err != nil {
		return gust.Errorf(gust.EUNAVAILABLE, "worker %s did not answer the drain request: %s", id, gust.ErrorMessage(err))
	}
	if err := rep.Err(); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, DrainAnswer{ID: id, State: WorkerDraining, Instances: rep.Instances})
	return nil
}

// Workers lists the cluster's workers (admin).
func (c *Client) Workers(ctx context.Context) ([]WorkerStatus, error) {
	var out []WorkerStatus
	err := c.do(ctx, http.MethodGet, "/system/workers", nil, &out)
	return out, err
}

// DrainWorker asks worker id to drain (admin).
func (c *Client) DrainWorker(ctx context.Context, id string) (DrainAnswer, error) {
	var out DrainAnswer
	err := c.do(ctx, http.MethodPost, "/system/workers/"+url.PathEscape(id)+"/drain", nil, &out)
	return out, err
}
