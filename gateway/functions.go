package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/go-chi/chi/v5"
	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/httplimits"
	"go.uber.org/zap"
)

// maxSpecBytes bounds a management request body.
const maxSpecBytes = 1 << 20

// decodeJSON reads a JSON body into v; malformed JSON is a 400.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSpecBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return gust.Errorf(gust.ETOOLARGE, "request body is over %d bytes", maxSpecBytes)
		}
		return gust.Errorf(gust.EINVALID, "read request body: %v", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return gust.Invalidf(te.Field, "field %s: want %s, got JSON %s", te.Field, te.Type, te.Value)
		}
		return gust.Errorf(gust.EINVALID, "malformed JSON: %v", err)
	}
	return nil
}

// HeaderWarning carries what a deploy changed of what was asked, such as
// a memory limit raised to Docker's minimum.
const HeaderWarning = "X-Gust-Warning"

// labelFaasFunction is the label OpenFaaS providers give every function,
// its name.
const labelFaasFunction = "faas_function"

// info answers GET /system/info in OpenFaaS's shape.
func (s *Server) info(w http.ResponseWriter, r *http.Request) error {
	v := map[string]string{"release": s.cfg.Version, "sha": buildSHA(), "commit_message": ""}
	writeJSON(w, http.StatusOK, map[string]any{
		"provider": map[string]any{"provider": "gust", "orchestration": "docker", "version": v},
		"version":  v,
		"arch":     runtime.GOARCH,
	})
	return nil
}

// namespaces answers GET /system/namespaces: the Tenancy's namespaces
// or, on a gateway without one, the default namespace and every namespace
// that holds a function.
func (s *Server) namespaces(w http.ResponseWriter, r *http.Request) error {
	if s.tenancy != nil {
		return s.tenantNamespaces(w, r)
	}
	fns, err := s.state.Functions.List(r.Context(), ">")
	if err != nil {
		return err
	}
	out := []string{gust.DefaultNamespace}
	for _, fn := range fns {
		if !slices.Contains(out, fn.Spec.Namespace) {
			out = append(out, fn.Spec.Namespace)
		}
	}
	sort.Strings(out[1:])
	writeJSON(w, http.StatusOK, out)
	return nil
}

// namespaceParam returns the namespace query parameter, validated.
func namespaceParam(r *http.Request) (string, error) {
	ns := r.URL.Query().Get("namespace")
	if ns == "" {
		return gust.DefaultNamespace, nil
	}
	if !gust.ValidName(ns) {
		return "", gust.Invalidf("namespace", "namespace %q is not a valid name", ns)
	}
	return ns, nil
}

// statusOf combines a function record with its pools' status.
func statusOf(fn *gust.Function, pools []gust.PoolStatus) gust.FunctionStatus {
	sp := fn.Spec
	// As OpenFaaS providers report them: labels and annotations always
	// objects, and the label faas_function naming the function.
	labels := make(map[string]string, len(sp.Labels)+1)
	maps.Copy(labels, sp.Labels)
	labels[labelFaasFunction] = sp.Service
	annotations := make(map[string]string, len(sp.Annotations))
	maps.Copy(annotations, sp.Annotations)
	st := gust.FunctionStatus{
		Name: sp.Service, Image: sp.Image, Namespace: sp.Namespace, EnvProcess: sp.EnvProcess,
		EnvVars: sp.EnvVars, Constraints: sp.Constraints, Secrets: sp.Secrets, Labels: labels,
		Annotations: annotations, Limits: sp.Limits, Requests: sp.Requests,
		ReadOnlyRootFilesystem: sp.ReadOnlyRootFilesystem, CreatedAt: fn.CreatedAt,
	}
	var latest time.Time
	for _, p := range pools {
		st.Replicas += uint64(p.Replicas)
		st.AvailableReplicas += uint64(p.Available)
		st.InvocationCount += float64(p.Invocations)
		if p.Updated.After(latest) {
			latest = p.Updated
		}
	}
	if o := fn.Scaled; o != nil && !latest.After(o.At) {
		// No pool has reported since the last scale-function: its count
		// is what the pools are moving to, and what an OpenFaaS client
		// that scaled reads back at once.
		st.Replicas = uint64(o.Replicas)
	}
	return st
}

// poolsByFunction groups pool status entries (keyed ns.name.worker) by
// function key.
func poolsByFunction(all map[string]gust.PoolStatus) map[string][]gust.PoolStatus {
	out := map[string][]gust.PoolStatus{}
	for k, p := range all {
		if i := strings.LastIndexByte(k, '.'); i > 0 {
			out[k[:i]] = append(out[k[:i]], p)
		}
	}
	return out
}

// listFunctions answers GET /system/functions?namespace=.
func (s *Server) listFunctions(w http.ResponseWriter, r *http.Request) error {
	ns, err := namespaceParam(r)
	if err != nil {
		return err
	}
	fns, err := s.state.Functions.List(r.Context(), ns+".*")
	if err != nil {
		return err
	}
	pools, err := s.state.Status.List(r.Context(), ns+".*.*")
	if err != nil {
		return err
	}
	byFn := poolsByFunction(pools)
	out := make([]gust.FunctionStatus, 0, len(fns))
	for key, fn := range fns {
		out = append(out, statusOf(&fn, byFn[key]))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getFunction answers GET /system/function/{name}?namespace=.
func (s *Server) getFunction(w http.ResponseWriter, r *http.Request) error {
	ns, err := namespaceParam(r)
	if err != nil {
		return err
	}
	name := chi.URLParam(r, "name")
	fn, err := s.lookup(r.Context(), ns, name)
	if err != nil {
		return err
	}
	pools, err := s.state.Status.List(r.Context(), fn.Key()+".*")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, statusOf(fn, poolsByFunction(pools)[fn.Key()]))
	return nil
}

// lookup reads a function from the registry; a missing one is ENOTFOUND.
func (s *Server) lookup(ctx context.Context, ns, name string) (*gust.Function, error) {
	fn, _, err := s.lookupRev(ctx, ns, name)
	return fn, err
}

// lookupRev is lookup with the record's revision, for updates.
func (s *Server) lookupRev(ctx context.Context, ns, name string) (*gust.Function, uint64, error) {
	if !gust.ValidName(name) {
		return nil, 0, gust.Invalidf("name", "function name %q is not a valid name", name)
	}
	fn, rev, err := s.state.Functions.Get(ctx, gust.FunctionKey(ns, name))
	if errors.Is(err, gust.ErrNotFound) {
		return nil, 0, gust.Errorf(gust.ENOTFOUND, "function %s not found in namespace %s", name, ns)
	}
	if err != nil {
		return nil, 0, err
	}
	return &fn, rev, nil
}

// deploy answers POST /system/functions: create, or replace an existing
// function with a new version. It answers 202 once the first instance is
// ready, so an image that cannot be had or does not start fails the
// deploy (400 naming "image") and leaves the registry as it was.
func (s *Server) deploy(w http.ResponseWriter, r *http.Request) error {
	return s.put(w, r, false)
}

// update answers PUT /system/functions: like deploy, but 404 for a
// function that does not exist.
func (s *Server) update(w http.ResponseWriter, r *http.Request) error {
	return s.put(w, r, true)
}

func (s *Server) put(w http.ResponseWriter, r *http.Request, mustExist bool) error {
	var spec gust.FunctionSpec
	if err := decodeJSON(w, r, &spec); err != nil {
		return err
	}
	if err := s.validateSpec(&spec); err != nil {
		return err
	}
	spec.Normalize()
	if warn := spec.MemoryRaised(); warn != "" {
		w.Header().Set(HeaderWarning, warn)
		s.logger.Warn("deploy: "+warn, zap.String("function", gust.FunctionKey(spec.Namespace, spec.Service)))
	}
	// A deploy waits for its first instance, up to DeployTimeout: longer
	// than the server's write timeout lets an answer take.
	httplimits.Extend(w, s.cfg.DeployTimeout+time.Minute)
	ctx := r.Context()
	if err := s.checkTenancy(ctx, &spec); err != nil {
		return err
	}
	key := gust.FunctionKey(spec.Namespace, spec.Service)
	old, rev, err := s.state.Functions.Get(ctx, key)
	exists := err == nil
	if err != nil && !errors.Is(err, gust.ErrNotFound) {
		return err
	}
	if mustExist && !exists {
		return gust.Errorf(gust.ENOTFOUND, "function %s not found in namespace %s", spec.Service, spec.Namespace)
	}
	now := time.Now().UTC()
	fn := gust.Function{Spec: spec, CreatedAt: now, UpdatedAt: now, Version: 1}
	// The namespace's quota of instances and memory counts the new spec
	// in place of the old one; a refusal changes nothing.
	release, err := s.holdQuota(ctx, &fn, "deploy")
	if err != nil {
		return err
	}
	if exists {
		fn.CreatedAt, fn.Version = old.CreatedAt, old.Version+1
		_, err = s.state.Functions.Update(ctx, key, fn, rev)
	} else {
		_, err = s.state.Functions.Create(ctx, key, fn)
	}
	release()
	if errors.Is(err, gust.ErrConflict) {
		return gust.Errorf(gust.ECONFLICT, "function %s changed during this deploy; try again", key)
	}
	if err != nil {
		return err
	}
	logger := s.logger.With(zap.String("function", key), zap.Uint64("version", fn.Version))
	pctx, cancel := context.WithTimeout(ctx, s.cfg.DeployTimeout)
	defer cancel()
	var rep gust.PlaceReply
	err = s.reqs.Request(pctx, gust.SubjectPlace, gust.PlaceRequest{Namespace: spec.Namespace, Name: spec.Service}, &rep)
	if err == nil {
		err = rep.Err()
	}
	switch code := gust.ErrorCode(err); {
	case err == nil:
		logger.Info("function deployed", zap.String("image", spec.Image))
	case code == gust.EINVALID, code == gust.EUNAVAILABLE && gust.ErrorField(err) == "memory":
		// Bad input, or a function no worker has room for (the
		// scheduler's answer names the memory), changes nothing: put
		// back what was there, even if the caller has gone meanwhile.
		rctx := context.WithoutCancel(ctx)
		if exists {
			_, rerr := s.state.Functions.Put(rctx, key, old)
			err = errors.Join(err, rerr)
		} else if rerr := s.state.Functions.Delete(rctx, key); rerr != nil {
			err = errors.Join(err, rerr)
		}
		logger.Info("deploy refused", zap.Error(err))
		return err
	default:
		// The function is registered; it gets placed as soon as a
		// scheduler and a worker can.
		logger.Warn("function registered but not placed yet", zap.Error(err))
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"service": spec.Service, "namespace": spec.Namespace, "version": fn.Version})
	return nil
}

// validateSpec is where a deploy is validated: the spec within the
// operator's bounds, and its image a reference Docker takes (checked
// here, so that a malformed one is refused before any worker sees it and
// the Engine's own words never reach the caller).
func (s *Server) validateSpec(spec *gust.FunctionSpec) error {
	if err := spec.ValidateWithin(s.cfg.Bounds); err != nil {
		return err
	}
	if _, err := reference.ParseNormalizedNamed(spec.Image); err != nil {
		return gust.Invalidf("image", "image %q is not a valid image reference (such as name:tag, registry/name:tag or name@sha256:...)", spec.Image)
	}
	return nil
}

// deleteRequest is OpenFaaS's DeleteFunctionRequest.
type deleteRequest struct {
	FunctionName string `json:"functionName"`
	Namespace    string `json:"namespace"`
}

// deleteFunction answers DELETE /system/functions.
func (s *Server) deleteFunction(w http.ResponseWriter, r *http.Request) error {
	var req deleteRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.FunctionName == "" {
		return gust.Invalidf("functionName", "functionName is required")
	}
	if req.Namespace == "" {
		ns, err := namespaceParam(r)
		if err != nil {
			return err
		}
		req.Namespace = ns
	}
	if !gust.ValidName(req.Namespace) {
		return gust.Invalidf("namespace", "namespace %q is not a valid name", req.Namespace)
	}
	fn, err := s.lookup(r.Context(), req.Namespace, req.FunctionName)
	if err != nil {
		return err
	}
	if err := s.state.Functions.Delete(r.Context(), fn.Key()); err != nil {
		return err
	}
	if err := s.state.Placements.Delete(r.Context(), fn.Key()); err != nil {
		return err
	}
	s.logger.Info("function deleted", zap.String("function", fn.Key()))
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// scaleRequest is OpenFaaS's ScaleServiceRequest.
type scaleRequest struct {
	ServiceName string `json:"serviceName"`
	Namespace   string `json:"namespace"`
	Replicas    *int64 `json:"replicas"`
}

// scaleFunction answers POST /system/scale-function/{name}: the function
// gets that many instances now, as OpenFaaS sets replicas (0 stops its idle
// instances at once; calls in flight finish, and the next call starts it
// from zero). It is an order, not a minimum: autoscaling moves the function
// within its min and max afterwards. A count above its max is its max.
func (s *Server) scaleFunction(w http.ResponseWriter, r *http.Request) error {
	var req scaleRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Replicas == nil {
		return gust.Invalidf("replicas", "replicas is required")
	}
	if most := s.cfg.Bounds.WithDefaults().MaxScale; *req.Replicas < 0 || *req.Replicas > int64(most) {
		return gust.Invalidf("replicas", "replicas %d: want 0 to %d", *req.Replicas, most)
	}
	ns := req.Namespace
	if ns == "" {
		var err error
		if ns, err = namespaceParam(r); err != nil {
			return err
		}
	} else if !gust.ValidName(ns) {
		return gust.Invalidf("namespace", "namespace %q is not a valid name", ns)
	}
	name := chi.URLParam(r, "name")
	ctx := r.Context()
	var old gust.Function
	var rev uint64
	for attempt := 0; ; attempt++ {
		fn, frev, err := s.lookupRev(ctx, ns, name)
		if err != nil {
			return err
		}
		old = *fn
		n := min(int(*req.Replicas), fn.Config().Max)
		fn.Scaled = &gust.ScaleOrder{Replicas: n, At: time.Now()}
		release, err := s.holdQuota(ctx, fn, "scale")
		if err != nil {
			return err
		}
		rev, err = s.state.Functions.Update(ctx, fn.Key(), *fn, frev)
		release()
		if errors.Is(err, gust.ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	// Re-place: more instances may spread the function over more
	// workers. The caller waits for the placement to be decided, not for
	// its instances to start; a count no worker has room for is
	// refused and put back (unless the function changed meanwhile).
	pctx, cancel := context.WithTimeout(ctx, s.cfg.DeployTimeout)
	defer cancel()
	var rep gust.PlaceReply
	err := s.reqs.Request(pctx, gust.SubjectPlace, gust.PlaceRequest{Namespace: ns, Name: name, NoWait: true}, &rep)
	if err == nil {
		err = rep.Err()
	}
	if gust.ErrorCode(err) == gust.EUNAVAILABLE && gust.ErrorField(err) == "memory" {
		if _, rerr := s.state.Functions.Update(context.WithoutCancel(ctx), old.Key(), old, rev); rerr != nil && !errors.Is(rerr, gust.ErrConflict) {
			err = errors.Join(err, rerr)
		}
		return err
	}
	if err != nil {
		// The minimum is recorded; it is placed as soon as a scheduler
		// and a worker can.
		s.logger.Warn("place after scale", zap.String("function", gust.FunctionKey(ns, name)), zap.Error(err))
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// buildSHA is the commit the binary was built from, as the Go toolchain
// stamped it (vcs.revision, with "-dirty" for uncommitted changes), or
// "unknown" for a build without version control information.
func buildSHA() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	sha, dirty := "", false
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			sha = kv.Value
		case "vcs.modified":
			dirty = kv.Value == "true"
		}
	}
	switch {
	case sha == "":
		return "unknown"
	case dirty:
		return sha + "-dirty"
	}
	return sha
}
