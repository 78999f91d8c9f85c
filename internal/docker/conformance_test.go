package docker

import (
	"context"
	"testing"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/runtimetest"
)

// TestConformance runs the gust.Runtime conformance suite against the
// Docker Engine, with the test function image built from testdata/fn.
// The worker's unit tests run on the fake that passes the same suite.
func TestConformance(t *testing.T) {
	MustDocker(t)
	runtimetest.Run(t, func(t *testing.T) runtimetest.Harness {
		r := MustRuntime(t)
		return runtimetest.Harness{
			Runtime: r,
			Image:   MustImage(t),
			Labels:  map[string]string{labelTest: runID},
			Crash: func(spec *gust.ContainerSpec) {
				spec.Env = append(spec.Env, "FN_EXIT_AT_START=3")
			},
			CrashCode:    3,
			MissingImage: "gust-test-" + runID + "-missing:latest",
			// All that `docker inspect` shows.
			Inspect: func(ctx context.Context, id string) (string, error) {
				_, raw, err := r.client.ContainerInspectWithRaw(ctx, id, false)
				return string(raw), err
			},
		}
	})
}
