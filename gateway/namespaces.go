package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// The namespace routes serve OpenFaaS's namespace API (name, labels,
// annotations) plus Gust's quota, from the Tenancy (WithTenancy). A
// gateway without one answers them 404, as it has no tenants.

// namespaceRequest is the body of POST /system/namespace/ and PUT
// /system/namespace/{name}: OpenFaaS's shape, plus quota.
type namespaceRequest struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Quota       *gust.Quota       `json:"quota"`
}

// tenancyOrNotFound returns the gateway's Tenancy, or the error that
// answers a tenancy route on a gateway without one.
func (s *Server) tenancyOrNotFound() (*gust.Tenancy, error) {
	if s.tenancy == nil {
		return nil, gust.Errorf(gust.ENOTFOUND, "this gateway has no namespaces, keys or secrets (no tenancy configured)")
	}
	return s.tenancy, nil
}

// validateQuota checks a namespace's quota; the error names the field
// ("quota.memory").
func validateQuota(q *gust.Quota) error {
	if q == nil {
		return nil
	}
	if q.Instances < 0 {
		return gust.Invalidf("quota.instances", "quota.instances %d: want 0 (no bound) or more", q.Instances)
	}
	if q.Concurrency < 0 {
		return gust.Invalidf("quota.concurrency", "quota.concurrency %d: want 0 (no bound) or more", q.Concurrency)
	}
	if q.Memory != "" {
		if _, err := gust.ParseMemory(q.Memory); err != nil {
			return gust.Invalidf("quota.memory", "quota.memory %q: %v", q.Memory, err)
		}
	}
	return nil
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// createNamespace answers POST /system/namespace/: 201 with the namespace,
// 409 if it exists.
func (s *Server) createNamespace(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenancyOrNotFound()
	if err != nil {
		return err
	}
	var req namespaceRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Name == "" {
		return gust.Invalidf("name", "name is required")
	}
	if !gust.ValidName(req.Name) {
		return gust.Invalidf("name", "namespace %q is not a valid name: lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit", req.Name)
	}
	if err := validateQuota(req.Quota); err != nil {
		return err
	}
	ns := gust.Namespace{
		Name: req.Name, Labels: orEmpty(req.Labels), Annotations: orEmpty(req.Annotations),
		Quota: req.Quota, Created: time.Now().UTC(),
	}
	if _, err := t.Namespaces.Create(r.Context(), ns.Name, ns); err != nil {
		if errors.Is(err, gust.ErrConflict) {
			return gust.Errorf(gust.ECONFLICT, "namespace %s exists", ns.Name)
		}
		return err
	}
	s.logger.Info("namespace created", zap.String("namespace", ns.Name))
	writeJSON(w, http.StatusCreated, ns)
	return nil
}

// namespaceOf reads the namespace named in the path, with its revision.
func (s *Server) namespaceOf(ctx context.Context, t *gust.Tenancy, name string) (gust.Namespace, uint64, error) {
	if !gust.ValidName(name) {
		return gust.Namespace{}, 0, gust.Invalidf("name", "namespace %q is not a valid name", name)
	}
	ns, rev, err := t.Namespaces.Get(ctx, name)
	if errors.Is(err, gust.ErrNotFound) {
		return ns, 0, gust.Errorf(gust.ENOTFOUND, "namespace %s not found", name)
	}
	return ns, rev, err
}

// getNamespace answers GET /system/namespace/{name}.
func (s *Server) getNamespace(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenancyOrNotFound()
	if err != nil {
		return err
	}
	ns, _, err := s.namespaceOf(r.Context(), t, chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	ns.Labels, ns.Annotations = orEmpty(ns.Labels), orEmpty(ns.Annotations)
	writeJSON(w, http.StatusOK, ns)
	return nil
}

// updateNamespace answers PUT /system/namespace/{name}: the labels,
// annotations and quota are replaced by the body's.
func (s *Server) updateNamespace(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenancyOrNotFound()
	if err != nil {
		return err
	}
	name := chi.URLParam(r, "name")
	var req namespaceRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Name != "" && req.Name != name {
		return gust.Invalidf("name", "name %q differs from the namespace in the path, %q", req.Name, name)
	}
	if err := validateQuota(req.Quota); err != nil {
		return err
	}
	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		ns, rev, err := s.namespaceOf(ctx, t, name)
		if err != nil {
			return err
		}
		ns.Labels, ns.Annotations, ns.Quota = orEmpty(req.Labels), orEmpty(req.Annotations), req.Quota
		_, err = t.Namespaces.Update(ctx, name, ns, rev)
		if errors.Is(err, gust.ErrConflict) && attempt < 3 {
			continue
		}
		if errors.Is(err, gust.ErrConflict) {
			return gust.Errorf(gust.ECONFLICT, "namespace %s changed during this update; try again", name)
		}
		if err != nil {
			return err
		}
		s.logger.Info("namespace updated", zap.String("namespace", name))
		writeJSON(w, http.StatusOK, ns)
		return nil
	}
}

// deleteNamespace answers DELETE /system/namespace/{name}: 409 while it
// holds functions; the default namespace cannot go. Its keys are revoked
// and its secrets deleted with it, so a namespace made again later under
// the same name inherits neither.
func (s *Server) deleteNamespace(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenancyOrNotFound()
	if err != nil {
		return err
	}
	name := chi.URLParam(r, "name")
	if name == gust.DefaultNamespace {
		return gust.Invalidf("name", "namespace %s always exists and cannot be deleted", name)
	}
	ctx := r.Context()
	if _, _, err := s.namespaceOf(ctx, t, name); err != nil {
		return err
	}
	fns, err := s.state.Functions.List(ctx, name+".*")
	if err != nil {
		return err
	}
	if len(fns) > 0 {
		return gust.Errorf(gust.ECONFLICT, "namespace %s still has %d functions; remove them first", name, len(fns))
	}
	keys, err := t.Keys.List(ctx, ">")
	if err != nil {
		return err
	}
	for id, k := range keys {
		if k.Namespace == name {
			if err := t.Keys.Delete(ctx, id); err != nil {
				return fmt.Errorf("revoke key %s: %w", id, err)
			}
		}
	}
	secrets, err := t.Secrets.List(ctx, name)
	if err != nil {
		return err
	}
	for _, sec := range secrets {
		if err := t.Secrets.Delete(ctx, name, sec); err != nil && !errors.Is(err, gust.ErrNotFound) {
			return fmt.Errorf("delete secret %s: %w", sec, err)
		}
	}
	if err := t.Namespaces.Delete(ctx, name); err != nil {
		return err
	}
	s.logger.Info("namespace deleted", zap.String("namespace", name))
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// tenantNamespaces answers GET /system/namespaces from the Tenancy: the
// names, sorted, as faas-cli expects.
func (s *Server) tenantNamespaces(w http.ResponseWriter, r *http.Request) error {
	all, err := s.tenancy.Namespaces.List(r.Context(), "*")
	if err != nil {
		return err
	}
	// ?namespace= narrows the list to that one: a key's listing, whose
	// namespace the route's guard fills in (auth.go).
	only := r.URL.Query().Get("namespace")
	out := make([]string, 0, len(all))
	for name := range all {
		if only == "" || name == only {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	writeJSON(w, http.StatusOK, out)
	return nil
}

// checkTenancy refuses a deploy into a namespace that does not exist
// (field "namespace") or naming a secret its namespace does not hold
// (field "secrets"). A gateway without a Tenancy checks nothing.
func (s *Server) checkTenancy(ctx context.Context, spec *gust.FunctionSpec) error {
	if s.tenancy == nil {
		return nil
	}
	if _, _, err := s.tenancy.Namespaces.Get(ctx, spec.Namespace); err != nil {
		if errors.Is(err, gust.ErrNotFound) {
			return gust.Invalidf("namespace", "namespace %s does not exist; create it first (POST /system/namespace/)", spec.Namespace)
		}
		return err
	}
	if len(spec.Secrets) == 0 {
		return nil
	}
	have, err := s.tenancy.Secrets.List(ctx, spec.Namespace)
	if err != nil {
		return err
	}
	for _, name := range spec.Secrets {
		if !gust.ValidName(name) {
			return gust.Invalidf("secrets", "secret name %q is not a valid name", name)
		}
		if !slices.Contains(have, name) {
			return gust.Invalidf("secrets", "secret %s does not exist in namespace %s", name, spec.Namespace)
		}
	}
	return nil
}
