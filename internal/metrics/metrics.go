// Package metrics holds Gust's Prometheus collectors, in one place, so
// every role registers the same names. Roles take a *Metrics and record
// through its methods, which are safe on a nil *Metrics (they record
// nothing): a component built without metrics needs no check at each call
// site.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gustfaas/gust"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the collectors of one process.
type Metrics struct {
	Registry *prometheus.Registry

	Invocations      *prometheus.CounterVec   // function, status, outcome
	Duration         *prometheus.HistogramVec // function
	ColdStarts       *prometheus.CounterVec   // function
	InstanceStarts   *prometheus.CounterVec   // function, result
	InstancePauses   *prometheus.CounterVec   // function, event
	Pools            *Pools                   // gust_instances, gust_invocations_in_flight, gust_instances_desired
	RecordsSpooled   prometheus.Counter
	RecordsPublished prometheus.Counter
	RecordsStored    prometheus.Counter
	RecordsDropped   prometheus.Counter
	// RecordsUnsynced: see MeterUnsynced.
	RecordsUnsynced prometheus.Counter
	RecordsBuffered prometheus.Gauge

	AsyncEnqueued  *prometheus.CounterVec // function
	AsyncAttempts  *prometheus.CounterVec // function, result (succeeded, retried, dead_lettered)
	EventsReceived *prometheus.CounterVec // function, trigger (nats, stream)
	EventsDropped  *prometheus.CounterVec // function, reason (buffer_full, unknown_function, stream_unavailable)
	Callbacks      *prometheus.CounterVec // result (delivered, retried, dropped)

	PlacementFailures *prometheus.CounterVec // reason (no_worker, memory, prepare)
	SchedulerLeader   prometheus.Gauge
}

// New makes the collectors and registers them, with the Go and process
// collectors, on a new registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gust_invocations_total", Help: "Calls run by this worker, by function, HTTP status and outcome.",
		}, []string{"function", "status", "outcome"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gust_invocation_duration_seconds",
			Help:    "Duration of calls as metered (request sent to answer read), by function.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"function"}),
		ColdStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gust_cold_starts_total", Help: "Calls that waited for an instance to start, by function.",
		}, []string{"function"}),
		InstanceStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gust_instance_starts_total", Help: "Instance starts by function and result (ok, failed).",
		}, []string{"function", "result"}),
		InstancePauses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gust_instance_pauses_total", Help: "Idle instances paused, and paused ones resumed for a call, by function and event (paused, resumed).",
		}, []string{"function", "event"}),
		RecordsSpooled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gust_meter_records_spooled_total", Help: "Metering records written to the local spool.",
		}),
		RecordsPublished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gust_meter_records_published_total", Help: "Metering records acknowledged by JetStream.",
		}),
		RecordsStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gust_meter_records_stored_total", Help: "Metering records committed to the billing store.",
		}),
		RecordsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gust_meter_records_dropped_total", Help: "Metering records lost because the local spool was full (or undecodable).",
		}),
		RecordsUnsynced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gust_meter_records_unsynced_total", Help: "Calls answered before JetStream acknowledged their metering record (a worker with --meter-sync whose wait ran out: the record stays in the local spool).",
		}),
		RecordsBuffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gust_meter_records_buffered", Help: "Metering records in the local spool not yet acknowledged by JetStream.",
		}),
	}
	m.AsyncEnqueued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gust_async_enqueued_total", Help: "Async calls accepted, by function.",
	}, []string{"function"})
	m.AsyncAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gust_async_attempts_total", Help: "Attempts of async and durable-event calls by function and result (succeeded, retried, dead_lettered).",
	}, []string{"function", "result"})
	m.EventsReceived = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gust_events_received_total", Help: "Trigger messages received, by function and trigger (nats, stream).",
	}, []string{"function", "trigger"})
	m.EventsDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gust_events_dropped_total", Help: "Trigger messages not run, by function and reason (buffer_full, unknown_function, stream_unavailable).",
	}, []string{"function", "reason"})
	m.Callbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gust_callbacks_total", Help: "Async result callbacks by result (delivered, retried, dropped).",
	}, []string{"result"})
	m.PlacementFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gust_scheduler_placement_failures_total", Help: "Placements the scheduler could not make, by reason (no_worker, memory, prepare).",
	}, []string{"reason"})
	m.SchedulerLeader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gust_scheduler_leader", Help: "1 while this scheduler leads (places and reconciles), 0 while it stands by.",
	})
	r.MustRegister(m.AsyncEnqueued, m.AsyncAttempts, m.EventsReceived, m.EventsDropped, m.Callbacks,
		m.PlacementFailures, m.SchedulerLeader)
	m.Pools = newPools()
	r.MustRegister(m.Invocations, m.Duration, m.ColdStarts, m.InstanceStarts, m.InstancePauses, m.Pools, m.RecordsSpooled,
		m.RecordsPublished, m.RecordsStored, m.RecordsDropped, m.RecordsUnsynced, m.RecordsBuffered,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry for Prometheus; without metrics it answers
// 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// Call counts a call a worker ran (or turned away) under function fn:
// its status and outcome, its duration unless it was rejected, and its
// cold start.
func (m *Metrics) Call(fn string, status int, outcome string, d time.Duration, cold bool) {
	if m == nil {
		return
	}
	m.Invocations.WithLabelValues(fn, Status(status), outcome).Inc()
	if outcome != gust.OutcomeRejected {
		m.Duration.WithLabelValues(fn).Observe(d.Seconds())
	}
	if cold {
		m.ColdStarts.WithLabelValues(fn).Inc()
	}
}

// InstanceStart counts an instance start of fn; result is ok or failed.
func (m *Metrics) InstanceStart(fn, result string) {
	if m != nil {
		m.InstanceStarts.WithLabelValues(fn, result).Inc()
	}
}

// InstancePause counts an instance of fn paused or resumed (event).
func (m *Metrics) InstancePause(fn, event string) {
	if m != nil {
		m.InstancePauses.WithLabelValues(fn, event).Inc()
	}
}

// MeterSpooled counts a metering record written to the local spool.
func (m *Metrics) MeterSpooled() {
	if m != nil {
		m.RecordsSpooled.Inc()
		m.RecordsBuffered.Inc()
	}
}

// MeterDropped counts a lost metering record; spooled says it had been
// counted in the spool (and leaves it).
func (m *Metrics) MeterDropped(spooled bool) {
	if m == nil {
		return
	}
	m.RecordsDropped.Inc()
	if spooled {
		m.RecordsBuffered.Dec()
	}
}

// MeterUnsynced counts a call answered before its record was acknowledged
// by JetStream, although the meter waits for that (natsbus.Meter's sync
// mode): NATS did not take it in time.
func (m *Metrics) MeterUnsynced() {
	if m != nil {
		m.RecordsUnsynced.Inc()
	}
}

// MeterBuffered sets how many metering records wait in the spool.
func (m *Metrics) MeterBuffered(n int) {
	if m != nil {
		m.RecordsBuffered.Set(float64(n))
	}
}

// MeterPublished counts n spooled records acknowledged by JetStream
// (they leave the spool).
func (m *Metrics) MeterPublished(n int) {
	if m != nil {
		m.RecordsPublished.Add(float64(n))
		m.RecordsBuffered.Sub(float64(n))
	}
}

// MeterStored counts n records committed to the billing store.
func (m *Metrics) MeterStored(n int) {
	if m != nil {
		m.RecordsStored.Add(float64(n))
	}
}

// AsyncEnqueue counts an async call accepted for fn.
func (m *Metrics) AsyncEnqueue(fn string) {
	if m != nil {
		m.AsyncEnqueued.WithLabelValues(fn).Inc()
	}
}

// AsyncAttempt counts an attempt of an async or durable-event call of fn
// by result: succeeded, retried or dead_lettered.
func (m *Metrics) AsyncAttempt(fn, result string) {
	if m != nil {
		m.AsyncAttempts.WithLabelValues(fn, result).Inc()
	}
}

// EventReceived counts a trigger message for fn; trigger is nats or
// stream.
func (m *Metrics) EventReceived(fn, trigger string) {
	if m != nil {
		m.EventsReceived.WithLabelValues(fn, trigger).Inc()
	}
}

// EventDropped counts a trigger message for fn that did not run, by
// reason (buffer_full, unknown_function, stream_unavailable).
func (m *Metrics) EventDropped(fn, reason string) {
	if m != nil {
		m.EventsDropped.WithLabelValues(fn, reason).Inc()
	}
}

// Callback counts a callback delivery by result: delivered, retried or
// dropped.
func (m *Metrics) Callback(result string) {
	if m != nil {
		m.Callbacks.WithLabelValues(result).Inc()
	}
}

// PlacementFailure counts a placement the scheduler could not make, by
// reason: no_worker (none live and ready), memory (none with room),
// prepare (a worker could not get the function ready).
func (m *Metrics) PlacementFailure(reason string) {
	if m != nil {
		m.PlacementFailures.WithLabelValues(reason).Inc()
	}
}

// Leading records whether this scheduler leads.
func (m *Metrics) Leading(leading bool) {
	if m == nil {
		return
	}
	v := 0.0
	if leading {
		v = 1
	}
	m.SchedulerLeader.Set(v)
}

// statusText holds the label values of HTTP statuses, so the invoke path
// does not format a number per call.
var statusText = func() [600]string {
	var t [600]string
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

// Status returns the label value of an HTTP status.
func Status(code int) string {
	if code >= 0 && code < len(statusText) {
		return statusText[code]
	}
	return strconv.Itoa(code)
}
