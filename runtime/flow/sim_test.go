package flow

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// simTarget is a deterministic discrete-time model of a function with
// capacity K: a call started while K calls are already being served is
// answered at once with an overload (or, with slowInstead, is served but
// slowly). Served calls take 1–3 ticks.
type simTarget struct {
	capacity    int
	slowInstead bool
	serving     int
	// served and refused count the calls answered.
	served, refused int
}

type simCall struct {
	release func(Outcome)
	end     int
	served  bool
	outcome Outcome
}

// simRun drives l for ticks steps with demand callers that always have work
// (or fewer, to model a lightly loaded pipeline). capacity(tick) gives K. It
// returns the limit observed at the end of every tick.
func simRun(l *AIMD, clock *fakeClock, tgt *simTarget, rng *rand.Rand, ticks, demand int, capacity func(int) int, calls *[]simCall) []int {
	limits := make([]int, 0, ticks)
	for tick := range ticks {
		clock.Advance(time.Millisecond)
		tgt.capacity = capacity(tick)
		keep := (*calls)[:0]
		for _, c := range *calls {
			if c.end > tick {
				keep = append(keep, c)
				continue
			}
			if c.served {
				tgt.serving--
			}
			c.release(c.outcome)
		}
		*calls = keep
		for len(*calls) < demand {
			rel, ok := tryAcquire(l)
			if !ok {
				break
			}
			c := simCall{release: rel, end: tick + 1 + rng.IntN(3), outcome: Success}
			switch {
			case tgt.serving < tgt.capacity:
				c.served = true
				tgt.serving++
				tgt.served++
			case tgt.slowInstead:
				c.served = true
				tgt.serving++
				c.end = tick + 20
			default:
				c.end = tick + 1
				c.outcome = Overload
				tgt.refused++
			}
			*calls = append(*calls, c)
		}
		limits = append(limits, l.Limit())
	}
	return limits
}

func mean(xs []int) float64 {
	sum := 0
	for _, x := range xs {
		sum += x
	}
	return float64(sum) / float64(len(xs))
}

func within(got float64, k int, tolerance float64) bool {
	return got >= float64(k)*(1-tolerance) && got <= float64(k)*(1+tolerance)
}

func TestSimulatedConvergence(t *testing.T) {
	t.Parallel()
	// After the first overload the limit moves between 0.9·K (the cut to
	// just below what fitted) and K+1 (the probe), resting at K, whatever
	// Backoff is; so its mean is within 10% of K and few calls are refused.
	// K=10 is coarse: 0.9·K rounds down to 8.
	for _, tc := range []struct {
		k         int
		backoff   float64
		initial   int
		tolerance float64
	}{
		{10, 0.7, 1, 0.15},
		{50, 0.7, 200, 0.10},
		{200, 0.7, 8, 0.10},
		{80, 0.9, 8, 0.10},
		{80, 0.5, 8, 0.10},
	} {
		t.Run(fmt.Sprintf("K=%d/backoff=%v/initial=%d", tc.k, tc.backoff, tc.initial), func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			rec := &countingRecorder{}
			l := NewAIMD(Config{Initial: tc.initial, Min: 1, Max: 1000, Backoff: tc.backoff, Now: clock.Now, Recorder: rec})
			var calls []simCall
			tgt := &simTarget{}
			limits := simRun(l, clock, tgt, rand.New(rand.NewPCG(1, uint64(tc.k))), 4000, 1<<30,
				func(int) int { return tc.k }, &calls)
			steady := limits[2000:]
			refused := float64(tgt.refused) / float64(tgt.served+tgt.refused)
			t.Logf("mean limit %.1f, cuts %d, refused %.2f%%", mean(steady), rec.Cuts(), 100*refused)
			if refused > 0.05 {
				t.Errorf("%.1f%% of calls refused, want at most 5%%", 100*refused)
			}
			if m := mean(steady); !within(m, tc.k, tc.tolerance) {
				t.Fatalf("mean limit %.1f not within %v of K=%d", m, tc.tolerance, tc.k)
			}
			for _, lim := range steady {
				if lim > tc.k+tc.k/4+1 {
					t.Fatalf("limit reached %d, far over K=%d", lim, tc.k)
				}
			}
			if rec.Cuts() == 0 {
				t.Fatal("never cut")
			}
		})
	}
}

func TestSimulatedCapacityChanges(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := NewAIMD(Config{Initial: 8, Min: 2, Max: 1000, Now: clock.Now})
	rng := rand.New(rand.NewPCG(7, 7))
	tgt := &simTarget{}
	var calls []simCall
	const phase = 3000
	capacity := func(tick int) int {
		switch {
		case tick < phase:
			return 100
		case tick < 2*phase:
			return 30 // the function lost capacity
		default:
			return 160 // and scaled out
		}
	}
	limits := simRun(l, clock, tgt, rng, 3*phase, 1<<30, capacity, &calls)
	for i, k := range []int{100, 30, 160} {
		steady := limits[i*phase+phase/2 : (i+1)*phase]
		t.Logf("phase %d: K=%d mean limit %.1f", i, k, mean(steady))
		if m := mean(steady); !within(m, k, 0.10) {
			t.Errorf("phase %d: mean limit %.1f not within 10%% of K=%d", i, m, k)
		}
	}
	// Backing off is fast: within a few dozen ticks of the drop the limit
	// is already near the new capacity.
	if got := limits[phase+50]; got > 30+30/4 {
		t.Errorf("50 ticks after K fell to 30 the limit is still %d", got)
	}
}

func TestSimulatedSlowTargetWithLatencyGuard(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	// A tick is 1ms; served calls take 1–3ms, slow ones 20ms.
	l := NewAIMD(Config{Initial: 8, Max: 1000, LatencyThreshold: 10 * time.Millisecond, Now: clock.Now})
	var calls []simCall
	limits := simRun(l, clock, &simTarget{slowInstead: true}, rand.New(rand.NewPCG(3, 3)), 4000, 1<<30,
		func(int) int { return 60 }, &calls)
	t.Logf("mean limit %.1f", mean(limits[2000:]))
	if m := mean(limits[2000:]); !within(m, 60, 0.25) {
		t.Fatalf("mean limit %.1f not within 25%% of K=60", m)
	}
}

func TestSimulatedIdleDoesNotGrow(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := NewAIMD(Config{Initial: 40, Max: 1000, Now: clock.Now})
	var calls []simCall
	// Only 15 callers ever have work: never half of the limit in flight.
	limits := simRun(l, clock, &simTarget{}, rand.New(rand.NewPCG(5, 5)), 2000, 15,
		func(int) int { return 1000 }, &calls)
	for i, lim := range limits {
		if lim != 40 {
			t.Fatalf("tick %d: idle limit changed to %d", i, lim)
		}
	}
}

// TestSimulatedDemandBoundsGrowth: callers that never need more than 15
// slots (a feeder slower than the target, a key-ordered pipeline with few
// ready keys) keep at least half of a larger limit busy, so its windows
// count; the throughput check is what stops the limit above the demand:
// beyond it a window (a limit's worth of calls) takes longer than at lower
// limits, because the extra slots stay empty. Without the check the limit
// runs to twice the demand.
func TestSimulatedDemandBoundsGrowth(t *testing.T) {
	t.Parallel()
	run := func(tolerance float64, slowStart bool) (last, top int) {
		clock := newFakeClock()
		l := NewAIMD(Config{Initial: 8, Max: 1000, GrowthTolerance: tolerance, Now: clock.Now, NoSlowStart: !slowStart})
		var calls []simCall
		limits := simRun(l, clock, &simTarget{}, rand.New(rand.NewPCG(6, 6)), 20000, 15,
			func(int) int { return 1000 }, &calls)
		for _, lim := range limits {
			top = max(top, lim)
		}
		return limits[len(limits)-1], top
	}
	for _, slowStart := range []bool{true, false} {
		if last, top := run(0, slowStart); last < 15 || top > 22 {
			t.Errorf("slow start %v: limit with 15 callers: %d at the end, %d at most; want 15–22 (under 1.5× the demand)", slowStart, last, top)
		}
	}
	// The last window that counts is the one at 30 (15 in flight is half
	// of it), so the limit ends one above twice the demand.
	if last, top := run(-1, false); last != 31 || top != 31 {
		t.Errorf("limit with 15 callers and no throughput check: %d at the end, %d at most; want 31", last, top)
	}
	// Slow start doubles only a limit that was used up: 8 → 16, never 32.
	if last, top := run(-1, true); last != 16 || top != 16 {
		t.Errorf("limit with 15 callers, slow start and no throughput check: %d at the end, %d at most; want 16", last, top)
	}
}

// TestConcurrentTarget exercises the limiter from real goroutines against a
// target with capacity K (for the race detector and leak check; scheduling
// makes the trajectory nondeterministic, so only invariants are asserted).
func TestConcurrentTarget(t *testing.T) {
	t.Parallel()
	const k, workers, calls = 12, 32, 300
	l := NewAIMD(Config{Initial: 4, Min: 2, Max: 40})
	var serving, peak atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range calls {
				rel, err := l.Acquire(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				n := serving.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				out := Success
				if n > k {
					out = Overload
				}
				runtime.Gosched()
				serving.Add(-1)
				rel(out)
				if lim := l.Limit(); lim < 2 || lim > 40 {
					t.Errorf("limit %d outside [2, 40]", lim)
				}
			}
		})
	}
	wg.Wait()
	if l.InFlight() != 0 || l.Waiting() != 0 {
		t.Fatalf("in flight %d waiting %d", l.InFlight(), l.Waiting())
	}
	if p := peak.Load(); p > 40 {
		t.Fatalf("target saw %d concurrent calls, over Max 40", p)
	}
}
