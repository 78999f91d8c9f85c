package gateway

import "time"

// SetWorkerTimeout sets how long a worker may go unheard before the router
// stops routing to it; call it before Start.
func SetWorkerTimeout(rt *Router, d time.Duration) { rt.workerTimeout = d }
