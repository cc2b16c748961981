package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Buses records the event buses' metrics (it implements sinks/bus's
// Recorder). Labels: bus ("tenant/name") and rule, both bounded by the
// configuration. Methods are safe for concurrent use.
type Buses struct {
	received, matched, delivered, failed, deadLettered *prometheus.CounterVec
	latency                                            *prometheus.HistogramVec
}

// Buses returns the bus recorder, registering its collectors on first use;
// later calls return recorders sharing the same collectors.
func (r *Registry) Buses() *Buses {
	bl, rl := []string{"bus"}, []string{"bus", "rule"}
	return &Buses{
		received: register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_bus_events_received_total", Help: "Events stored on a bus (API, result routes, bus targets, replays).",
		}, bl)),
		matched: register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_bus_events_matched_total", Help: "Events dispatched to a rule's targets (embedded storage; a Kafka-stored bus's targets match for themselves).",
		}, rl)),
		delivered: register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_bus_deliveries_total", Help: "Events a rule's targets took (2xx from a function, a durable write to a sink or bus).",
		}, rl)),
		failed: register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_bus_delivery_failures_total", Help: "Events a rule's targets gave up on (attempts exhausted or refused for good), dead-lettered or discarded.",
		}, rl)),
		deadLettered: register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_bus_dead_letters_total", Help: "Failed events written to a target's onFailure routes.",
		}, rl)),
		latency: register(r, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_bus_delivery_duration_seconds", Help: "Time from a target reading an event to its delivery, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 20),
		}, rl)),
	}
}

// register adds c to the registry, or returns the collector registered
// before under the same description.
func register[C prometheus.Collector](r *Registry, c C) C {
	if err := r.reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // two collectors of one name and different shapes: a programming error
	}
	return c
}

// Received counts n events stored on bus.
func (b *Buses) Received(bus string, n int) { b.received.WithLabelValues(bus).Add(float64(n)) }

// Matched counts an event dispatched to rule's targets.
func (b *Buses) Matched(bus, rule string) { b.matched.WithLabelValues(bus, rule).Inc() }

// Delivered counts an event delivered by a target of rule and its latency.
func (b *Buses) Delivered(bus, rule string, seconds float64) {
	b.delivered.WithLabelValues(bus, rule).Inc()
	b.latency.WithLabelValues(bus, rule).Observe(seconds)
}

// Failed counts an event a target of rule gave up on.
func (b *Buses) Failed(bus, rule string) { b.failed.WithLabelValues(bus, rule).Inc() }

// DeadLettered counts a failed event written to onFailure.
func (b *Buses) DeadLettered(bus, rule string) { b.deadLettered.WithLabelValues(bus, rule).Inc() }
