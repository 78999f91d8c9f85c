package gateway

import "time"

// SetWorkerTimeout sets how long a worker may go unheard before the router
// stops routing to it; call it before Start.
func SetWorkerTimeout(rt *Router, d time.Duration) { rt.workerTimeout = d }

// Routed reports whether the router has seen both the function key and
// its placement (its watches may lag the writes a test makes).
func Routed(rt *Router, key string) bool {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	_, placed := rt.placements[key]
	return placed && rt.functions[key] != nil
}
