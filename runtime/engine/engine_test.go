package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/flow"
	"github.com/sluicehq/sluice/runtime/invoke"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/sinks"
)

// The RocketMQ client (linked in through DefaultComponents) starts a cache
// janitor from a package variable at init; it lives as long as the process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"))
}

// memSource is an in-memory source for engine unit tests: it yields its
// messages once and records every ack.
type memSource struct {
	msgs   chan *connectors.Message
	closed chan struct{}
	once   sync.Once

	mu     sync.Mutex
	acks   map[string]error // event id → ack error (nil = done)
	nacked int
}

func newMemSource(msgs ...*connectors.Message) *memSource {
	s := &memSource{msgs: make(chan *connectors.Message, len(msgs)), closed: make(chan struct{}), acks: map[string]error{}}
	for _, m := range msgs {
		s.msgs <- m
	}
	return s
}

func (s *memSource) Connect(context.Context) error { return nil }

func (s *memSource) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	select {
	case m := <-s.msgs:
		var once sync.Once
		return m, func(_ context.Context, err error) error {
			called := false
			once.Do(func() { called = true })
			if !called {
				panic("ack called twice for " + m.Event.ID())
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			s.acks[m.Event.ID()] = err
			if err != nil {
				s.nacked++
			}
			return nil
		}, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case <-s.closed:
		return nil, nil, connectors.ErrClosed
	}
}

func (s *memSource) Close(context.Context) error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

func (s *memSource) ack(id string) (err error, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	err, ok = s.acks[id]
	return err, ok
}

func (s *memSource) ackCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acks)
}

type memSink struct {
	mu     sync.Mutex
	events []cloudevents.Event
	down   atomic.Bool
	failed atomic.Int32
	closed atomic.Bool
	// rejectData refuses (for good) events that carry data;
	// rejectAll refuses everything.
	rejectData, rejectAll atomic.Bool
}

func (s *memSink) Write(_ context.Context, evs []cloudevents.Event) error {
	if s.down.Load() {
		s.failed.Add(1)
		return errors.New("sink down")
	}
	for _, e := range evs {
		if s.rejectAll.Load() || (s.rejectData.Load() && len(e.Data()) > 0) {
			return sinks.Rejected(errors.New("message too large"))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, evs...)
	return nil
}

func (s *memSink) Close(context.Context) error { s.closed.Store(true); return nil }

func (s *memSink) all() []cloudevents.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]cloudevents.Event(nil), s.events...)
}

type funcFn func(ctx context.Context, e cloudevents.Event) (invoke.Result, error)

func event(id string) cloudevents.Event {
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetSource("test")
	e.SetType("t.created")
	return e
}

func message(id, lane, key string, offset int64) *connectors.Message {
	return &connectors.Message{
		Event: event(id), Lane: lane, Key: key,
		Coordinates: connectors.Coordinates{System: "mem", Topic: "t", Partition: 0, Offset: offset},
		ReceivedAt:  time.Now(),
	}
}

type harness struct {
	src           *memSource
	ok, dlq       *memSink
	pipe          *Pipeline
	reg           *metrics.Registry
	cancel        context.CancelFunc
	done          chan error
	calls, active atomic.Int32
	maxActive     atomic.Int32
	stopOnce      sync.Once
	drain         time.Duration
	batch         batchFn // when set, the function sees whole batches
	hooks         Hooks
	wrap          func(connectors.Source) connectors.Source // wraps the source, when set
}

func spec(mut func(*pipelines.Pipeline)) *pipelines.Pipeline {
	p := &pipelines.Pipeline{
		APIVersion: pipelines.APIVersion, Kind: pipelines.KindPipeline,
		Metadata: pipelines.Metadata{Name: "p", Tenant: "t"},
		Spec: pipelines.PipelineSpec{
			Source:   pipelines.SourceSpec{Kafka: &pipelines.KafkaSource{}},
			Function: &pipelines.FunctionSpec{URL: "http://fn.invalid/", Mode: pipelines.ModeBinary},
			Delivery: pipelines.DeliverySpec{
				Ordering:    pipelines.OrderingNone,
				Concurrency: pipelines.ConcurrencySpec{Initial: 4, Min: 1, Max: 16},
				Retry: pipelines.RetrySpec{Attempts: 3, Backoff: "exponential",
					Delay: pipelines.Duration(time.Millisecond), MaxDelay: pipelines.Duration(5 * time.Millisecond),
					RetryAfterMax: pipelines.Duration(10 * time.Millisecond)},
				MaxEventAge: pipelines.Duration(time.Hour),
				Window:      64,
			},
			Results: pipelines.ResultsSpec{
				OnSuccess: []pipelines.RouteSpec{{Log: &pipelines.LogSink{}}},
				OnFailure: []pipelines.RouteSpec{{Webhook: &pipelines.WebhookSink{URL: "http://dlq.invalid/"}}},
			},
		},
	}
	if mut != nil {
		mut(p)
	}
	return p
}

// start runs a pipeline over msgs with fn; the success route is h.ok and the
// failure route h.dlq.
func start(t *testing.T, s *pipelines.Pipeline, fn funcFn, msgs ...*connectors.Message) *harness {
	t.Helper()
	return startWith(t, s, fn, nil, msgs...)
}

// startWith is start with a setup hook run before the pipeline starts.
func startWith(t *testing.T, s *pipelines.Pipeline, fn funcFn, setup func(*harness), msgs ...*connectors.Message) *harness {
	t.Helper()
	h := &harness{src: newMemSource(msgs...), ok: &memSink{}, dlq: &memSink{}, reg: metrics.New("test")}
	if setup != nil {
		setup(h)
	}
	counted := &countedFn{h: h, single: fn}
	comps := Components{
		Sources: map[string]SourceFactory{"kafka": func(pipelines.SourceSpec, connectors.Options, SourceEnv) (connectors.Source, error) {
			if h.wrap != nil {
				return h.wrap(h.src), nil
			}
			return h.src, nil
		}},
		Sinks: map[string]SinkFactory{
			"log":     func(pipelines.RouteSpec, SinkEnv) (sinks.Sink, error) { return h.ok, nil },
			"webhook": func(pipelines.RouteSpec, SinkEnv) (sinks.Sink, error) { return h.dlq, nil },
		},
	}
	if h.drain == 0 {
		h.drain = 5 * time.Second
	}
	deps := Deps{Metrics: h.reg, Limiters: flow.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		DrainTimeout: h.drain, Function: counted, Hooks: h.hooks}
	p, err := Build(s, deps, comps)
	if err != nil {
		t.Fatal(err)
	}
	h.pipe = p
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- p.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

// stop stops the pipeline and waits for Run; safe to call twice.
// countedFn counts calls and concurrency, then calls the test's function.
type countedFn struct {
	h      *harness
	single funcFn
}

func (c *countedFn) Invoke(ctx context.Context, in []cloudevents.Event) (invoke.Result, error) {
	h := c.h
	h.calls.Add(1)
	n := h.active.Add(1)
	defer h.active.Add(-1)
	for {
		m := h.maxActive.Load()
		if n <= m || h.maxActive.CompareAndSwap(m, n) {
			break
		}
	}
	if h.batch != nil {
		return h.batch(ctx, in)
	}
	return c.single(ctx, in[0])
}

func (h *harness) stop(t *testing.T) {
	t.Helper()
	h.stopOnce.Do(func() {
		h.cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("pipeline did not stop")
		}
	})
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func ok(e cloudevents.Event) (invoke.Result, error) {
	r := event("result-" + e.ID())
	return invoke.Result{Status: 200, Events: []cloudevents.Event{r}}, nil
}

func TestSuccessWritesResultThenAcks(t *testing.T) {
	var msgs []*connectors.Message
	for i := range 50 {
		msgs = append(msgs, message(fmt.Sprint("e", i), "t/0", "k", int64(i)))
	}
	h := start(t, spec(nil), func(_ context.Context, e cloudevents.Event) (invoke.Result, error) { return ok(e) }, msgs...)
	eventually(t, "all acked", func() bool { return h.src.ackCount() == 50 })
	for i := range 50 {
		if err, _ := h.src.ack(fmt.Sprint("e", i)); err != nil {
			t.Fatalf("e%d acked with %v", i, err)
		}
	}
	if got := len(h.ok.all()); got != 50 {
		t.Fatalf("results written = %d, want 50", got)
	}
	for _, r := range h.ok.all() {
		if r.Extensions()[ExtPartitionKey] != "k" {
			t.Fatalf("result %s did not inherit the input key: %v", r.ID(), r.Extensions())
		}
	}
	if got := len(h.dlq.all()); got != 0 {
		t.Fatalf("dead letters = %d", got)
	}
}

func TestRetriableThenSuccess(t *testing.T) {
	var n atomic.Int32
	h := start(t, spec(nil), func(_ context.Context, e cloudevents.Event) (invoke.Result, error) {
		if n.Add(1) <= 2 {
			return invoke.Result{}, &invoke.Error{Status: 503}
		}
		return ok(e)
	}, message("a", "t/0", "", 0))
	eventually(t, "ack", func() bool { return h.src.ackCount() == 1 })
	if err, _ := h.src.ack("a"); err != nil {
		t.Fatal(err)
	}
	if h.calls.Load() != 3 {
		t.Fatalf("calls = %d, want 3", h.calls.Load())
	}
	if len(h.ok.all()) != 1 || len(h.dlq.all()) != 0 {
		t.Fatalf("ok=%d dlq=%d", len(h.ok.all()), len(h.dlq.all()))
	}
}

func TestPermanentFailureDeadLettersWithReason(t *testing.T) {
	h := start(t, spec(nil), func(context.Context, cloudevents.Event) (invoke.Result, error) {
		return invoke.Result{}, &invoke.Error{Status: 400, Body: "bad order"}
	}, message("p", "t/0", "", 7))
	eventually(t, "ack", func() bool { return h.src.ackCount() == 1 })
	if h.calls.Load() != 1 {
		t.Fatalf("permanent failure retried: %d calls", h.calls.Load())
	}
	dl := h.dlq.all()
	if len(dl) != 1 {
		t.Fatalf("dead letters = %d", len(dl))
	}
	ext := dl[0].Extensions()
	if ext[ExtClass] != "permanent" || fmt.Sprint(ext[ExtStatus]) != "400" || ext[ExtOffset] != "7" || ext[ExtPipeline] != "t/p" {
		t.Fatalf("extensions = %v", ext)
	}
	if !strings.Contains(fmt.Sprint(ext[ExtReason]), "400") {
		t.Fatalf("reason = %v", ext[ExtReason])
	}
	if dl[0].ID() != "p" {
		t.Fatalf("dead letter id = %s", dl[0].ID())
	}
}

func TestExhaustedRetries(t *testing.T) {
	h := start(t, spec(nil), func(context.Context, cloudevents.Event) (invoke.Result, error) {
		return invoke.Result{}, &invoke.Error{Status: 500}
	}, message("x", "t/0", "", 0))
	eventually(t, "ack", func() bool { return h.src.ackCount() == 1 })
	if h.calls.Load() != 3 {
		t.Fatalf("calls = %d, want attempts=3", h.calls.Load())
	}
	dl := h.dlq.all()
	if len(dl) != 1 || dl[0].Extensions()[ExtClass] != "exhausted" || fmt.Sprint(dl[0].Extensions()[ExtAttempts]) != "3" {
		t.Fatalf("dead letter = %v", dl)
	}
}

func TestUndecodableIsDeadLetteredWithoutInvoking(t *testing.T) {
	m := message("bad", "t/0", "", 0)
	m.DecodeErr = errors.New("ce_specversion 0.1 unsupported")
	h := start(t, spec(nil), func(_ context.Context, e cloudevents.Event) (invoke.Result, error) { return ok(e) }, m)
	eventually(t, "ack", func() bool { return h.src.ackCount() == 1 })
	if h.calls.Load() != 0 {
		t.Fatal("function invoked for undecodable message")
	}
	dl := h.dlq.all()
	if len(dl) != 1 || dl[0].Extensions()[ExtClass] != "undecodable" ||
		!strings.Contains(fmt.Sprint(dl[0].Extensions()[ExtReason]), "unsupported") {
		t.Fatalf("dead letter = %v", dl)
	}
}

func TestFilterAcksWithoutInvoking(t *testing.T) {
	s := spec(func(p *pipelines.Pipeline) {
		p.Spec.Filter = &pipelines.FilterSpec{Prefix: map[string]string{"type": "other."}}
	})
	h := start(t, s, func(_ context.Context, e cloudevents.Event) (invoke.Result, error) { return ok(e) }, message("f", "t/0", "", 0))
	eventually(t, "ack", func() bool { return h.src.ackCount() == 1 })
	if err, _ := h.src.ack("f"); err != nil || h.calls.Load() != 0 {
		t.Fatalf("err=%v calls=%d", err, h.calls.Load())
	}
}

func TestResultRouteDownHoldsAckUntilWritten(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   funcFn
		down func(h *harness) *memSink
	}{
		{"onSuccess", func(_ context.Context, e cloudevents.Event) (invoke.Result, error) { return ok(e) },
			func(h *harness) *memSink { return h.ok }},
		{"onFailure", func(context.Context, cloudevents.Event) (invoke.Result, error) {
			return invoke.Result{}, &invoke.Error{Status: 422}
		}, func(h *harness) *memSink { return h.dlq }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startWith(t, spec(nil), tc.fn, func(h *harness) { tc.down(h).down.Store(true) }, message("r", "t/0", "", 0))
			sink := tc.down(h)
			eventually(t, "failed writes", func() bool { return sink.failed.Load() >= 2 })
			if _, acked := h.src.ack("r"); acked {
				t.Fatal("acked while its route was down")
			}
			sink.down.Store(false)
			eventually(t, "ack", func() bool { return h.src.ackCount() == 1 })
			if err, _ := h.src.ack("r"); err != nil {
				t.Fatalf("ack err = %v", err)
			}
			if got := len(sink.all()); got != 1 {
				t.Fatalf("route holds %d events, want 1", got)
			}
			if h.calls.Load() != 1 {
				t.Fatalf("function called %d times; a route retry must not re-invoke", h.calls.Load())
			}
		})
	}
}

func TestPartitionOrderingOneInFlightPerLane(t *testing.T) {
	s := spec(func(p *pipelines.Pipeline) { p.Spec.Delivery.Ordering = pipelines.OrderingPartition })
	var msgs []*connectors.Message
	for i := range 40 {
		msgs = append(msgs, message(fmt.Sprint("e", i), "t/0", "", int64(i)))
	}
	var mu sync.Mutex
	var order []string
	h := start(t, s, func(_ context.Context, e cloudevents.Event) (invoke.Result, error) {
		mu.Lock()
		order = append(order, e.ID())
		mu.Unlock()
		time.Sleep(100 * time.Microsecond)
		return ok(e)
	}, msgs...)
	eventually(t, "all acked", func() bool { return h.src.ackCount() == 40 })
	if m := h.maxActive.Load(); m != 1 {
		t.Fatalf("max in flight on one partition = %d, want 1", m)
	}
	for i, id := range order {
		if id != fmt.Sprint("e", i) {
			t.Fatalf("order[%d] = %s", i, id)
		}
	}
}

func TestKeyOrderingParallelAcrossKeys(t *testing.T) {
	s := spec(func(p *pipelines.Pipeline) { p.Spec.Delivery.Ordering = pipelines.OrderingKey })
	var msgs []*connectors.Message
	for i := range 200 {
		msgs = append(msgs, message(fmt.Sprint("e", i), "t/0", fmt.Sprint("k", i%8), int64(i)))
	}
	var mu sync.Mutex
	last := map[string]int{}
	violations := 0
	h := start(t, s, func(_ context.Context, e cloudevents.Event) (invoke.Result, error) {
		var n int
		fmt.Sscanf(e.ID(), "e%d", &n)
		k := fmt.Sprint("k", n%8)
		mu.Lock()
		if prev, seen := last[k]; seen && prev > n {
			violations++
		}
		last[k] = n
		mu.Unlock()
		time.Sleep(200 * time.Microsecond)
		return ok(e)
	}, msgs...)
	eventually(t, "all acked", func() bool { return h.src.ackCount() == 200 })
	if violations != 0 {
		t.Fatalf("%d per-key order violations", violations)
	}
	if h.maxActive.Load() < 2 {
		t.Fatalf("key ordering ran at most %d in flight across 8 keys", h.maxActive.Load())
	}
}

func TestSoftStopFinishesEverythingRead(t *testing.T) {
	s := spec(func(p *pipelines.Pipeline) { p.Spec.Delivery.Ordering = pipelines.OrderingPartition })
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	h := start(t, s, func(_ context.Context, e cloudevents.Event) (invoke.Result, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
		return ok(e)
	}, message("a", "t/0", "", 0), message("b", "t/0", "", 1), message("c", "t/0", "", 2))
	<-started
	h.cancel() // soft stop while a runs and b, c are parked behind it
	time.Sleep(20 * time.Millisecond)
	close(release)
	h.stop(t)
	for _, id := range []string{"a", "b", "c"} {
		if err, acked := h.src.ack(id); !acked || err != nil {
			t.Fatalf("%s: acked=%v err=%v; a soft stop finishes what was read", id, acked, err)
		}
	}
}

func TestDrainTimeoutAbandonsWithoutAck(t *testing.T) {
	s := spec(func(p *pipelines.Pipeline) { p.Spec.Delivery.Ordering = pipelines.OrderingPartition })
	started := make(chan struct{}, 1)
	h := startWith(t, s, func(ctx context.Context, e cloudevents.Event) (invoke.Result, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done() // a function that hangs until the hard stop
		return invoke.Result{}, ctx.Err()
	}, func(h *harness) { h.drain = 50 * time.Millisecond }, message("a", "t/0", "", 0), message("b", "t/0", "", 1))
	<-started
	h.stop(t)
	for _, id := range []string{"a", "b"} {
		if err, acked := h.src.ack(id); !acked || err == nil {
			t.Fatalf("%s: acked=%v err=%v; want a nack (redelivery), never a silent ack", id, acked, err)
		}
	}
	if len(h.dlq.all()) != 0 {
		t.Fatal("abandoned events must not be dead-lettered")
	}
}

func TestRejectedResultDeadLettersTheInput(t *testing.T) {
	h := startWith(t, spec(nil), func(_ context.Context, e cloudevents.Event) (invoke.Result, error) { return ok(e) },
		func(h *harness) { h.ok.rejectAll.Store(true) }, message("big", "t/0", "", 0))
	eventually(t, "ack", func() bool { return h.src.ackCount() == 1 })
	dl := h.dlq.all()
	if len(dl) != 1 || dl[0].Extensions()[ExtClass] != "rejected" ||
		!strings.Contains(fmt.Sprint(dl[0].Extensions()[ExtReason]), "too large") {
		t.Fatalf("dead letters = %v", dl)
	}
}

func TestRejectedDeadLetterIsWrittenWithoutData(t *testing.T) {
	m := message("fat", "t/0", "", 9)
	_ = m.Event.SetData(cloudevents.ApplicationJSON, map[string]string{"blob": "xxxxxxxx"})
	h := startWith(t, spec(nil), func(context.Context, cloudevents.Event) (invoke.Result, error) {
		return invoke.Result{}, &invoke.Error{Status: 400}
	}, func(h *harness) { h.dlq.rejectData.Store(true) }, m)
	eventually(t, "ack", func() bool { return h.src.ackCount() == 1 })
	if err, _ := h.src.ack("fat"); err != nil {
		t.Fatal(err)
	}
	dl := h.dlq.all()
	if len(dl) != 1 || len(dl[0].Data()) != 0 || dl[0].Extensions()[ExtDataDropped] == nil || dl[0].Extensions()[ExtOffset] != "9" {
		t.Fatalf("dead letter = %v", dl)
	}
}

func TestDeadLetterRejectedEvenWithoutDataIsDiscardedNotStuck(t *testing.T) {
	h := startWith(t, spec(nil), func(context.Context, cloudevents.Event) (invoke.Result, error) {
		return invoke.Result{}, &invoke.Error{Status: 400}
	}, func(h *harness) { h.dlq.rejectAll.Store(true) }, message("x", "t/0", "", 0))
	eventually(t, "ack", func() bool { return h.src.ackCount() == 1 })
	if err, _ := h.src.ack("x"); err != nil {
		t.Fatal(err)
	}
}

// brokerSource is a memSource whose broker does the retrying.
type brokerSource struct{ *memSource }

func (brokerSource) BrokerRetries() bool { return true }

func TestBrokerRetryHandsFailuresBack(t *testing.T) {
	h := startWith(t, spec(nil), func(context.Context, cloudevents.Event) (invoke.Result, error) {
		return invoke.Result{}, &invoke.Error{Status: 503}
	}, func(h *harness) { h.wrap = func(s connectors.Source) connectors.Source { return brokerSource{h.src} } },
		message("b", "t/0", "", 0))
	eventually(t, "ack", func() bool { return h.src.ackCount() == 1 })
	if err, _ := h.src.ack("b"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("ack err = %v, want a nack carrying the failure", err)
	}
	if h.calls.Load() != 1 || len(h.dlq.all()) != 0 {
		t.Fatalf("calls = %d, dead letters = %d: the broker, not Sluice, retries", h.calls.Load(), len(h.dlq.all()))
	}
}
