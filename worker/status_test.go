package worker

import (
	"context"
	"fmt"
	"testing"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/mock"
)

// TestHeartbeat_AdvertisesCapacity: the heartbeat says what the worker
// offers (its configured memory and CPU), what it holds (its instances,
// with their memory, and the images it pulled) and its state, which is
// what the scheduler places by.
func TestHeartbeat_AdvertisesCapacity(t *testing.T) {
	e := newEnv(t, nil, func(_ *mock.Runtime, cfg *Config) {
		cfg.MemoryBytes = 3 << 30
		cfg.NanoCPUs = 2e9
	})
	fn := e.deploy("cap", map[string]string{gust.LabelScaleMin: "2"})
	fn.Spec.Limits = &gust.FunctionResources{Memory: "64Mi"}
	fn.Version = 2
	e.put(fn)
	e.place(fn)
	check.For(t, testWait, testPoll, func() error {
		info, _, err := e.state.Workers.Get(context.Background(), e.w.cfg.ID)
		if err != nil {
			return err
		}
		if info.MemoryBytes != 3<<30 || info.NanoCPUs != 2e9 || info.State() != gust.WorkerReady {
			return fmt.Errorf("capacity %d bytes, %d nano CPUs, state %s; want %d, 2e9, ready", info.MemoryBytes, info.NanoCPUs, info.State(), 3<<30)
		}
		if got, want := fmt.Sprint(info.Pools), fmt.Sprintf("[{%s 2 %d}]", fn.Key(), 64<<20); got != want {
			return fmt.Errorf("pools %s, want %s", got, want)
		}
		if got, want := info.HeldMemory(""), int64(128<<20); got != want {
			return fmt.Errorf("held memory %d, want %d", got, want)
		}
		if !info.HasImage("img:1") {
			return fmt.Errorf("images %v, want img:1 among them", info.Images)
		}
		return nil
	})
}
