package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/invoke"
)

func batchSpec(maxEvents int) *pipelines.Pipeline {
	return spec(func(p *pipelines.Pipeline) {
		p.Spec.Function.Mode = pipelines.ModeBatch
		p.Spec.Function.Batch = &pipelines.BatchSpec{MaxEvents: maxEvents, Linger: pipelines.Duration(20 * time.Millisecond)}
	})
}

// batchFn adapts a per-batch function to the harness (which counts calls).
type batchFn func(ctx context.Context, in []cloudevents.Event) (invoke.Result, error)

func startBatch(t *testing.T, s *pipelines.Pipeline, fn batchFn, msgs ...*connectors.Message) *harness {
	t.Helper()
	// The harness hands the function one event at a time; batch tests need
	// the whole slice, so they install the function directly.
	h := startWith(t, s, nil, func(h *harness) { h.batch = fn }, msgs...)
	return h
}

func msgs(n int) []*connectors.Message {
	out := make([]*connectors.Message, n)
	for i := range out {
		out[i] = message(fmt.Sprintf("e%03d", i), "t/0", "", int64(i))
	}
	return out
}

func TestBatchDeliversInBatches(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	h := startBatch(t, batchSpec(10), func(_ context.Context, in []cloudevents.Event) (invoke.Result, error) {
		mu.Lock()
		sizes = append(sizes, len(in))
		mu.Unlock()
		return invoke.Result{Status: 200, Events: []cloudevents.Event{event("r")}}, nil
	}, msgs(50)...)
	eventually(t, "all acked", func() bool { return h.src.ackCount() == 50 })
	mu.Lock()
	defer mu.Unlock()
	total, biggest := 0, 0
	for _, n := range sizes {
		total += n
		biggest = max(biggest, n)
		if n > 10 {
			t.Fatalf("batch of %d exceeds maxEvents 10", n)
		}
	}
	if total != 50 {
		t.Fatalf("events invoked = %d, want 50", total)
	}
	if biggest < 2 {
		t.Fatalf("no batching happened: sizes %v", sizes)
	}
}

func TestBatchPerEventFailures(t *testing.T) {
	h := startBatch(t, batchSpec(10), func(_ context.Context, in []cloudevents.Event) (invoke.Result, error) {
		failed := map[int]*invoke.Error{}
		for i, e := range in {
			if strings.HasSuffix(e.ID(), "3") {
				failed[i] = &invoke.Error{Status: 422, Body: "bad"}
			}
		}
		return invoke.Result{Status: 207, Failed: failed}, nil
	}, msgs(20)...)
	eventually(t, "all acked", func() bool { return h.src.ackCount() == 20 })
	dl := h.dlq.all()
	if len(dl) != 2 {
		t.Fatalf("dead letters = %d, want 2 (e003, e013)", len(dl))
	}
	for _, e := range dl {
		if !strings.HasSuffix(e.ID(), "3") || e.Extensions()[ExtClass] != "permanent" {
			t.Fatalf("unexpected dead letter %s %v", e.ID(), e.Extensions())
		}
	}
}

func TestBatchBisectionIsolatesPoison(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	h := startBatch(t, batchSpec(16), func(_ context.Context, in []cloudevents.Event) (invoke.Result, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		for _, e := range in {
			if e.ID() == "e005" || e.ID() == "e012" {
				return invoke.Result{}, &invoke.Error{Status: 400, Body: "poison in batch"}
			}
		}
		return invoke.Result{Status: 200}, nil
	}, msgs(16)...)
	eventually(t, "all acked", func() bool { return h.src.ackCount() == 16 })
	dl := h.dlq.all()
	got := map[string]bool{}
	for _, e := range dl {
		got[e.ID()] = true
	}
	if len(dl) != 2 || !got["e005"] || !got["e012"] {
		t.Fatalf("dead letters = %v, want exactly e005 and e012", got)
	}
	for i := range 16 {
		if err, _ := h.src.ack(fmt.Sprintf("e%03d", i)); err != nil {
			t.Fatalf("e%03d nacked: %v", i, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// Two poison events among 16: at most 2·log2(16)·2+1 calls, far fewer
	// than one call per event after the first failure.
	if calls > 2*4*2+1 {
		t.Fatalf("%d calls to isolate 2 poison events in 16", calls)
	}
}

func TestBatchRetriableWholeBatchRetried(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	h := startBatch(t, batchSpec(8), func(_ context.Context, in []cloudevents.Event) (invoke.Result, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			return invoke.Result{}, &invoke.Error{Status: 503}
		}
		return invoke.Result{Status: 200}, nil
	}, msgs(8)...)
	eventually(t, "all acked", func() bool { return h.src.ackCount() == 8 })
	if len(h.dlq.all()) != 0 {
		t.Fatal("retriable batch failure dead-lettered events")
	}
}
