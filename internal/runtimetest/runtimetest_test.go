package runtimetest_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/mock"
	"github.com/gustfaas/gust/internal/runtimetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestConformance runs the suite against the fake: the worker's tests
// rely on the fake behaving as Docker does.
func TestConformance(t *testing.T) {
	runtimetest.Run(t, func(t *testing.T) runtimetest.Harness {
		rt := mock.NewRuntime(nil)
		t.Cleanup(rt.Close)
		rt.SetMissing("gust-conformance-missing:latest")
		rt.ExitOnStart("gust-conformance-crash:latest", 3)
		return runtimetest.Harness{
			Runtime:      rt,
			Image:        "gust-conformance:latest",
			Crash:        func(spec *gust.ContainerSpec) { spec.Image = "gust-conformance-crash:latest" },
			CrashCode:    3,
			MissingImage: "gust-conformance-missing:latest",
			Inspect: func(_ context.Context, id string) (string, error) {
				return rt.Inspect(id)
			},
		}
	})
}
