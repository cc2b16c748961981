package engine

import (
	"context"
	"sync"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/runtime/invoke"
)

// creditSource is a memSource that records the credits it is given.
type creditSource struct {
	*memSource
	mu      sync.Mutex
	credits []int
}

func (s *creditSource) SetCredit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.credits = append(s.credits, n)
}

func (s *creditSource) last() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.credits) == 0 {
		return 0, false
	}
	return s.credits[len(s.credits)-1], true
}

// TestSourceFollowsCredit: a source that implements
// connectors.CreditFollower is given the scheduler's credit, twice the
// concurrency limit's worth of events (initial limit 4, one event per
// invocation: 8), without waiting for the limit to change.
func TestSourceFollowsCredit(t *testing.T) {
	var cs *creditSource
	h := startWith(t, spec(nil), func(context.Context, cloudevents.Event) (invoke.Result, error) {
		return invoke.Result{}, nil
	}, func(h *harness) {
		h.wrap = func(s connectors.Source) connectors.Source {
			cs = &creditSource{memSource: h.src}
			return cs
		}
	}, message("a", "t/0", "", 0))
	eventually(t, "ack", func() bool { return h.src.ackCount() == 1 })
	eventually(t, "credit given", func() bool { _, ok := cs.last(); return ok })
	if got, _ := cs.last(); got != 8 {
		t.Fatalf("credit = %d, want 8 (2 × limit 4 × 1 event)", got)
	}
}
