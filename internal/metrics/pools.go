package metrics

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// PoolGauges is what a worker holds of one function now, as the pool
// gauges read it when Prometheus scrapes: instances by state, the calls in
// flight and what the autoscaler wants.
type PoolGauges struct {
	Function string
	// Starting instances are being started (or thawed for a call);
	// Ready ones serve calls; Paused ones are frozen in the paused tier
	// (gust.pause-after), holding memory, until a call thaws them.
	Starting, Ready, Paused int
	InFlight                int
	Desired                 int
}

// Pools is the collector of the pool gauges. It reads the pools of the
// workers that registered with ObservePools when it is scraped, so calls
// pay nothing for it.
type Pools struct {
	instances, inFlight, desired *prometheus.Desc

	mu      sync.Mutex
	sources map[int]func() []PoolGauges
	next    int
}

func newPools() *Pools {
	return &Pools{
		instances: prometheus.NewDesc("gust_instances",
			"Instances this worker holds, by function and state (starting, ready, paused).",
			[]string{"function", "state"}, nil),
		inFlight: prometheus.NewDesc("gust_invocations_in_flight",
			"Calls running on this worker's instances now, by function.",
			[]string{"function"}, nil),
		desired: prometheus.NewDesc("gust_instances_desired",
			"Instances the autoscaler wants of a function on this worker (within its share of scale.min and scale.max).",
			[]string{"function"}, nil),
		sources: map[int]func() []PoolGauges{},
	}
}

// Describe implements prometheus.Collector.
func (p *Pools) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.instances
	ch <- p.inFlight
	ch <- p.desired
}

// Collect implements prometheus.Collector. Pools of the same function on
// two workers of one process add up.
func (p *Pools) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	sources := make([]func() []PoolGauges, 0, len(p.sources))
	for _, f := range p.sources {
		sources = append(sources, f)
	}
	p.mu.Unlock()
	sum := map[string]*PoolGauges{}
	for _, f := range sources {
		for _, g := range f() {
			s := sum[g.Function]
			if s == nil {
				s = &PoolGauges{Function: g.Function}
				sum[g.Function] = s
			}
			s.Starting += g.Starting
			s.Ready += g.Ready
			s.Paused += g.Paused
			s.InFlight += g.InFlight
			s.Desired += g.Desired
		}
	}
	fns := make([]string, 0, len(sum))
	for fn := range sum {
		fns = append(fns, fn)
	}
	sort.Strings(fns)
	for _, fn := range fns {
		s := sum[fn]
		for _, st := range []struct {
			state string
			n     int
		}{{"starting", s.Starting}, {"ready", s.Ready}, {"paused", s.Paused}} {
			ch <- prometheus.MustNewConstMetric(p.instances, prometheus.GaugeValue, float64(st.n), fn, st.state)
		}
		ch <- prometheus.MustNewConstMetric(p.inFlight, prometheus.GaugeValue, float64(s.InFlight), fn)
		ch <- prometheus.MustNewConstMetric(p.desired, prometheus.GaugeValue, float64(s.Desired), fn)
	}
}

// ObservePools has the pool gauges read the pools read returns at each
// scrape, until the returned function is called. Safe on a nil *Metrics
// (the returned function then does nothing).
func (m *Metrics) ObservePools(read func() []PoolGauges) (stop func()) {
	if m == nil {
		return func() {}
	}
	p := m.Pools
	p.mu.Lock()
	id := p.next
	p.next++
	p.sources[id] = read
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		delete(p.sources, id)
		p.mu.Unlock()
	}
}
