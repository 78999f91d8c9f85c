package gateway

import (
	"errors"
	"net/http"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// The secret routes serve /system/secrets as OpenFaaS does. A value goes
// in (value, or rawValue as base64 bytes) and never comes out: answers
// name secrets, and log lines name them, nothing more.

// secretRequest is OpenFaaS's types.Secret.
type secretRequest struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Value     string `json:"value,omitempty"`
	RawValue  []byte `json:"rawValue,omitempty"`
}

// secretInfo is a secret as answers show it.
type secretInfo struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// secretBody decodes and checks a secret route's body; the namespace
// defaults to the query's, then to the default namespace.
func secretBody(w http.ResponseWriter, r *http.Request, needValue bool) (secretRequest, error) {
	var req secretRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return req, err
	}
	if req.Namespace == "" {
		ns, err := namespaceParam(r)
		if err != nil {
			return req, err
		}
		req.Namespace = ns
	}
	if !gust.ValidName(req.Namespace) {
		return req, gust.Invalidf("namespace", "namespace %q is not a valid name", req.Namespace)
	}
	if req.Name == "" {
		return req, gust.Invalidf("name", "name is required")
	}
	if !gust.ValidName(req.Name) {
		return req, gust.Invalidf("name", "secret name %q is not a valid name: lower-case letters, digits and '-', at most 63", req.Name)
	}
	if needValue && req.Value == "" && len(req.RawValue) == 0 {
		return req, gust.Invalidf("value", "value or rawValue is required")
	}
	return req, nil
}

// value is the secret's bytes: rawValue when given, as OpenFaaS.
func (req *secretRequest) value() []byte {
	if len(req.RawValue) > 0 {
		return req.RawValue
	}
	return []byte(req.Value)
}

// listSecrets answers GET /system/secrets?namespace=.
func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenancyOrNotFound()
	if err != nil {
		return err
	}
	ns, err := namespaceParam(r)
	if err != nil {
		return err
	}
	names, err := t.Secrets.List(r.Context(), ns)
	if err != nil {
		return err
	}
	out := make([]secretInfo, 0, len(names))
	for _, n := range names {
		out = append(out, secretInfo{Name: n, Namespace: ns})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// createSecret answers POST /system/secrets: 201, or 409 if it exists.
func (s *Server) createSecret(w http.ResponseWriter, r *http.Request) error {
	return s.putSecret(w, r, true)
}

// updateSecret answers PUT /system/secrets: 200, or 404 if it does not
// exist. Instances started from now on mount the new value; running ones
// keep the value they were started with until they are replaced.
func (s *Server) updateSecret(w http.ResponseWriter, r *http.Request) error {
	return s.putSecret(w, r, false)
}

func (s *Server) putSecret(w http.ResponseWriter, r *http.Request, create bool) error {
	t, err := s.tenancyOrNotFound()
	if err != nil {
		return err
	}
	req, err := secretBody(w, r, true)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if _, _, err := t.Namespaces.Get(ctx, req.Namespace); err != nil {
		if errors.Is(err, gust.ErrNotFound) {
			return gust.Invalidf("namespace", "namespace %s does not exist", req.Namespace)
		}
		return err
	}
	err = t.Secrets.Put(ctx, req.Namespace, req.Name, req.value(), create)
	switch {
	case errors.Is(err, gust.ErrConflict) && create:
		return gust.Errorf(gust.ECONFLICT, "secret %s exists in namespace %s; update it with PUT", req.Name, req.Namespace)
	case errors.Is(err, gust.ErrConflict):
		return gust.Errorf(gust.ECONFLICT, "secret %s changed during this update; try again", req.Name)
	case errors.Is(err, gust.ErrNotFound):
		return gust.Errorf(gust.ENOTFOUND, "secret %s not found in namespace %s", req.Name, req.Namespace)
	case err != nil:
		return err
	}
	status, what := http.StatusOK, "secret updated"
	if create {
		status, what = http.StatusCreated, "secret created"
	}
	s.logger.Info(what, zap.String("namespace", req.Namespace), zap.String("secret", req.Name))
	writeJSON(w, status, secretInfo{Name: req.Name, Namespace: req.Namespace})
	return nil
}

// deleteSecret answers DELETE /system/secrets {"name","namespace"}: 202,
// or 404.
func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenancyOrNotFound()
	if err != nil {
		return err
	}
	req, err := secretBody(w, r, false)
	if err != nil {
		return err
	}
	if err := t.Secrets.Delete(r.Context(), req.Namespace, req.Name); err != nil {
		if errors.Is(err, gust.ErrNotFound) {
			return gust.Errorf(gust.ENOTFOUND, "secret %s not found in namespace %s", req.Name, req.Namespace)
		}
		return err
	}
	s.logger.Info("secret deleted", zap.String("namespace", req.Namespace), zap.String("secret", req.Name))
	w.WriteHeader(http.StatusAccepted)
	return nil
}
