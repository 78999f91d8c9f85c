package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
)

// record calls every recording method once.
func record(m *metrics.Metrics) {
	m.Call("default.hello", 200, gust.OutcomeOK, time.Millisecond, true)
	m.Call("default.hello", 503, gust.OutcomeRejected, time.Millisecond, false)
	m.InstanceStart("default.hello", "ok")
	m.InstancePause("default.hello", "paused")
	m.MeterSpooled()
	m.MeterSpooled()
	m.MeterDropped(true)
	m.MeterDropped(false)
	m.MeterBuffered(1)
	m.MeterPublished(1)
	m.MeterStored(1)
	m.AsyncEnqueue("default.hello")
	m.AsyncAttempt("default.hello", "succeeded")
	m.EventReceived("default.hello", "nats")
	m.EventDropped("default.hello", "buffer_full")
	m.Callback("delivered")
	m.PlacementFailure("memory")
	m.Leading(true)
}

// A nil *Metrics records nothing and never panics: components take one
// without checking it at each call site.
func TestNil(t *testing.T) {
	var m *metrics.Metrics
	record(m)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /metrics without metrics: got %d, want 404", rec.Code)
	}
}

// samples gathers m's registry: each sample's value (a histogram's count),
// summed by metric name, or by name and labels ("name k=v k=v") with
// labels set.
func samples(t *testing.T, m *metrics.Metrics, labels bool) map[string]float64 {
	t.Helper()
	got := map[string]float64{}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, x := range mf.GetMetric() {
			key := mf.GetName()
			if labels {
				for _, l := range x.GetLabel() {
					key += " " + l.GetName() + "=" + l.GetValue()
				}
			}
			switch {
			case x.Counter != nil:
				got[key] += x.Counter.GetValue()
			case x.Gauge != nil:
				got[key] += x.Gauge.GetValue()
			case x.Histogram != nil:
				got[key] += float64(x.Histogram.GetSampleCount())
			}
		}
	}
	return got
}

func TestRecord(t *testing.T) {
	m := metrics.New()
	record(m)
	got := samples(t, m, false)
	for name, want := range map[string]float64{
		"gust_invocations_total":                  2,
		"gust_invocation_duration_seconds":        1, // a rejected call has no duration
		"gust_cold_starts_total":                  1,
		"gust_instance_starts_total":              1,
		"gust_instance_pauses_total":              1,
		"gust_meter_records_spooled_total":        2,
		"gust_meter_records_dropped_total":        2,
		"gust_meter_records_buffered":             0, // set to 1, then 1 published
		"gust_meter_records_published_total":      1,
		"gust_meter_records_stored_total":         1,
		"gust_async_enqueued_total":               1,
		"gust_async_attempts_total":               1,
		"gust_events_received_total":              1,
		"gust_events_dropped_total":               1,
		"gust_callbacks_total":                    1,
		"gust_scheduler_placement_failures_total": 1,
		"gust_scheduler_leader":                   1,
	} {
		if got[name] != want {
			t.Errorf("%s: got %v, want %v", name, got[name], want)
		}
	}
}

// The pool gauges are read from every registered source at each scrape:
// a function on two workers of one process adds up, and a source that
// stopped is read no more.
func TestPools(t *testing.T) {
	m := metrics.New()
	a := []metrics.PoolGauges{{Function: "default.hello", Starting: 1, Ready: 2, Paused: 3, InFlight: 4, Desired: 3}}
	b := []metrics.PoolGauges{
		{Function: "default.hello", Ready: 1, InFlight: 1, Desired: 1},
		{Function: "default.sleep", Paused: 1},
	}
	stopA := m.ObservePools(func() []metrics.PoolGauges { return a })
	m.ObservePools(func() []metrics.PoolGauges { return b })
	got := samples(t, m, true)
	for key, want := range map[string]float64{
		"gust_instances function=default.hello state=starting": 1,
		"gust_instances function=default.hello state=ready":    3,
		"gust_instances function=default.hello state=paused":   3,
		"gust_invocations_in_flight function=default.hello":    5,
		"gust_instances_desired function=default.hello":        4,
		"gust_instances function=default.sleep state=paused":   1,
		"gust_instances function=default.sleep state=ready":    0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	stopA()
	if got := samples(t, m, true); got["gust_instances function=default.hello state=ready"] != 1 || got["gust_instances function=default.hello state=starting"] != 0 {
		t.Errorf("after one source stopped: ready %v, starting %v; want 1 and 0",
			got["gust_instances function=default.hello state=ready"], got["gust_instances function=default.hello state=starting"])
	}

	var none *metrics.Metrics
	none.ObservePools(func() []metrics.PoolGauges { return a })() // no panic
}
