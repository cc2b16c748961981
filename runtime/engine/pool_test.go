package engine

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/flow"
)

// TestWorkerPoolFollowsLimitAndAway: the pool runs as many workers as the
// limit plus those away from the function, grows at once when the limit
// rises or a worker goes away, and shrinks — between events — when the
// limit falls or a worker comes back.
func TestWorkerPoolFollowsLimitAndAway(t *testing.T) {
	var wg sync.WaitGroup
	var running atomic.Int64
	events := make(chan struct{}) // each receive is one event processed
	var pool *workerPool
	pool = &workerPool{wg: &wg, work: func() {
		running.Add(1)
		defer running.Add(-1)
		for !pool.surplus() {
			if _, ok := <-events; !ok {
				pool.exited()
				return
			}
		}
	}}
	defer func() {
		close(events)
		wg.Wait()
	}()
	// settle feeds events until want workers run (so surplus ones can
	// notice), bounded by a generous deadline against hangs.
	settle := func(want int64) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); running.Load() != want; {
			if time.Now().After(deadline) {
				t.Fatalf("%d workers running, want %d", running.Load(), want)
			}
			select {
			case events <- struct{}{}:
			case <-time.After(time.Millisecond):
			}
		}
	}

	pool.setLimit(4)
	settle(4)
	pool.away()
	pool.away()
	settle(6)
	pool.back()
	settle(5)
	pool.back()
	settle(4)
	pool.setLimit(2)
	settle(2)
	for range 20 { // more events do not grow it
		events <- struct{}{}
	}
	if n := running.Load(); n != 2 {
		t.Fatalf("%d workers running after 20 events at limit 2, want 2", n)
	}
	pool.setLimit(0) // a limit below one still keeps one worker
	settle(1)
	pool.setLimit(8)
	settle(8)
}

// TestCreditWidenedByDelayedRetries: events waiting out a retry delay
// widen the read-ahead credit, by at most the credit itself.
func TestCreditWidenedByDelayedRetries(t *testing.T) {
	p := &Pipeline{maxEvents: 1, limiter: flow.NewAIMD(flow.Config{Initial: 4, Min: 4, Max: 4})}
	for _, c := range []struct{ delayed, want int64 }{{0, 8}, {3, 11}, {8, 16}, {100, 16}} {
		p.delayed.Store(c.delayed)
		if got := p.creditNow(); int64(got) != c.want {
			t.Errorf("%d delayed: credit %d, want %d", c.delayed, got, c.want)
		}
	}
}
