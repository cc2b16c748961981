package engine

import (
	"fmt"
	"io"
	"log/slog"
	"maps"

	"github.com/sluicehq/sluice/connectors"
	kafkasource "github.com/sluicehq/sluice/connectors/kafka"
	rabbitsource "github.com/sluicehq/sluice/connectors/rabbitmq"
	rocketsource "github.com/sluicehq/sluice/connectors/rocketmq"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/sinks"
	kafkasink "github.com/sluicehq/sluice/sinks/kafka"
	logsink "github.com/sluicehq/sluice/sinks/log"
	rabbitsink "github.com/sluicehq/sluice/sinks/rabbitmq"
	rocketsink "github.com/sluicehq/sluice/sinks/rocketmq"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// SourceFactory builds a source from its spec.
type SourceFactory func(spec pipelines.SourceSpec, opts connectors.Options, env SourceEnv) (connectors.Source, error)

// SourceEnv is what source factories may use besides their own spec.
type SourceEnv struct {
	Log *slog.Logger
	// Metrics records the pipeline's lag and connection state; it
	// implements the connectors' recorder interfaces.
	Metrics *metrics.Pipeline
}

// SinkFactory builds a sink from a route spec. source is the pipeline's
// source spec, for defaults such as a Kafka sink's brokers.
type SinkFactory func(route pipelines.RouteSpec, env SinkEnv) (sinks.Sink, error)

// SinkEnv is what sink factories may use besides their own spec.
type SinkEnv struct {
	Log    *slog.Logger
	Stdout io.Writer
	// Tenant owns the pipeline (or bus target) the sink writes for: routes
	// naming a tenant's own resources ({bus: {name}}) resolve in it.
	Tenant string
}

// Components maps each source and sink kind, as written in YAML, to its
// factory. DefaultComponents is the one place where kinds are registered;
// tests substitute their own.
type Components struct {
	Sources map[string]SourceFactory
	Sinks   map[string]SinkFactory
}

// DefaultComponents returns every built-in source and sink.
func DefaultComponents() Components {
	return Components{
		Sources: map[string]SourceFactory{
			"kafka": func(s pipelines.SourceSpec, o connectors.Options, env SourceEnv) (connectors.Source, error) {
				return kafkasource.New(*s.Kafka, o, env.Log, kafkasource.WithRecorder(env.Metrics))
			},
			"rabbitmq": func(s pipelines.SourceSpec, o connectors.Options, env SourceEnv) (connectors.Source, error) {
				return rabbitsource.New(*s.RabbitMQ, o, env.Log, rabbitsource.WithRecorder(env.Metrics))
			},
			"rocketmq": func(s pipelines.SourceSpec, o connectors.Options, env SourceEnv) (connectors.Source, error) {
				return rocketsource.New(*s.RocketMQ, o, env.Log, rocketsource.WithRecorder(env.Metrics))
			},
		},
		Sinks: map[string]SinkFactory{
			"kafka": func(r pipelines.RouteSpec, env SinkEnv) (sinks.Sink, error) {
				return kafkasink.New(*r.Kafka, env.Log)
			},
			"rabbitmq": func(r pipelines.RouteSpec, env SinkEnv) (sinks.Sink, error) {
				return rabbitsink.New(*r.RabbitMQ, env.Log)
			},
			"rocketmq": func(r pipelines.RouteSpec, env SinkEnv) (sinks.Sink, error) {
				return rocketsink.New(*r.RocketMQ, env.Log)
			},
			"webhook": func(r pipelines.RouteSpec, _ SinkEnv) (sinks.Sink, error) {
				w := r.Webhook
				return webhook.New(webhook.Config{
					URL: w.URL, Secret: w.Secret.Value(), Headers: secretMap(w.Headers), Timeout: w.Timeout.D(),
				})
			},
			"log": func(r pipelines.RouteSpec, env SinkEnv) (sinks.Sink, error) {
				return logsink.New(env.Stdout, r.Log.Format), nil
			},
		},
	}
}

// BusOpener returns a sink that puts events on the bus name of tenant
// (sinks/bus implements it). Errors: the bus does not exist.
type BusOpener func(tenant, name string) (sinks.Sink, error)

// WithBuses returns a copy of c with the "bus" sink kind: a route
// {bus: {name}} puts events on the bus of that name of the pipeline's
// tenant, through open. Without it, bus routes fail to build.
func (c Components) WithBuses(open BusOpener) Components {
	out := maps.Clone(c.Sinks)
	if out == nil {
		out = map[string]SinkFactory{}
	}
	out["bus"] = func(r pipelines.RouteSpec, env SinkEnv) (sinks.Sink, error) {
		return open(env.Tenant, r.Bus.Name)
	}
	c.Sinks = out
	return c
}

// SourceKind names the one source set in spec.
func SourceKind(spec pipelines.SourceSpec) (string, error) {
	switch {
	case spec.Kafka != nil:
		return "kafka", nil
	case spec.RabbitMQ != nil:
		return "rabbitmq", nil
	case spec.RocketMQ != nil:
		return "rocketmq", nil
	}
	return "", fmt.Errorf("no source configured")
}

// RouteKind names the one sink set in a route.
func RouteKind(r pipelines.RouteSpec) (string, error) {
	switch {
	case r.Kafka != nil:
		return "kafka", nil
	case r.Webhook != nil:
		return "webhook", nil
	case r.Log != nil:
		return "log", nil
	case r.RabbitMQ != nil:
		return "rabbitmq", nil
	case r.RocketMQ != nil:
		return "rocketmq", nil
	case r.Bus != nil:
		return "bus", nil
	}
	return "", fmt.Errorf("no sink configured in route")
}

func secretMap(m map[string]pipelines.Secret) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v.Value()
	}
	return out
}
