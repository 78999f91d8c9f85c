package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/check"
	"github.com/gustfaas/gust/internal/mock"
)

func TestMillicores(t *testing.T) {
	for _, c := range []struct {
		name          string
		prev, cur, dt time.Duration
		want          float64
		ok            bool
	}{
		{"one core busy", time.Second, 3 * time.Second, 2 * time.Second, 1000, true},
		{"half a core", 0, time.Second, 2 * time.Second, 500, true},
		{"two cores", 10 * time.Second, 14 * time.Second, 2 * time.Second, 2000, true},
		{"idle", 5 * time.Second, 5 * time.Second, 2 * time.Second, 0, true},
		{"50 ms over 2 s", 0, 50 * time.Millisecond, 2 * time.Second, 25, true},
		{"no time passed", 0, time.Second, 0, 0, false},
		{"counter went back", 3 * time.Second, time.Second, 2 * time.Second, 0, false},
	} {
		got, ok := millicores(c.prev, c.cur, c.dt)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: millicores(%s, %s, %s) = %v, %v; want %v, %v", c.name, c.prev, c.cur, c.dt, got, ok, c.want, c.ok)
		}
	}
}

func TestPoolMillicores(t *testing.T) {
	for _, c := range []struct {
		sum         float64
		rated, read int
		want        float64
	}{
		{1500, 3, 3, 1500}, // every instance rated: the sum
		{1000, 2, 3, 1500}, // a new instance takes the average
		{0, 0, 2, 0},       // nothing rated yet
	} {
		if got := poolMillicores(c.sum, c.rated, c.read); got != c.want {
			t.Errorf("poolMillicores(%v, %d, %d) = %v, want %v", c.sum, c.rated, c.read, got, c.want)
		}
	}
}

// fakeCPU is a CPU counter per container that grows at a settable rate
// (millicores) from the first time it is read.
type fakeCPU struct {
	mu    sync.Mutex
	rate  float64
	total map[string]time.Duration
	last  map[string]time.Time
	reads map[string]int
}

func newFakeCPU() *fakeCPU {
	return &fakeCPU{total: map[string]time.Duration{}, last: map[string]time.Time{}, reads: map[string]int{}}
}

func (f *fakeCPU) setRate(m float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for id, at := range f.last {
		f.total[id] += time.Duration(float64(now.Sub(at)) * f.rate / 1000)
		f.last[id] = now
	}
	f.rate = m
}

func (f *fakeCPU) usage(_ context.Context, id string) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if at, ok := f.last[id]; ok {
		f.total[id] += time.Duration(float64(now.Sub(at)) * f.rate / 1000)
	}
	f.last[id] = now
	f.reads[id]++
	return f.total[id], nil
}

func (f *fakeCPU) readCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.reads {
		n += c
	}
	return n
}

// TestPool_ScaleByCPU: a pool of scale type cpu reads its instances' CPU
// time and scales on it: each instance busy at 1000 millicores against a
// target of 500 takes the pool to its max (3); once idle, it goes back to
// its minimum after the stable window. A pool of another type is not read.
func TestPool_ScaleByCPU(t *testing.T) {
	cpu := newFakeCPU()
	cpu.setRate(1000)
	e := newEnv(t, nil, func(rt *mock.Runtime, _ *Config) { rt.CPUUsageFn = cpu.usage })
	other := e.deploy("capacity", map[string]string{
		gust.LabelScaleType: gust.ScaleCapacity, gust.LabelScaleMin: "1", gust.LabelIdleTimeout: "1h",
	})
	e.place(other)
	e.running(1)
	if err := e.pool(other).waitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	fn := e.deploy("cpu", map[string]string{
		gust.LabelScaleType: gust.ScaleCPU, gust.LabelScaleTarget: "500", gust.LabelScaleTargetProportion: "1",
		gust.LabelScaleMin: "1", gust.LabelScaleMax: "3", gust.LabelScaleWindow: "6s", gust.LabelIdleTimeout: "1h",
	})
	e.place(fn)
	waitReplicas := func(want int) {
		t.Helper()
		check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
			if st := e.pool(fn).status(); st.Available != want || st.Replicas != want {
				return fmt.Errorf("pool of cpu: %+v, want %d ready", st, want)
			}
			return nil
		})
	}
	waitReplicas(3)
	p := e.pool(fn)
	p.mu.Lock()
	got := p.cpuLocked(time.Now())
	p.mu.Unlock()
	if got < 0 {
		t.Errorf("no CPU figure fed to the decider of a cpu pool")
	}
	cpu.setRate(0)
	waitReplicas(1)

	op := e.pool(other)
	op.mu.Lock()
	cid, fig := op.instances[0].cid, op.cpuLocked(time.Now())
	op.mu.Unlock()
	cpu.mu.Lock()
	n := cpu.reads[cid]
	cpu.mu.Unlock()
	if n != 0 || fig != -1 {
		t.Errorf("capacity pool: %d CPU reads, figure %v; want none and -1", n, fig)
	}
	if cpu.readCount() == 0 {
		t.Errorf("cpu pool: no CPU reads")
	}
}
