package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/flow"
	"github.com/sluicehq/sluice/runtime/invoke"
	"github.com/sluicehq/sluice/runtime/metrics"
)

// The RocketMQ client (linked in through DefaultComponents) starts a cache
// janitor from a package variable at init; it lives as long as the process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"))
}

// downSource connects at once but reports its broker unreachable until up
// is set, as a source does while it retries a dead broker.
type downSource struct {
	up     atomic.Bool
	closed chan struct{}
}

func (s *downSource) Connect(context.Context) error { return nil }
func (s *downSource) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	select {
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case <-s.closed:
		return nil, nil, connectors.ErrClosed
	}
}
func (s *downSource) Close(context.Context) error {
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	return nil
}
func (s *downSource) Health() error {
	if s.up.Load() {
		return nil
	}
	return errors.New("kafka: dial tcp 127.0.0.1:1: connection refused")
}

type nopFn struct{}

func (nopFn) Invoke(context.Context, []cloudevents.Event) (invoke.Result, error) {
	return invoke.Result{Status: 200}, nil
}

func TestHealthReadinessAndPipelines(t *testing.T) {
	src := &downSource{closed: make(chan struct{})}
	spec := &pipelines.Pipeline{
		Metadata: pipelines.Metadata{Name: "orders", Tenant: "acme"},
		Spec: pipelines.PipelineSpec{
			Source:   pipelines.SourceSpec{Kafka: &pipelines.KafkaSource{Brokers: []string{"127.0.0.1:1"}, Topics: []string{"t"}, Group: "g"}},
			Function: &pipelines.FunctionSpec{URL: "http://127.0.0.1:1/"},
		},
	}
	pipelines.ApplyDefaults(spec)
	reg := metrics.New("test")
	comps := engine.Components{
		Sources: map[string]engine.SourceFactory{"kafka": func(pipelines.SourceSpec, connectors.Options, engine.SourceEnv) (connectors.Source, error) {
			return src, nil
		}},
		Sinks: map[string]engine.SinkFactory{},
	}
	runner, err := engine.NewRunner([]*pipelines.Pipeline{spec}, engine.Deps{
		Metrics: reg, Limiters: flow.NewRegistry(), Log: slog.New(slog.DiscardHandler), Function: nopFn{},
	}, comps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	srv := httptest.NewServer(Handler(runner, reg, Options{Pprof: true}))
	defer srv.Close()

	if code, _ := get(t, srv.URL+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	code, body := waitFor(t, srv.URL+"/readyz", func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(body, "connection refused")
	})
	if !strings.Contains(body, "acme/orders") {
		t.Fatalf("/readyz %d does not name the pipeline: %s", code, body)
	}
	src.up.Store(true)
	waitFor(t, srv.URL+"/readyz", func(code int, _ string) bool { return code == http.StatusOK })

	_, body = get(t, srv.URL+"/v1/pipelines")
	var st []PipelineStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].ID != "acme/orders" || st[0].State != engine.StateRunning || !st[0].Ready || st[0].Source != "kafka" {
		t.Fatalf("/v1/pipelines = %+v", st)
	}
	if code, _ := get(t, srv.URL+"/debug/pprof/"); code != http.StatusOK {
		t.Fatalf("/debug/pprof/ = %d with Pprof on", code)
	}
	if _, body := get(t, srv.URL+"/metrics"); !strings.Contains(body, `sluice_pipeline_running{pipeline="acme/orders"} 1`) {
		t.Fatalf("/metrics lacks the running pipeline:\n%.2000s", body)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, url string, ok func(int, string) bool) (int, string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get(t, url)
		if ok(code, body) {
			return code, body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed %d: %s", url, code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
