package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/flow"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/sinks"
)

// buildIdentity builds a function-less pipeline over src whose onSuccess
// route is ok, with the engine's own function (deps.Function unset).
func buildIdentity(t *testing.T, s *pipelines.Pipeline, src *memSource, ok *memSink) (*Pipeline, error) {
	t.Helper()
	comps := Components{
		Sources: map[string]SourceFactory{"kafka": func(pipelines.SourceSpec, connectors.Options, SourceEnv) (connectors.Source, error) {
			return src, nil
		}},
		Sinks: map[string]SinkFactory{
			"log":     func(pipelines.RouteSpec, SinkEnv) (sinks.Sink, error) { return ok, nil },
			"webhook": func(pipelines.RouteSpec, SinkEnv) (sinks.Sink, error) { return &memSink{}, nil },
		},
	}
	deps := Deps{Metrics: metrics.New("test"), Limiters: flow.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return Build(s, deps, comps)
}

func TestNoFunctionRoutesSourceEventsThemselves(t *testing.T) {
	const n = 40
	var msgs []*connectors.Message
	for i := range n {
		m := message(fmt.Sprint("e", i), "t/0", "k", int64(i))
		if err := m.Event.SetData("application/json", map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	src, sink := newMemSource(msgs...), &memSink{}
	sink.down.Store(true)
	p, err := buildIdentity(t, spec(func(p *pipelines.Pipeline) { p.Spec.Function = nil }), src, sink)
	if err != nil {
		t.Fatal(err)
	}
	if p.FunctionURL() != "" {
		t.Fatalf("FunctionURL = %q, want empty", p.FunctionURL())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// At least once: nothing is acknowledged while the route refuses.
	eventually(t, "failed writes", func() bool { return sink.failed.Load() >= 2 })
	if c := src.ackCount(); c != 0 {
		t.Fatalf("%d events acked while the onSuccess route was down", c)
	}
	sink.down.Store(false)
	eventually(t, "all acked", func() bool { return src.ackCount() == n })
	got := map[string]string{}
	for _, e := range sink.all() {
		if e.Extensions()[ExtPartitionKey] != "k" {
			t.Errorf("%s: partition key not inherited: %v", e.ID(), e.Extensions())
		}
		got[e.ID()] = string(e.Data())
	}
	for i, m := range msgs {
		id := m.Event.ID()
		if err, _ := src.ack(id); err != nil {
			t.Errorf("%s acked with %v", id, err)
		}
		if want := fmt.Sprintf(`{"n":%d}`, i); got[id] != want {
			t.Errorf("%s: routed data %q, want the source event's %q", id, got[id], want)
		}
		if _, ok := m.Event.Extensions()[ExtPartitionKey]; ok {
			t.Errorf("%s: the source message was modified", id)
		}
	}
	if len(sink.all()) != n {
		t.Errorf("route holds %d events, want %d", len(sink.all()), n)
	}
}

func TestNoFunctionNeedsOnSuccess(t *testing.T) {
	s := spec(func(p *pipelines.Pipeline) {
		p.Spec.Function = nil
		p.Spec.Results.OnSuccess = nil
	})
	_, err := buildIdentity(t, s, newMemSource(), &memSink{})
	if !errors.Is(err, ErrNoFunction) {
		t.Fatalf("Build = %v, want ErrNoFunction", err)
	}
}
