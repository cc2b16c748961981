package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/invoke"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/retry"
	"github.com/sluicehq/sluice/sinks"
)

// target is one target of one rule: an engine pipeline reading the
// target's own cursor on the bus (its queue, or its consumer group).
type target struct {
	bus   *Bus
	rule  *rule
	index int
	// id names the target's pipeline (metrics, logs, readiness):
	// "tenant/bus/rule/index".
	id string
	// queue is the target's queue with embedded storage.
	queue string
	kind  string // function, sink or bus
	pipe  *engine.Pipeline
	// sink is what a sink or bus target writes to; closed after pipe
	// stopped (the engine closes only the routes it built).
	sink sinks.Sink
}

// newTarget builds the pipeline of target index of rule ru.
func (b *Bus) newTarget(ctx context.Context, ru *rule, index int, spec *pipelines.BusTarget) (t *target, err error) {
	t = &target{bus: b, rule: ru, index: index}
	t.id = b.id + "/" + ru.name + "/" + strconv.Itoa(index)
	t.queue = b.queueName() + "." + ru.name + "." + strconv.Itoa(index)
	tf, err := newTransform(spec.Transform)
	if err != nil {
		return nil, err
	}
	s := b.set
	env := engine.SinkEnv{Log: s.log.With("bus", b.id, "rule", ru.name, "target", index), Stdout: s.deps.Engine.Stdout, Tenant: b.tenant}
	if env.Stdout == nil {
		env.Stdout = os.Stdout
	}
	ps := &pipelines.Pipeline{
		Metadata: pipelines.Metadata{Name: b.name + "/" + ru.name + "/" + strconv.Itoa(index), Tenant: b.tenant},
	}
	d := &ps.Spec.Delivery
	// A bus keeps no order (as EventBridge): every event of a target is
	// delivered independently.
	d.Ordering = pipelines.OrderingNone
	deps := s.deps.Engine
	deps.Function = nil
	deps.Hooks = &targetHooks{rec: s.rec, bus: b.id, rule: ru.name}
	switch {
	case spec.Function != nil:
		t.kind = "function"
	case spec.Bus != nil || (spec.Sink != nil && spec.Sink.Bus != nil):
		t.kind = "bus"
	default:
		t.kind = "sink"
	}
	if fn := spec.Function; fn != nil {
		f := *fn
		ps.Spec.Function = &f
		if dl := spec.Delivery; dl != nil {
			d.Concurrency, d.Retry, d.MaxEventAge = dl.Concurrency, dl.Retry, dl.MaxEventAge
		}
		if spec.Results != nil {
			ps.Spec.Results = *spec.Results
		}
	} else {
		route := spec.Route()
		if route == nil {
			return nil, errors.New("no function, sink or bus")
		}
		kind, err := engine.RouteKind(*route)
		if err != nil {
			return nil, err
		}
		newSink, ok := s.comps.Sinks[kind]
		if !ok {
			return nil, fmt.Errorf("sink kind %q is not available", kind)
		}
		if t.sink, err = newSink(*route, env); err != nil {
			return nil, fmt.Errorf("sink %s: %w", kind, err)
		}
		defer func() {
			if err != nil {
				_ = t.sink.Close(context.Background())
			}
		}()
		// The engine calls "the function" under a concurrency limiter
		// keyed by URL; this one names the target.
		ps.Spec.Function = &pipelines.FunctionSpec{URL: "bus://" + t.id, Mode: pipelines.ModeBinary}
		deps.Function = sinkFunction{sink: t.sink}
		if spec.Retry != nil {
			d.Retry = *spec.Retry
		}
		ps.Spec.Results.OnFailure = spec.OnFailure
	}
	src, match, err := b.store.targetSource(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	ts := &targetSource{src: src, rule: ru, match: match, transform: tf}
	// The engine builds a pipeline's source from its spec through the
	// components: a placeholder Kafka spec selects the factory that hands
	// over this target's source.
	ps.Spec.Source.Kafka = &pipelines.KafkaSource{Topics: []string{t.queue}, Group: t.id}
	pipelines.ApplyDefaults(ps)
	comps := engine.Components{
		Sources: map[string]engine.SourceFactory{
			"kafka": func(pipelines.SourceSpec, connectors.Options, engine.SourceEnv) (connectors.Source, error) {
				return ts, nil
			},
		},
		Sinks: s.comps.Sinks,
	}
	if t.pipe, err = engine.Build(ps, deps, comps); err != nil {
		_ = ts.Close(context.Background())
		return nil, err
	}
	return t, nil
}

// run runs the target's pipeline until ctx is done (see
// engine.Pipeline.Run), then closes its sink.
func (t *target) run(ctx context.Context) error {
	err := t.pipe.Run(ctx)
	if t.sink != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if cerr := t.sink.Close(cctx); cerr != nil {
			t.bus.set.log.Error("closing a target's sink", "target", t.id, "err", cerr)
		}
	}
	return err
}

// targetSource is what a target's pipeline reads: its cursor on the bus,
// with the events its rule does not want skipped (acknowledged at once,
// when the cursor sees every event of the bus), the bus's internal
// extensions removed and the target's transform applied.
type targetSource struct {
	src       connectors.Source
	rule      *rule
	match     bool
	transform *transform
}

var (
	_ connectors.Source = (*targetSource)(nil)
	_ connectors.Health = (*targetSource)(nil)
)

func (s *targetSource) Connect(ctx context.Context) error { return s.src.Connect(ctx) }
func (s *targetSource) Close(ctx context.Context) error   { return s.src.Close(ctx) }

// Health reports the underlying source's health.
func (s *targetSource) Health() error {
	if h, ok := s.src.(connectors.Health); ok {
		return h.Health()
	}
	return nil
}

// Read returns the next event for the target. An event that cannot be
// decoded or transformed is returned with DecodeErr set: the engine
// dead-letters it.
func (s *targetSource) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	for {
		msg, ack, err := s.src.Read(ctx)
		if err != nil {
			return nil, nil, err
		}
		unwrap(msg)
		if msg.DecodeErr != nil {
			return msg, ack, nil
		}
		if s.match && !s.rule.wants(&msg.Event) {
			_ = ack(context.Background(), nil)
			continue
		}
		if replayRule(&msg.Event) != "" {
			msg.Event.SetExtension(ExtReplayRule, nil)
		}
		if s.transform != nil {
			if err := s.transform.apply(&msg.Event); err != nil {
				msg.DecodeErr = err
			}
		}
		return msg, ack, nil
	}
}

// sinkFunction is the "function" of a sink or bus target: writing the
// event to the sink is the delivery. A write the sink refuses for good is
// a permanent failure (dead-lettered at once); any other failure is
// retried by the target's retry policy.
type sinkFunction struct{ sink sinks.Sink }

func (f sinkFunction) Invoke(ctx context.Context, in []cloudevents.Event) (invoke.Result, error) {
	if err := f.sink.Write(ctx, in); err != nil {
		if errors.Is(err, sinks.ErrRejected) {
			return invoke.Result{}, retry.MarkPermanent(err)
		}
		return invoke.Result{}, err
	}
	return invoke.Result{Status: 200}, nil
}

// targetHooks turn a target pipeline's events into bus metrics.
type targetHooks struct {
	rec       Recorder
	bus, rule string
}

var _ engine.Hooks = (*targetHooks)(nil)

func (h *targetHooks) Admit(ctx context.Context, _ *connectors.Message) (context.Context, error) {
	return ctx, nil
}

func (h *targetHooks) Attempted(*connectors.Message, int, retry.Verdict, bool, time.Duration) {}

func (h *targetHooks) Finished(msg *connectors.Message, outcome string, _ []cloudevents.Event, _ string) {
	switch outcome {
	case metrics.OutcomeSucceeded:
		h.rec.Delivered(h.bus, h.rule, time.Since(msg.ReceivedAt).Seconds())
	case metrics.OutcomeDeadLettered:
		h.rec.Failed(h.bus, h.rule)
		h.rec.DeadLettered(h.bus, h.rule)
	case metrics.OutcomeDiscarded:
		h.rec.Failed(h.bus, h.rule)
	}
}
