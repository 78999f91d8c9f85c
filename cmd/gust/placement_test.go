package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/gateway"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/natsbus"
)

// TestSeparateWorkers_ScaleUpOntoAnother runs one scheduler, two workers
// and a gateway as separate roles. A function with a warm minimum of one,
// a max of two and one call per instance is placed on one worker; under
// a load of four slow calls at once that worker's share of the max fills
// up, and the scheduler places the function on the other worker too,
// which then runs instances of it.
func TestSeparateWorkers_ScaleUpOntoAnother(t *testing.T) {
	MustImages(t)
	ctx := context.Background()
	r := mustRolesApart(t, "grow")
	r.scheduler(defaultSchedulerConfig(), "")
	var ids []string
	for i := 1; i <= 2; i++ {
		cfg := defaultWorkerConfig()
		cfg.ID = fmt.Sprintf("grow-w%d-%d", i, time.Now().UnixNano())
		ids = append(ids, r.worker(cfg, cfg.ID).Config.ID)
	}
	_, base := r.gateway()
	c := gateway.NewClient(base)
	spec := gust.FunctionSpec{Service: "grow", Image: imageTag("sleep"), Labels: map[string]string{
		gust.LabelScaleMin: "1", gust.LabelScaleMax: "2", gust.LabelConcurrency: "1"}}
	if err := c.Deploy(ctx, spec, false); err != nil {
		t.Fatal(err)
	}
	running := func(id string) int {
		n := 0
		for _, c := range Containers(t, map[string]string{gust.LabelFunction: "grow", gust.LabelWorker: id}) {
			if c.Running {
				n++
			}
		}
		return n
	}
	bus, err := natsbus.ConnectWith(roleNATS(r.NATS, natsbus.UserScheduler), r.logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	state, err := natsbus.OpenState(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	placedOn := func() []string {
		pl, _, err := state.Placements.Get(ctx, gust.FunctionKey(gust.DefaultNamespace, "grow"))
		if err != nil {
			t.Fatal(err)
		}
		return pl.Workers
	}
	if got := placedOn(); len(got) != 1 {
		t.Fatalf("placed on %v before any load, want one worker (its warm minimum)", got)
	}
	first, other := ids[0], ids[1]
	if running(first) == 0 {
		first, other = other, first
	}
	if running(other) != 0 {
		t.Fatalf("instances on both workers before any load")
	}

	// Four callers, each with one slow call at a time, until the test
	// has seen what it waits for (or gives up).
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				req, _ := http.NewRequestWithContext(lctx, http.MethodGet, base+"/function/grow?ms=1500", nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok.Add(1)
				} else if lctx.Err() == nil {
					failed.Add(1)
				}
			}
		}()
	}
	defer func() {
		stop()
		wg.Wait()
	}()
	check.For(t, 60*time.Second, 250*time.Millisecond, func() error {
		if got := running(other); got == 0 {
			return fmt.Errorf("no instance on %s yet (%d on %s)", other, running(first), first)
		}
		return nil
	})
	if got := placedOn(); len(got) != 2 {
		t.Errorf("placed on %v under load, want both workers", got)
	}
	stop()
	wg.Wait()
	t.Logf("%d calls answered, %d failed under load", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d calls failed while the function grew onto another worker", failed.Load())
	}
}
