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

func TestRecord(t *testing.T) {
	m := metrics.New()
	record(m)
	got := map[string]float64{}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, x := range mf.GetMetric() {
			switch {
			case x.Counter != nil:
				got[mf.GetName()] += x.Counter.GetValue()
			case x.Gauge != nil:
				got[mf.GetName()] += x.Gauge.GetValue()
			case x.Histogram != nil:
				got[mf.GetName()] += float64(x.Histogram.GetSampleCount())
			}
		}
	}
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
