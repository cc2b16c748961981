package flow

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/runtime/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The Prometheus recorder the engine hands to NewAIMD.
var _ Recorder = (*metrics.Limiter)(nil)

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingRecorder is a Recorder that remembers what it was told.
type countingRecorder struct {
	mu       sync.Mutex
	limits   []int
	inFlight int
	waiting  int
	cuts     int
}

func (r *countingRecorder) SetLimit(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.limits = append(r.limits, n)
}

func (r *countingRecorder) SetInFlight(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight = n
}

func (r *countingRecorder) SetWaiting(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiting = n
}

func (r *countingRecorder) Waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.waiting
}

func (r *countingRecorder) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cuts++
}

func (r *countingRecorder) Cuts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cuts
}

// tryAcquire takes a slot only if one is free now: Acquire grants a free
// slot even with a done ctx and never blocks on one.
func tryAcquire(l *AIMD) (func(Outcome), bool) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rel, err := l.Acquire(ctx)
	return rel, err == nil
}

func mustAcquire(t *testing.T, l *AIMD, n int) []func(Outcome) {
	t.Helper()
	rels := make([]func(Outcome), n)
	for i := range rels {
		rel, ok := tryAcquire(l)
		if !ok {
			t.Fatalf("slot %d of %d not free (limit %d, in flight %d)", i, n, l.Limit(), l.InFlight())
		}
		rels[i] = rel
	}
	return rels
}

func TestConfigDefaultsAndClamps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name              string
		cfg               Config
		initial, min, max int
		backoff           float64
	}{
		{"zero", Config{}, DefaultInitial, 1, DefaultMax, DefaultBackoff},
		{"initial clamped up", Config{Initial: 1, Min: 4, Max: 10}, 4, 4, 10, DefaultBackoff},
		{"initial clamped down", Config{Initial: 50, Min: 1, Max: 10}, 10, 1, 10, DefaultBackoff},
		{"max below min", Config{Initial: 3, Min: 5, Max: 2}, 5, 5, 5, DefaultBackoff},
		{"backoff low", Config{Backoff: 0.1}, DefaultInitial, 1, DefaultMax, 0.5},
		{"backoff high", Config{Backoff: 0.99}, DefaultInitial, 1, DefaultMax, 0.9},
		{"negative min", Config{Min: -3, Initial: 2, Max: 4, Backoff: 0.8}, 2, 1, 4, 0.8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := NewAIMD(tt.cfg)
			if l.Limit() != tt.initial || l.min != tt.min || l.max != tt.max || l.backoff != tt.backoff {
				t.Fatalf("got limit=%d min=%d max=%d backoff=%v, want %d %d %d %v",
					l.Limit(), l.min, l.max, l.backoff, tt.initial, tt.min, tt.max, tt.backoff)
			}
		})
	}
}

func TestOneCutPerOverloadBurst(t *testing.T) {
	t.Parallel()
	rec := &countingRecorder{}
	l := NewAIMD(Config{Initial: 10, Min: 1, Max: 100, Backoff: 0.7, Recorder: rec})
	burst := mustAcquire(t, l, 10)
	for _, rel := range burst {
		rel(Overload) // ten 429s answering the same overload
	}
	if got := l.Limit(); got != 7 {
		t.Fatalf("limit after one burst = %d, want 7", got)
	}
	if rec.Cuts() != 1 {
		t.Fatalf("cuts = %d, want 1", rec.Cuts())
	}
	// A call started after the cut that still overloads cuts again.
	rel := mustAcquire(t, l, 1)[0]
	rel(Overload)
	if got := l.Limit(); got != 4 {
		t.Fatalf("limit after second overload = %d, want 4", got)
	}
	if rec.Cuts() != 2 {
		t.Fatalf("cuts = %d, want 2", rec.Cuts())
	}
	if want := []int{10, 7, 4}; !slices.Equal(rec.limits, want) {
		t.Fatalf("recorded limits %v, want %v", rec.limits, want)
	}
	if rec.inFlight != 0 {
		t.Fatalf("recorded in-flight %d, want 0", rec.inFlight)
	}
}

func TestOldOverloadAfterCutIgnored(t *testing.T) {
	t.Parallel()
	l := NewAIMD(Config{Initial: 10, Min: 1, Max: 100, Backoff: 0.5})
	old := mustAcquire(t, l, 10)
	old[0](Overload) // cut: 10 → 5, in flight 9
	if l.Limit() != 5 {
		t.Fatalf("limit = %d", l.Limit())
	}
	// Drain below the new limit, start a fresh call, then let a stale
	// overload arrive: only the fresh call's epoch may cut.
	for _, rel := range old[1:6] {
		rel(Success)
	}
	fresh := mustAcquire(t, l, 1)[0]
	for _, rel := range old[6:] {
		rel(Overload)
	}
	if l.Limit() != 5 {
		t.Fatalf("stale outcomes changed the limit to %d", l.Limit())
	}
	fresh(Overload)
	if l.Limit() != 2 {
		t.Fatalf("fresh overload: limit = %d, want 2", l.Limit())
	}
}

func TestRespectsMinAndMax(t *testing.T) {
	t.Parallel()
	l := NewAIMD(Config{Initial: 6, Min: 3, Max: 9, Backoff: 0.5})
	for range 20 {
		mustAcquire(t, l, 1)[0](Overload)
		if l.Limit() < 3 {
			t.Fatalf("limit %d below min", l.Limit())
		}
	}
	if l.Limit() != 3 {
		t.Fatalf("limit = %d, want min 3", l.Limit())
	}
	// Fully loaded successes grow the limit up to Max and no further.
	rels := mustAcquire(t, l, l.Limit())
	for range 200 {
		rels[0](Success)
		rels = rels[1:]
		for l.InFlight() < l.Limit() {
			rels = append(rels, mustAcquire(t, l, 1)[0])
		}
		if l.Limit() > 9 {
			t.Fatalf("limit %d above max", l.Limit())
		}
	}
	for _, rel := range rels {
		rel(Ignore)
	}
	if l.Limit() != 9 {
		t.Fatalf("limit = %d, want max 9", l.Limit())
	}
}

func TestAdditiveIncreasePerWindow(t *testing.T) {
	t.Parallel()
	l := NewAIMD(Config{Initial: 10, Max: 100, NoSlowStart: true})
	// One full window (limit successes at full load) adds exactly one: keep
	// the limiter full, replacing each completed call by a new one.
	rels := mustAcquire(t, l, 10)
	for i := range 10 {
		if l.Limit() != 10 {
			t.Fatalf("limit grew to %d after %d successes", l.Limit(), i)
		}
		rels[0](Success)
		rels = append(rels[1:], mustAcquire(t, l, 1)[0])
	}
	if l.Limit() != 11 {
		t.Fatalf("after one window limit = %d, want 11", l.Limit())
	}
	for _, rel := range rels {
		rel(Ignore)
	}
	// Ignore outcomes neither grow nor cut.
	for _, rel := range mustAcquire(t, l, 11) {
		rel(Ignore)
	}
	if l.Limit() != 11 {
		t.Fatalf("after ignores limit = %d, want 11", l.Limit())
	}
}

func TestNoGrowthWhenIdle(t *testing.T) {
	t.Parallel()
	l := NewAIMD(Config{Initial: 10, Max: 100})
	// Four in flight out of ten is below half: never counts as busy.
	for range 1000 {
		rels := mustAcquire(t, l, 4)
		for _, rel := range rels {
			rel(Success)
		}
	}
	if l.Limit() != 10 {
		t.Fatalf("idle limiter grew to %d", l.Limit())
	}
}

// TestWaitingCallersUseTheLimit: a caller waiting for a slot counts as the
// limit being used up, for growth and for the Recorder.
func TestWaitingCallersUseTheLimit(t *testing.T) {
	t.Parallel()
	rec := &countingRecorder{}
	l := NewAIMD(Config{Initial: 4, Max: 100, Recorder: rec, NoSlowStart: true})
	rels := mustAcquire(t, l, 4)
	granted := make(chan func(Outcome))
	go func() {
		rel, err := l.Acquire(context.Background())
		if err != nil {
			t.Errorf("waiter: %v", err)
			close(granted)
			return
		}
		granted <- rel
	}()
	waitFor(t, "waiter to queue", func() bool { return l.Waiting() == 1 })
	if got := rec.Waiting(); got != 1 {
		t.Fatalf("recorded waiting = %d, want 1", got)
	}
	// Each release hands the slot to the waiter (the first) or finds
	// nobody waiting with three of four slots busy; all four calls ran
	// while the limit was used up, so they make a window.
	for i, rel := range rels {
		rel(Success)
		if i == 0 {
			rels[0] = <-granted
			if rels[0] == nil {
				t.FailNow()
			}
		}
	}
	if got := rec.Waiting(); got != 0 {
		t.Fatalf("recorded waiting after the grant = %d, want 0", got)
	}
	if got := l.Limit(); got != 5 {
		t.Fatalf("limit after four calls that ran with the limit used up = %d, want 5", got)
	}
	rels[0](Ignore)
}

func TestLatencyGuard(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := NewAIMD(Config{Initial: 10, Backoff: 0.5, LatencyThreshold: 100 * time.Millisecond, Now: clock.Now})
	fast := mustAcquire(t, l, 1)[0]
	clock.Advance(100 * time.Millisecond) // exactly at the threshold: fine
	fast(Success)
	if l.Limit() != 10 {
		t.Fatalf("limit = %d after a success at the threshold", l.Limit())
	}
	slow := mustAcquire(t, l, 1)[0]
	clock.Advance(101 * time.Millisecond)
	slow(Success)
	if l.Limit() != 5 {
		t.Fatalf("slow success: limit = %d, want 5", l.Limit())
	}
}

func TestLoweredLimitBlocksNewCalls(t *testing.T) {
	t.Parallel()
	l := NewAIMD(Config{Initial: 10, Backoff: 0.5})
	rels := mustAcquire(t, l, 10)
	rels[0](Overload) // limit 5, 9 still in flight and not cancelled
	if l.InFlight() != 9 || l.Limit() != 5 {
		t.Fatalf("in flight %d limit %d", l.InFlight(), l.Limit())
	}
	for i := 1; i <= 4; i++ {
		if _, ok := tryAcquire(l); ok {
			t.Fatalf("acquired with %d in flight over limit 5", l.InFlight())
		}
		rels[i](Success)
	}
	// 5 in flight: still full.
	if _, ok := tryAcquire(l); ok {
		t.Fatal("acquired at in flight == limit")
	}
	rels[5](Success)
	rel, ok := tryAcquire(l)
	if !ok {
		t.Fatal("no slot with 4 in flight under limit 5")
	}
	rel(Ignore)
	for _, rel := range rels[6:] {
		rel(Ignore)
	}
	if l.InFlight() != 0 {
		t.Fatalf("in flight %d", l.InFlight())
	}
}

func TestDoubleReleasePanics(t *testing.T) {
	t.Parallel()
	l := NewAIMD(Config{Initial: 2})
	rel := mustAcquire(t, l, 1)[0]
	rel(Success)
	defer func() {
		if recover() == nil {
			t.Fatal("second release did not panic")
		}
		if l.InFlight() != 0 {
			t.Fatalf("in flight %d after double release", l.InFlight())
		}
	}()
	rel(Success)
}

// waitFor polls cond; the deadline only prevents a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAcquireFIFO(t *testing.T) {
	t.Parallel()
	l := NewAIMD(Config{Initial: 1, Min: 1, Max: 1})
	hold := mustAcquire(t, l, 1)[0]
	const n = 6
	order := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			rel, err := l.Acquire(context.Background())
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			order <- i
			rel(Ignore)
		})
		waitFor(t, "waiter to queue", func() bool { return l.Waiting() == i+1 })
	}
	hold(Ignore)
	wg.Wait()
	close(order)
	want := 0
	for got := range order {
		if got != want {
			t.Fatalf("waiter %d served before %d", got, want)
		}
		want++
	}
	if want != n {
		t.Fatalf("served %d of %d", want, n)
	}
}

func TestAcquireHonoursContext(t *testing.T) {
	t.Parallel()
	l := NewAIMD(Config{Initial: 1, Min: 1, Max: 1})
	hold := mustAcquire(t, l, 1)[0]

	// Already cancelled and no free slot: immediate error, nothing queued.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if l.Waiting() != 0 {
		t.Fatalf("waiting = %d", l.Waiting())
	}

	// Cancelled while blocked.
	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := l.Acquire(ctx)
		errc <- err
	}()
	waitFor(t, "waiter to queue", func() bool { return l.Waiting() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if l.Waiting() != 0 || l.InFlight() != 1 {
		t.Fatalf("waiting %d in flight %d", l.Waiting(), l.InFlight())
	}

	// Deadline while blocked.
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer dcancel()
	if _, err := l.Acquire(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}

	// The slot was not leaked by the cancelled waiters.
	hold(Ignore)
	rel, ok := tryAcquire(l)
	if !ok {
		t.Fatal("slot leaked")
	}
	rel(Ignore)
}

// TestCancelRaceKeepsAccounting cancels many blocked waiters while slots are
// being released, so that some are granted a slot just as they give up.
func TestCancelRaceKeepsAccounting(t *testing.T) {
	t.Parallel()
	l := NewAIMD(Config{Initial: 3, Min: 3, Max: 3})
	var wg sync.WaitGroup
	var got atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 300 {
				ctx, cancel := context.WithCancel(context.Background())
				if rng.IntN(2) == 0 {
					go cancel()
				}
				rel, err := l.Acquire(ctx)
				if err == nil {
					if n := l.InFlight(); n > 3 {
						t.Errorf("in flight %d over limit 3", n)
					}
					got.Add(1)
					rel(Ignore)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	if l.InFlight() != 0 || l.Waiting() != 0 {
		t.Fatalf("in flight %d waiting %d", l.InFlight(), l.Waiting())
	}
	if got.Load() == 0 {
		t.Fatal("no acquisition succeeded")
	}
}

func TestPause(t *testing.T) {
	t.Parallel()
	l := NewAIMD(Config{Initial: 4})
	l.Pause(time.Now().Add(-time.Second)) // already over: no effect
	inflight := mustAcquire(t, l, 1)[0]
	until := time.Now().Add(50 * time.Millisecond)
	l.Pause(until)
	l.Pause(until.Add(-40 * time.Millisecond)) // earlier: ignored

	if _, ok := tryAcquire(l); ok {
		t.Fatal("acquired during a pause")
	}
	// A blocked waiter is woken by the pause ending, with no other event.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rel, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if now := time.Now(); now.Before(until) {
		t.Fatalf("granted %v before the pause ended", until.Sub(now))
	}
	rel(Ignore)
	inflight(Success) // in-flight calls were not disturbed
	if l.InFlight() != 0 {
		t.Fatalf("in flight %d", l.InFlight())
	}
	// Pause extension while a waiter is blocked.
	until = time.Now().Add(20 * time.Millisecond)
	l.Pause(until)
	errc := make(chan error, 1)
	go func() {
		rel, err := l.Acquire(ctx)
		if err == nil {
			rel(Ignore)
		}
		errc <- err
	}()
	waitFor(t, "waiter to queue", func() bool { return l.Waiting() == 1 })
	until = until.Add(30 * time.Millisecond)
	l.Pause(until)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if now := time.Now(); now.Before(until) {
		t.Fatalf("granted %v before the extended pause ended", until.Sub(now))
	}
}

func TestRegistrySharesLimiters(t *testing.T) {
	t.Parallel()
	r := NewRegistry()
	a := r.For("http://f/", Config{Initial: 5})
	b := r.For("http://f/", Config{Initial: 50})
	c := r.For("http://g/", Config{Initial: 7})
	if a != b {
		t.Fatal("same key gave different limiters")
	}
	if a == c {
		t.Fatal("different keys share a limiter")
	}
	if a.Limit() != 5 || c.Limit() != 7 {
		t.Fatalf("limits %d %d: first config must win", a.Limit(), c.Limit())
	}
	var wg sync.WaitGroup
	got := make([]*AIMD, 16)
	for i := range got {
		wg.Go(func() { got[i] = r.For("http://h/", Config{Initial: i + 1}) })
	}
	wg.Wait()
	for _, l := range got {
		if l != got[0] {
			t.Fatal("concurrent For created two limiters")
		}
	}
}
