package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/flow"
	"github.com/sluicehq/sluice/runtime/invoke"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/sinks"
)

// runnerEnv builds pipelines whose sources are memSources, one per build,
// recorded by pipeline name, and whose function blocks while gate is held.
type runnerEnv struct {
	mu      sync.Mutex
	sources map[string][]*memSource // by pipeline name, in build order
	feed    map[string][]*connectors.Message
	gate    sync.RWMutex // the function waits while the test holds it
	runner  *Runner
	done    chan error
	cancel  context.CancelFunc
}

type gatedFn struct{ env *runnerEnv }

func (g gatedFn) Invoke(_ context.Context, in []cloudevents.Event) (invoke.Result, error) {
	g.env.gate.RLock()
	defer g.env.gate.RUnlock()
	return ok(in[0])
}

func namedSpec(name, url string) *pipelines.Pipeline {
	return spec(func(p *pipelines.Pipeline) {
		p.Metadata.Name = name
		p.Spec.Function.URL = url
	})
}

func startRunner(t *testing.T, feed map[string][]*connectors.Message, specs ...*pipelines.Pipeline) *runnerEnv {
	t.Helper()
	env := &runnerEnv{sources: map[string][]*memSource{}, feed: feed}
	comps := Components{
		Sources: map[string]SourceFactory{"kafka": func(pipelines.SourceSpec, connectors.Options, SourceEnv) (connectors.Source, error) {
			return nil, errors.New("replaced per pipeline below")
		}},
		Sinks: map[string]SinkFactory{
			"log":     func(pipelines.RouteSpec, SinkEnv) (sinks.Sink, error) { return &memSink{}, nil },
			"webhook": func(pipelines.RouteSpec, SinkEnv) (sinks.Sink, error) { return &memSink{}, nil },
		},
	}
	deps := Deps{Metrics: metrics.New("test"), Limiters: flow.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		DrainTimeout: 20 * time.Second, Function: gatedFn{env}}
	// Each build takes the next messages fed for that pipeline's name, which
	// the source factory cannot see: the name travels in the Kafka group.
	comps.Sources["kafka"] = func(s pipelines.SourceSpec, _ connectors.Options, _ SourceEnv) (connectors.Source, error) {
		env.mu.Lock()
		defer env.mu.Unlock()
		name := s.Kafka.Group
		src := newMemSource(env.feed[name]...)
		env.feed[name] = nil
		env.sources[name] = append(env.sources[name], src)
		return src, nil
	}
	for _, s := range specs {
		s.Spec.Source.Kafka.Group = s.Metadata.Name
	}
	r, err := NewRunner(specs, deps, comps)
	if err != nil {
		t.Fatal(err)
	}
	env.runner = r
	ctx, cancel := context.WithCancel(context.Background())
	env.cancel, env.done = cancel, make(chan error, 1)
	go func() { env.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-env.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
	return env
}

func (env *runnerEnv) source(name string, i int) *memSource {
	env.mu.Lock()
	defer env.mu.Unlock()
	if i >= len(env.sources[name]) {
		return nil
	}
	return env.sources[name][i]
}

func (env *runnerEnv) builds(name string) int {
	env.mu.Lock()
	defer env.mu.Unlock()
	return len(env.sources[name])
}

func ids(ps []*Pipeline) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID())
	}
	return out
}

func isClosed(s *memSource) bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// TestReloadReplacesOnlyWhatChanged: an unchanged pipeline keeps running
// untouched; a changed one is stopped softly — the event it was working on
// is finished and acknowledged before its successor starts — and started
// again; a removed one stops; a new one starts.
func TestReloadReplacesOnlyWhatChanged(t *testing.T) {
	feed := map[string][]*connectors.Message{
		"same":    {message("s1", "p0", "", 0)},
		"changed": {message("c1", "p0", "", 0)},
	}
	env := startRunner(t, feed, namedSpec("same", "http://fn.invalid/a"), namedSpec("changed", "http://fn.invalid/a"),
		namedSpec("gone", "http://fn.invalid/a"))
	eventually(t, "the first events done", func() bool {
		return env.source("same", 0).ackCount() == 1 && env.source("changed", 0).ackCount() == 1
	})
	before := env.runner.Pipelines()

	// An event in flight in "changed" while the reload runs.
	env.gate.Lock()
	env.mu.Lock()
	inflight := message("c2", "p0", "", 1)
	env.sources["changed"][0].msgs <- inflight
	env.mu.Unlock()

	newSpecs := []*pipelines.Pipeline{namedSpec("same", "http://fn.invalid/a"), namedSpec("changed", "http://fn.invalid/b"),
		namedSpec("added", "http://fn.invalid/a")}
	for _, s := range newSpecs {
		s.Spec.Source.Kafka.Group = s.Metadata.Name
	}
	type reloaded struct {
		res ReloadResult
		err error
	}
	out := make(chan reloaded, 1)
	go func() {
		res, err := env.runner.Reload(newSpecs)
		out <- reloaded{res, err}
	}()
	// The reload waits for the soft stop, which waits for the event.
	eventually(t, "the old pipeline to stop reading", func() bool { return isClosed(env.source("changed", 0)) || env.builds("changed") == 2 })
	select {
	case r := <-out:
		t.Fatalf("Reload returned %+v while the old pipeline still had an event in flight", r)
	default:
	}
	env.gate.Unlock()
	r := <-out
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := ReloadResult{Started: []string{"t/added"}, Restarted: []string{"t/changed"},
		Stopped: []string{"t/gone"}, Unchanged: []string{"t/same"}}
	if !equalResult(r.res, want) {
		t.Fatalf("Reload = %+v, want %+v", r.res, want)
	}
	if err, ok := env.source("changed", 0).ack(inflight.Event.ID()); !ok || err != nil {
		t.Fatalf("the in-flight event: acked %v with %v, want acked with nil (finished by the soft stop)", ok, err)
	}
	if !isClosed(env.source("changed", 0)) || !isClosed(env.source("gone", 0)) {
		t.Fatal("a replaced or removed pipeline's source is still open")
	}
	if isClosed(env.source("same", 0)) || env.builds("same") != 1 {
		t.Fatal("the unchanged pipeline was touched")
	}
	after := env.runner.Pipelines()
	if got := ids(after); !slices.Equal(got, []string{"t/same", "t/changed", "t/added"}) {
		t.Fatalf("pipelines after reload: %v", got)
	}
	if after[0] != before[0] {
		t.Fatal("the unchanged pipeline was rebuilt")
	}
	// The successor and the new pipeline run.
	env.mu.Lock()
	env.sources["changed"][1].msgs <- message("c3", "p0", "", 2)
	env.sources["added"][0].msgs <- message("a1", "p0", "", 0)
	env.mu.Unlock()
	eventually(t, "events on the new pipelines", func() bool {
		return env.source("changed", 1).ackCount() == 1 && env.source("added", 0).ackCount() == 1
	})
}

func equalResult(a, b ReloadResult) bool {
	return slices.Equal(a.Started, b.Started) && slices.Equal(a.Restarted, b.Restarted) &&
		slices.Equal(a.Stopped, b.Stopped) && slices.Equal(a.Unchanged, b.Unchanged)
}

// TestReloadBuildErrorChangesNothing: a configuration with a pipeline that
// cannot be built is refused whole; the running pipelines stay.
func TestReloadBuildErrorChangesNothing(t *testing.T) {
	env := startRunner(t, map[string][]*connectors.Message{}, namedSpec("one", "http://fn.invalid/a"))
	eventually(t, "the pipeline to run", func() bool { st, _ := env.runner.Pipelines()[0].Status(); return st == StateRunning })
	bad := namedSpec("two", "http://fn.invalid/a")
	bad.Spec.Source.Kafka.Group = "two"
	bad.Spec.Results.OnSuccess = []pipelines.RouteSpec{{Kafka: &pipelines.KafkaSink{}}} // no such sink in comps
	changed := namedSpec("one", "http://fn.invalid/b")
	changed.Spec.Source.Kafka.Group = "one"
	if _, err := env.runner.Reload([]*pipelines.Pipeline{changed, bad}); err == nil {
		t.Fatal("Reload with an unbuildable pipeline succeeded")
	}
	// The changed pipeline was built, then released; the running one was
	// never stopped.
	if isClosed(env.source("one", 0)) {
		t.Fatal("the running pipeline was stopped by a refused reload")
	}
	if env.builds("one") != 2 || !isClosed(env.source("one", 1)) {
		t.Fatal("the successor built for the refused reload was not released")
	}
	if got := ids(env.runner.Pipelines()); !slices.Equal(got, []string{"t/one"}) {
		t.Fatalf("pipelines after a refused reload: %v", got)
	}
}

// TestReloadFromNothing: a runner started without pipelines waits for its
// context, and a reload can give it some.
func TestReloadFromNothing(t *testing.T) {
	env := startRunner(t, map[string][]*connectors.Message{"late": {message("l1", "p0", "", 0)}})
	late := namedSpec("late", "http://fn.invalid/a")
	late.Spec.Source.Kafka.Group = "late"
	eventually(t, "Run to start", func() bool {
		_, err := env.runner.Reload(nil)
		return err == nil
	})
	res, err := env.runner.Reload([]*pipelines.Pipeline{late})
	if err != nil || !slices.Equal(res.Started, []string{"t/late"}) {
		t.Fatalf("Reload = %+v, %v", res, err)
	}
	eventually(t, "the added pipeline's event", func() bool { return env.source("late", 0).ackCount() == 1 })
}

// TestReloadAfterRunReturned: Reload refuses once Run has returned.
func TestReloadAfterRunReturned(t *testing.T) {
	env := startRunner(t, map[string][]*connectors.Message{}, namedSpec("one", "http://fn.invalid/a"))
	env.cancel()
	if err := <-env.done; err != nil {
		t.Fatal(err)
	}
	env.done <- nil // for the cleanup
	if _, err := env.runner.Reload(nil); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Reload after Run: %v, want ErrNotRunning", err)
	}
}
