package worker

import (
	"testing"

	"github.com/gustfaas/gust"
)

// TestContainerSpec_Sandbox: the container spec carries the gust.user
// label and a read-only root, and a function that sets no CPU limit gets
// gust.DefaultNanoCPUs; nothing else of the deploy spec reaches it.
func TestContainerSpec_Sandbox(t *testing.T) {
	w := &Worker{cfg: Config{ID: "w1"}}
	for _, c := range []struct {
		name     string
		labels   map[string]string
		limits   *gust.FunctionResources
		readOnly bool
		user     string
		cpus     int64
	}{
		{name: "defaults", cpus: gust.DefaultNanoCPUs},
		{name: "user", labels: map[string]string{gust.LabelUser: "1000:1000"}, user: "1000:1000", cpus: gust.DefaultNanoCPUs},
		{name: "cpu", limits: &gust.FunctionResources{CPU: "0.25"}, readOnly: true, cpus: 250_000_000},
	} {
		t.Run(c.name, func(t *testing.T) {
			fn := &gust.Function{Spec: gust.FunctionSpec{
				Service: "fn", Namespace: gust.DefaultNamespace, Image: "img:1",
				Labels: c.labels, Limits: c.limits, ReadOnlyRootFilesystem: c.readOnly,
			}}
			cfg, err := gust.ParseConfig(&fn.Spec)
			if err != nil {
				t.Fatal(err)
			}
			spec := w.containerSpec(fn, cfg, &instance{id: "i1"})
			if spec.User != c.user || spec.NanoCPUs != c.cpus || spec.ReadOnly != c.readOnly || spec.PidsLimit != gust.DefaultPidsLimit {
				t.Errorf("user %q cpus %d read-only %v pids %d, want %q %d %v %d",
					spec.User, spec.NanoCPUs, spec.ReadOnly, spec.PidsLimit, c.user, c.cpus, c.readOnly, gust.DefaultPidsLimit)
			}
			if _, ok := spec.Labels[gust.LabelUser]; ok {
				t.Errorf("labels: %v, want only Gust's own", spec.Labels)
			}
		})
	}
}
