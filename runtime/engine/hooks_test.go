package engine

import (
	"context"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/runtime/invoke"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/retry"
)

// recHooks skips "skip-me" at admission, and cancels "cancel-me" with
// ErrSkip once it has been attempted (a task cancelled while retrying).
type recHooks struct {
	mu       sync.Mutex
	finished map[string]string
	attempts map[string]int
	cancels  map[string]context.CancelCauseFunc
}

func (h *recHooks) Admit(ctx context.Context, m *connectors.Message) (context.Context, error) {
	if m.Event.ID() == "skip-me" {
		return nil, ErrSkip
	}
	c, cancel := context.WithCancelCause(ctx)
	h.mu.Lock()
	h.cancels[m.Event.ID()] = cancel
	h.mu.Unlock()
	return c, nil
}

func (h *recHooks) Attempted(m *connectors.Message, attempt int, v retry.Verdict, retrying bool, _ time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts[m.Event.ID()] = attempt
	if m.Event.ID() == "cancel-me" {
		h.cancels["cancel-me"](ErrSkip)
	}
}

func (h *recHooks) Finished(m *connectors.Message, outcome string, results []cloudevents.Event, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.finished[m.Event.ID()] = outcome
	if cancel := h.cancels[m.Event.ID()]; cancel != nil {
		cancel(nil)
	}
}

func TestHooksAdmitFollowAndSkip(t *testing.T) {
	hooks := &recHooks{finished: map[string]string{}, attempts: map[string]int{}, cancels: map[string]context.CancelCauseFunc{}}
	s := spec(nil)
	s.Spec.Delivery.Retry.Delay = 0 // the default applies; retries must be slow enough to cancel
	h := startWith(t, s, func(_ context.Context, e cloudevents.Event) (invoke.Result, error) {
		if e.ID() == "cancel-me" {
			return invoke.Result{}, &invoke.Error{Status: 503}
		}
		return ok(e)
	}, func(h *harness) { h.hooks = hooks }, message("skip-me", "t/0", "", 0), message("cancel-me", "t/0", "", 1), message("fine", "t/0", "", 2))
	eventually(t, "all acked", func() bool { return h.src.ackCount() == 3 })
	for id, want := range map[string]string{"skip-me": metrics.OutcomeSkipped, "cancel-me": metrics.OutcomeSkipped, "fine": metrics.OutcomeSucceeded} {
		if err, _ := h.src.ack(id); err != nil {
			t.Fatalf("%s nacked: %v", id, err)
		}
		hooks.mu.Lock()
		got := hooks.finished[id]
		hooks.mu.Unlock()
		if got != want {
			t.Fatalf("%s finished %q, want %q", id, got, want)
		}
	}
	if len(h.dlq.all()) != 0 {
		t.Fatal("a skipped event was dead-lettered")
	}
	if hooks.attempts["cancel-me"] != 1 {
		t.Fatalf("cancel-me attempted %d times, want 1 then skipped", hooks.attempts["cancel-me"])
	}
}
