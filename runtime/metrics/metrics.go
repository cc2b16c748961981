// Package metrics owns every Prometheus collector Sluice exports. Components
// never touch Prometheus directly: they receive a narrow recorder (a
// *Pipeline, *Limiter, ...) whose methods are cheap on the hot path because
// label values are bound once, when the recorder is created.
//
// Names are sluice_*, with units in the name; label sets are bounded by
// configuration (pipeline, route, function endpoint, partition), never by
// event content.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Processing outcomes (the "outcome" label of sluice_events_processed_total).
const (
	OutcomeSucceeded    = "succeeded"     // function 2xx and every result route written
	OutcomeDeadLettered = "dead_lettered" // written to every onFailure route
	OutcomeDiscarded    = "discarded"     // failed with no onFailure route: logged and dropped
	OutcomeFiltered     = "filtered"      // did not match the pipeline filter
	OutcomeSkipped      = "skipped"       // skipped by the embedding layer (a cancelled or paused task)
	OutcomeBrokerRetry  = "broker_retry"  // failed and handed back to the broker's own retry path
	OutcomeAbandoned    = "abandoned"     // not finished (shutdown or revoke): will be redelivered
)

// Registry holds every collector. Create one per process (tests create
// their own) and serve it with Handler.
type Registry struct {
	reg *prometheus.Registry

	received      *prometheus.CounterVec
	processed     *prometheus.CounterVec
	retries       *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	fnDuration    *prometheus.HistogramVec
	e2eDuration   *prometheus.HistogramVec
	inFlight      *prometheus.GaugeVec
	sinkWrites    *prometheus.CounterVec
	sinkDuration  *prometheus.HistogramVec
	lag           *prometheus.GaugeVec
	sourceUp      *prometheus.GaugeVec
	flowLimit     *prometheus.GaugeVec
	flowInFlight  *prometheus.GaugeVec
	flowWaiting   *prometheus.GaugeVec
	flowCuts      *prometheus.CounterVec
	pipelineState *prometheus.GaugeVec
}

// New creates a Registry with Go runtime and process collectors included.
func New(version string) *Registry {
	r := &Registry{reg: prometheus.NewRegistry()}
	pl := []string{"pipeline"}
	r.received = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_events_received_total", Help: "Events read from the pipeline's source.",
	}, pl)
	r.processed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_events_processed_total", Help: "Events finished, by outcome (succeeded, dead_lettered, discarded, filtered, skipped, broker_retry, abandoned).",
	}, []string{"pipeline", "outcome"})
	r.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_retries_total", Help: "Function invocations retried after a retriable failure.",
	}, pl)
	r.deadLetters = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_dead_letters_total", Help: "Events routed to onFailure, by reason class (permanent, exhausted, expired, undecodable).",
	}, []string{"pipeline", "reason"})
	r.fnDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "sluice_function_duration_seconds", Help: "Function invocation latency, by HTTP status class (2xx, 4xx, 5xx, error).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
	}, []string{"pipeline", "status"})
	r.e2eDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "sluice_event_duration_seconds", Help: "Time from an event being read to its acknowledgement (success or dead letter).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 20),
	}, pl)
	r.inFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_events_in_flight", Help: "Events read and not yet acknowledged, per pipeline.",
	}, pl)
	r.sinkWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_sink_writes_total", Help: "Result-route writes, by route and result (ok, error).",
	}, []string{"pipeline", "route", "result"})
	r.sinkDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "sluice_sink_write_duration_seconds", Help: "Result-route write latency.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
	}, []string{"pipeline", "route"})
	r.lag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_consumer_lag_messages", Help: "High-water mark minus committed offset, per partition.",
	}, []string{"pipeline", "topic", "partition"})
	r.sourceUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_source_connected", Help: "1 while the pipeline's source is connected to its broker, else 0.",
	}, pl)
	fl := []string{"function"}
	r.flowLimit = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_flow_limit", Help: "Current AIMD concurrency limit per function endpoint.",
	}, fl)
	r.flowInFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_flow_in_flight", Help: "Invocations in flight per function endpoint.",
	}, fl)
	r.flowWaiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_flow_waiting", Help: "Invocations waiting for a slot of the AIMD limit (or for a Retry-After pause) per function endpoint.",
	}, fl)
	r.flowCuts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_flow_cuts_total", Help: "Multiplicative decreases of the AIMD limit per function endpoint.",
	}, fl)
	r.pipelineState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_pipeline_running", Help: "1 while the pipeline runs, 0 once it stopped.",
	}, pl)
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_build_info", Help: "Build information.", ConstLabels: prometheus.Labels{"version": version},
	})
	build.Set(1)
	r.reg.MustRegister(r.received, r.processed, r.retries, r.deadLetters, r.fnDuration, r.e2eDuration,
		r.inFlight, r.sinkWrites, r.sinkDuration, r.lag, r.sourceUp, r.flowLimit,
		r.flowInFlight, r.flowWaiting, r.flowCuts, r.pipelineState, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves the registry in the Prometheus exposition format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// Gatherer exposes the registry for tests.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Pipeline returns the recorder for one pipeline. Safe to call repeatedly.
func (r *Registry) Pipeline(name string) *Pipeline {
	return &Pipeline{
		reg:         r,
		name:        name,
		received:    r.received.WithLabelValues(name),
		succeeded:   r.processed.WithLabelValues(name, OutcomeSucceeded),
		deadLetter:  r.processed.WithLabelValues(name, OutcomeDeadLettered),
		discarded:   r.processed.WithLabelValues(name, OutcomeDiscarded),
		filtered:    r.processed.WithLabelValues(name, OutcomeFiltered),
		skipped:     r.processed.WithLabelValues(name, OutcomeSkipped),
		brokerRetry: r.processed.WithLabelValues(name, OutcomeBrokerRetry),
		abandoned:   r.processed.WithLabelValues(name, OutcomeAbandoned),
		retries:     r.retries.WithLabelValues(name),
		fn2xx:       r.fnDuration.WithLabelValues(name, "2xx"),
		fn4xx:       r.fnDuration.WithLabelValues(name, "4xx"),
		fn5xx:       r.fnDuration.WithLabelValues(name, "5xx"),
		fnErr:       r.fnDuration.WithLabelValues(name, "error"),
		e2e:         r.e2eDuration.WithLabelValues(name),
		inFlight:    r.inFlight.WithLabelValues(name),
		sourceUp:    r.sourceUp.WithLabelValues(name),
		running:     r.pipelineState.WithLabelValues(name),
	}
}

// Pipeline records one pipeline's events. Methods are safe for concurrent use.
type Pipeline struct {
	reg  *Registry
	name string

	received, succeeded, deadLetter, discarded, filtered, skipped, brokerRetry, abandoned, retries prometheus.Counter
	fn2xx, fn4xx, fn5xx, fnErr, e2e                                                                prometheus.Observer
	inFlight, sourceUp, running                                                                    prometheus.Gauge
}

// Received counts an event read from the source.
func (p *Pipeline) Received() { p.received.Inc(); p.inFlight.Inc() }

// Finished counts an event's end with one of the Outcome* constants and
// records its time since it was read.
func (p *Pipeline) Finished(outcome string, seconds float64) {
	p.inFlight.Dec()
	switch outcome {
	case OutcomeSucceeded:
		p.succeeded.Inc()
	case OutcomeDeadLettered:
		p.deadLetter.Inc()
	case OutcomeDiscarded:
		p.discarded.Inc()
	case OutcomeFiltered:
		p.filtered.Inc()
	case OutcomeSkipped:
		p.skipped.Inc()
	case OutcomeBrokerRetry:
		p.brokerRetry.Inc()
	default:
		p.abandoned.Inc()
		return
	}
	p.e2e.Observe(seconds)
}

// Retry counts a retried invocation.
func (p *Pipeline) Retry() { p.retries.Inc() }

// DeadLetter counts an event sent to onFailure, by reason class.
func (p *Pipeline) DeadLetter(reason string) {
	p.reg.deadLetters.WithLabelValues(p.name, reason).Inc()
}

// Invoked records one invocation's latency by HTTP status (0 = transport error).
func (p *Pipeline) Invoked(status int, seconds float64) {
	switch {
	case status >= 200 && status < 300:
		p.fn2xx.Observe(seconds)
	case status >= 400 && status < 500:
		p.fn4xx.Observe(seconds)
	case status >= 500:
		p.fn5xx.Observe(seconds)
	default:
		p.fnErr.Observe(seconds)
	}
}

// SinkWrite records one result-route write.
func (p *Pipeline) SinkWrite(route string, err error, seconds float64) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	p.reg.sinkWrites.WithLabelValues(p.name, route, result).Inc()
	p.reg.sinkDuration.WithLabelValues(p.name, route).Observe(seconds)
}

// SetRunning marks the pipeline as running or stopped.
func (p *Pipeline) SetRunning(running bool) { p.running.Set(b2f(running)) }

// SetConnected records the source's connection state.
func (p *Pipeline) SetConnected(up bool) { p.sourceUp.Set(b2f(up)) }

// PartitionLag records a partition's lag (connectors' Recorder interface).
func (p *Pipeline) PartitionLag(topic string, partition int32, lag int64) {
	p.SetLag(topic, partition, lag)
}

// PartitionReleased drops a revoked partition's lag series.
func (p *Pipeline) PartitionReleased(topic string, partition int32) { p.DeleteLag(topic, partition) }

// Connected records the source's connection state.
func (p *Pipeline) Connected(up bool) { p.SetConnected(up) }

// SetLag records a partition's lag.
func (p *Pipeline) SetLag(topic string, partition int32, lag int64) {
	p.reg.lag.WithLabelValues(p.name, topic, strconv.Itoa(int(partition))).Set(float64(lag))
}

// DeleteLag removes a partition's lag series (the partition was revoked).
func (p *Pipeline) DeleteLag(topic string, partition int32) {
	p.reg.lag.DeleteLabelValues(p.name, topic, strconv.Itoa(int(partition)))
}

// Limiter returns the recorder of one function endpoint's AIMD limiter.
func (r *Registry) Limiter(function string) *Limiter {
	return &Limiter{
		limit:    r.flowLimit.WithLabelValues(function),
		inFlight: r.flowInFlight.WithLabelValues(function),
		waiting:  r.flowWaiting.WithLabelValues(function),
		cuts:     r.flowCuts.WithLabelValues(function),
	}
}

// Limiter records an AIMD limiter (it satisfies flow.Recorder).
type Limiter struct {
	limit, inFlight, waiting prometheus.Gauge
	cuts                     prometheus.Counter
}

// SetLimit records the current limit.
func (l *Limiter) SetLimit(n int) { l.limit.Set(float64(n)) }

// SetInFlight records the in-flight count.
func (l *Limiter) SetInFlight(n int) { l.inFlight.Set(float64(n)) }

// SetWaiting records the number of invocations waiting for a slot.
func (l *Limiter) SetWaiting(n int) { l.waiting.Set(float64(n)) }

// Cut counts a multiplicative decrease.
func (l *Limiter) Cut() { l.cuts.Inc() }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
