package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/gustfaas/gust"
)

var _ gust.CPUSampler = (*Runtime)(nil)

// CPUUsage returns the container's cumulative CPU time from the Engine's
// stats endpoint (GET /containers/{id}/stats?stream=0&one-shot=1):
// cpu_stats.cpu_usage.total_usage, in nanoseconds on Linux, which the
// Engine reads from the container's cgroup (cpu.stat usage_usec on cgroup
// v2, cpuacct.usage on v1). The Engine API is used rather than reading
// /sys/fs/cgroup directly because the worker may run in a container or on
// another host than the Engine (DOCKER_HOST), and the cgroup path depends
// on the Engine's cgroup driver. one-shot (API 1.41 and later; the client
// negotiates the version, as for every other call) answers at once
// without waiting for a second sample; an older Engine ignores it and
// answers after about a second, which the worker's sampling goroutine
// absorbs. One request per container per sample: the worker samples only
// the functions scaled by CPU, every 2 s.
func (r *Runtime) CPUUsage(ctx context.Context, id string) (_ time.Duration, err error) {
	ctx, end := bound(ctx, r.cfg.CallTimeout)
	defer end(&err)
	resp, err := r.client.ContainerStatsOneShot(ctx, id)
	if err != nil {
		return 0, instanceErr("container stats", err)
	}
	defer resp.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, fmt.Errorf("container stats: %w", err)
	}
	if st.Read.IsZero() {
		// A container that is not running reports zeros with no read
		// time: no figure rather than a counter that went back to 0.
		return 0, fmt.Errorf("container stats: %s is not running", id)
	}
	return time.Duration(st.CPUStats.CPUUsage.TotalUsage), nil
}
