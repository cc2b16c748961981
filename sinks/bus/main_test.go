package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/flow"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/sinks/bus/pattern"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// sarama's metrics library starts a ticker goroutine it never stops.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
		// The RocketMQ client (linked in through the sink registry) starts a
		// cache janitor at package initialisation.
		goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"))
}

// Generous bounds that only stop hung tests; no assertion depends on speed.
const waitFor = 20 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loader checks patterns as `sluice validate` does.
var loader = pipelines.Loader{CheckPattern: func(raw any) error {
	_, err := pattern.Parse(raw)
	return err
}}

// loadBuses parses YAML documents (Bus kinds) with defaults and validation.
func loadBuses(t *testing.T, yaml string) []*pipelines.Bus {
	t.Helper()
	cfg, err := loader.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return cfg.Buses
}

// memRecorder counts bus metrics.
type memRecorder struct {
	mu     sync.Mutex
	counts map[string]int
}

func newMemRecorder() *memRecorder { return &memRecorder{counts: map[string]int{}} }

func (r *memRecorder) add(key string, n int) {
	r.mu.Lock()
	r.counts[key] += n
	r.mu.Unlock()
}

func (r *memRecorder) get(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[key]
}

func (r *memRecorder) Received(bus string, n int)            { r.add("received "+bus, n) }
func (r *memRecorder) Matched(bus, rule string)              { r.add("matched "+bus+" "+rule, 1) }
func (r *memRecorder) Delivered(bus, rule string, _ float64) { r.add("delivered "+bus+" "+rule, 1) }
func (r *memRecorder) Failed(bus, rule string)               { r.add("failed "+bus+" "+rule, 1) }
func (r *memRecorder) DeadLettered(bus, rule string)         { r.add("deadlettered "+bus+" "+rule, 1) }

// harness runs a Set over an embedded queue in a data directory.
type harness struct {
	t    *testing.T
	q    *queue.Embedded
	set  *Set
	api  *httptest.Server
	rec  *memRecorder
	stop func()
}

func queueConfig(dir string) queue.EmbeddedConfig {
	// A short AckWait: after a restart, what the previous run held is
	// redelivered soon.
	return queue.EmbeddedConfig{DataDir: dir, Config: queue.Config{AckWait: 2 * time.Second, PollWait: 500 * time.Millisecond}}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// start opens the queue in dir (a new temp dir if empty), builds the
// buses of yaml and runs them until stop (or the test's end).
func start(t *testing.T, dir, yaml string) *harness {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	q, err := queue.OpenEmbedded(testCtx(t), queueConfig(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, q: q, rec: newMemRecorder()}
	set, err := New(testCtx(t), loadBuses(t, yaml), Deps{
		Queue: q,
		Engine: engine.Deps{
			Metrics: metrics.New("test"), Limiters: flow.NewRegistry(), Log: testLogger(t),
			Stdout: &bytes.Buffer{}, DrainTimeout: 5 * time.Second,
		},
		Components: engine.DefaultComponents(),
		Recorder:   h.rec,
	})
	if err != nil {
		_ = q.Close(context.Background())
		t.Fatal(err)
	}
	h.set = set
	h.api = httptest.NewServer(set.Handler(HandlerOptions{}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- set.Run(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			h.api.Close()
			cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer ccancel()
			if err := set.Close(cctx); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := q.Close(cctx); err != nil {
				t.Errorf("queue Close: %v", err)
			}
		})
	}
	t.Cleanup(h.stop)
	return h
}

// event makes a JSON event.
func event(id, typ string, data any) cloudevents.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(id)
	ev.SetSource("/acme/orders")
	ev.SetType(typ)
	if data != nil {
		if err := ev.SetData(cloudevents.ApplicationJSON, data); err != nil {
			panic(err)
		}
	}
	return ev
}

// post sends events to the bus API as one batch and returns the status.
func (h *harness) post(bus string, events ...cloudevents.Event) int {
	h.t.Helper()
	body, err := json.Marshal(events)
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := http.Post(h.api.URL+"/v1/buses/"+bus+"/events", BatchContentType, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

// status is GET /v1/buses/{bus}.
func (h *harness) status(bus string) BusStatus {
	h.t.Helper()
	resp, err := http.Get(h.api.URL + "/v1/buses/" + bus)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st BusStatus
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil || len(st.Rules) == 0 {
		h.t.Fatalf("GET /v1/buses/%s: %d", bus, resp.StatusCode)
	}
	return st
}

func (h *harness) mustPost(bus string, events ...cloudevents.Event) {
	h.t.Helper()
	if st := h.post(bus, events...); st != http.StatusAccepted {
		h.t.Fatalf("POST events to %s: %d", bus, st)
	}
}

// endpoint is an HTTP target (a webhook sink's URL or a function) that
// records the events it answered 2xx to.
type endpoint struct {
	srv  *httptest.Server
	down atomic.Bool // answer 503 to everything

	mu     sync.Mutex
	counts map[string]int // event id → 2xx answers
	last   map[string]cloudevents.Event
	// replayed counts the 2xx answers to replayed deliveries, by
	// "id replay-id".
	replayed map[string]int
	failed   int // 503 answers
}

func newEndpoint(t *testing.T) *endpoint {
	e := &endpoint{counts: map[string]int{}, last: map[string]cloudevents.Event{}, replayed: map[string]int{}}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if e.down.Load() {
			e.mu.Lock()
			e.failed++
			e.mu.Unlock()
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		e.mu.Lock()
		e.counts[ev.ID()]++
		e.last[ev.ID()] = *ev
		if rp, ok := ev.Extensions()[ExtReplay].(string); ok {
			e.replayed[ev.ID()+" "+rp]++
		}
		e.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *endpoint) URL() string { return e.srv.URL + "/" }

// ids returns the distinct event ids received, sorted.
func (e *endpoint) ids() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Sorted(maps.Keys(e.counts))
}

func (e *endpoint) count(id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counts[id]
}

func (e *endpoint) get(id string) (cloudevents.Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ev, ok := e.last[id]
	return ev, ok
}

// replays returns the ids delivered by replay rp, sorted.
func (e *endpoint) replays(rp string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for k := range e.replayed {
		if id, r, _ := strings.Cut(k, " "); r == rp {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func (e *endpoint) failures() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failed
}

func (e *endpoint) has(ids []string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		if e.counts[id] == 0 {
			return false
		}
	}
	return true
}

func idsOf(events []cloudevents.Event) []string {
	out := make([]string, len(events))
	for i := range events {
		out[i] = events[i].ID()
	}
	sort.Strings(out)
	return out
}

func numbered(prefix, typ string, n int, data func(i int) any) []cloudevents.Event {
	out := make([]cloudevents.Event, n)
	for i := range out {
		var d any
		if data != nil {
			d = data(i)
		}
		out[i] = event(fmt.Sprintf("%s-%03d", prefix, i), typ, d)
	}
	return out
}

// indent re-indents a YAML fragment for embedding.
func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n"+pad)
}
