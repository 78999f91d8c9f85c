package docker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

// TestCPUUsage: a running container's cumulative CPU time is read from the
// Engine: more than zero once it has started and served (its process ran),
// never going back between reads; an unknown id is ErrInstanceNotFound.
func TestCPUUsage(t *testing.T) {
	r := MustRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := r.Start(ctx, testSpec(t))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	MustHealthy(t, inst)
	first, err := r.CPUUsage(ctx, inst.ID)
	if err != nil {
		t.Fatalf("CPUUsage: %v", err)
	}
	if first <= 0 {
		t.Errorf("CPUUsage of a started container: got %s, want more than 0", first)
	}
	for range 20 { // some work for the next read to count
		MustHealthy(t, inst)
	}
	second, err := r.CPUUsage(ctx, inst.ID)
	if err != nil {
		t.Fatalf("CPUUsage: %v", err)
	}
	if second < first {
		t.Errorf("CPUUsage went back: %s then %s", first, second)
	}
	t.Logf("CPU time: %s, then %s", first, second)
	if _, err := r.CPUUsage(ctx, "gust-test-no-such-container"); !errors.Is(err, gust.ErrInstanceNotFound) {
		t.Errorf("CPUUsage of an unknown id: got %v, want gust.ErrInstanceNotFound", err)
	}
}
