package gateway

import "go.uber.org/zap"

// RouteRule is one row of the gateway's route table as the tests see it:
// Access is public, admin, caller, namespaced or call; Namespace is where
// a namespaced route finds its namespace.
type RouteRule struct {
	Method, Pattern, Access, Namespace string
}

// RouteRules returns the route table Handler registers.
func RouteRules(s *Server) []RouteRule {
	var out []RouteRule
	for _, rt := range s.routes() {
		out = append(out, RouteRule{Method: rt.method, Pattern: rt.pattern, Access: rt.rule.access.String(), Namespace: rt.rule.ns.String()})
	}
	return out
}

// SetAuditLogger replaces the audit logger, for a test to observe it.
func SetAuditLogger(s *Server, l *zap.Logger) { s.audit = l }

// ActivationWaiting is the number of calls waiting for the activation of
// function key, 0 when none is in progress.
func ActivationWaiting(rt *Router, key string) int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if a := rt.activating[key]; a != nil {
		return a.waiting
	}
	return 0
}
