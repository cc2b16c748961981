package flow

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// driver keeps a limiter full against a target whose window duration (the
// time for a limit's worth of calls) is chosen by the test, on a fake clock.
type driver struct {
	t     *testing.T
	l     *AIMD
	clock *fakeClock
	rels  []func(Outcome) // oldest first
}

func newDriver(t *testing.T, cfg Config) *driver {
	clock := newFakeClock()
	cfg.Now = clock.Now
	return &driver{t: t, l: NewAIMD(cfg), clock: clock}
}

func (d *driver) fill() {
	for d.l.InFlight() < d.l.Limit() {
		d.rels = append(d.rels, mustAcquire(d.t, d.l, 1)[0])
	}
}

// complete finishes the n oldest calls one by one, each after each of fake
// time, starting a new call after each so the limiter stays full.
func (d *driver) complete(n int, each time.Duration, o Outcome) {
	for range n {
		d.fill()
		d.clock.Advance(each)
		d.rels[0](o)
		d.rels = d.rels[1:]
	}
	d.fill()
}

// window completes one window (a limit's worth of successes) taking took,
// and returns the limit after it.
func (d *driver) window(took time.Duration) int {
	n := d.l.Limit()
	d.complete(n, took/time.Duration(n), Success)
	return d.l.Limit()
}

// drain ends every call without a capacity signal.
func (d *driver) drain() {
	for _, rel := range d.rels {
		rel(Ignore)
	}
	d.rels = nil
}

const flat = 10 * time.Millisecond

func TestCutToInFlightAfterGrowth(t *testing.T) {
	t.Parallel()
	rec := &countingRecorder{}
	d := newDriver(t, Config{Initial: 20, Max: 100, Backoff: 0.7, Recorder: rec, NoSlowStart: true})
	if got := d.window(flat); got != 21 {
		t.Fatalf("limit after a window = %d, want 21", got)
	}
	// The limit grew into an overload with 20 other calls in flight: the
	// target takes about 20, so the cut sits just below: 0.9·20 = 18, not
	// Backoff·21 = 14.
	d.complete(1, time.Millisecond, Overload)
	if got := d.l.Limit(); got != 18 {
		t.Fatalf("limit after the probe's overload = %d, want 18", got)
	}
	// The overload persists with no growth since: the target lost
	// capacity, and Backoff applies.
	d.drain()
	d.fill()
	d.complete(1, time.Millisecond, Overload)
	if got := d.l.Limit(); got != 12 {
		t.Fatalf("limit after a persistent overload = %d, want 12 (18·0.7)", got)
	}
	if rec.Cuts() != 2 {
		t.Fatalf("cuts = %d, want 2", rec.Cuts())
	}
	d.drain()
}

func TestProbeCutBoundedByBackoff(t *testing.T) {
	t.Parallel()
	d := newDriver(t, Config{Initial: 10, Max: 100, Backoff: 0.7, NoSlowStart: true})
	d.window(flat) // 11, grown
	d.drain()
	// Refused with one other call in flight: the target is shared or
	// throttled; the cut goes no further than Backoff.
	calls := mustAcquire(t, d.l, 2)
	calls[0](Overload)
	calls[1](Ignore)
	if got := d.l.Limit(); got != 7 {
		t.Fatalf("limit = %d, want 7 (11·0.7)", got)
	}
}

func TestPlateauThenProbeThenAccelerate(t *testing.T) {
	t.Parallel()
	d := newDriver(t, Config{Initial: 20, Max: 1000, Backoff: 0.7, NoSlowStart: true})
	d.window(flat)
	d.complete(1, time.Millisecond, Overload) // wmax 20, limit 18
	d.drain()
	d.fill()
	var got []int
	for range 12 {
		got = append(got, d.window(flat))
	}
	// Back to 20 by one per window; three windows at 20 before probing
	// 21; past 20 the target has grown, so the step doubles: 1, 2, then
	// capped at an eighth of the limit.
	want := []int{19, 20, 20, 20, 20, 21, 22, 24, 27, 30, 33, 37}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("limits per window %v, want %v", got, want)
		}
	}
	d.drain()
}

// saturated is a target that serves at most perMs calls per millisecond,
// each taking at least flat: past the knee (flat·perMs calls in flight)
// more calls only queue, and a window takes limit/perMs.
func saturated(perMs float64) func(limit int) time.Duration {
	return func(limit int) time.Duration {
		return max(flat, time.Duration(float64(limit)/perMs*float64(time.Millisecond)))
	}
}

func TestGrowthStopsWhereThroughputStops(t *testing.T) {
	t.Parallel()
	took := saturated(4) // knee at 40 in flight
	for _, slowStart := range []bool{true, false} {
		d := newDriver(t, Config{Initial: 8, Max: 500, NoSlowStart: !slowStart})
		var limits []int
		for range 400 {
			limits = append(limits, d.window(took(d.l.Limit())))
		}
		got := d.l.Limit()
		// Slow start doubles 8 → 64 and measures a slow window there;
		// after it, and all along without it, past the knee a slot adds
		// no throughput: the limit must stop near it, so that each slot
		// still delivers ≥ 0.8 of a call per flat.
		after := limits
		if slowStart {
			// Each new limit's first window is not timed; two slow ones
			// in a row at 64 end slow start.
			if want := []int{8, 16, 16, 32, 32, 64, 64, 64, 32}; !slices.Equal(limits[:9], want) {
				t.Fatalf("slow start: limits per window %v, want %v first", limits[:10], want)
			}
			after = limits[9:]
		}
		peak := slices.Max(after)
		t.Logf("slow start %v: limit %d, peak %d after slow start", slowStart, got, peak)
		if got < 40 || peak > 50 {
			t.Fatalf("slow start %v: limit %d (peak %d), want it to stop in [40, 50] for a knee at 40", slowStart, got, peak)
		}
		d.drain()
	}

	// With the check off, the limit climbs on successes alone.
	d := newDriver(t, Config{Initial: 8, Max: 500, GrowthTolerance: -1})
	for range 400 {
		d.window(took(d.l.Limit()))
	}
	if got := d.l.Limit(); got < 400 {
		t.Fatalf("without the check the limit reached only %d", got)
	}
	d.drain()
}

func TestGivesBackWhenTheKneeMoves(t *testing.T) {
	t.Parallel()
	d := newDriver(t, Config{Initial: 8, Max: 500})
	for range 200 {
		d.window(saturated(4)(d.l.Limit()))
	}
	before := d.l.Limit()
	// The machine got busier: half the throughput, a knee at 20.
	for range 200 {
		d.window(saturated(2)(d.l.Limit()))
	}
	got := d.l.Limit()
	t.Logf("limit %d before, %d after the knee moved to 20", before, got)
	// It gives slots back down to half of the last fine limit (22), where
	// it relearns its references from windows that already queue a
	// little, so it settles somewhat above the new knee.
	if got < 20 || got > 36 {
		t.Fatalf("limit %d, want it back in [20, 36] for a knee at 20", got)
	}
	d.drain()
}

func TestSlowerTargetKeepsHalfItsLimit(t *testing.T) {
	t.Parallel()
	d := newDriver(t, Config{Initial: 8, Max: 60})
	for d.l.Limit() < 60 {
		d.window(flat)
	}
	d.window(flat) // the first window at a new limit is not timed
	d.window(flat) // a fine window at 60
	// Every call now takes four times as long, at any limit: that is not
	// queueing, but it looks like it against the old references.
	low, back := 60, 0
	for w := range 300 {
		got := d.window(4 * flat)
		low = min(low, got)
		if low < 60 && got == 60 && back == 0 {
			back = w
		}
	}
	t.Logf("lowest %d, back at 60 after %d windows", low, back)
	if low < 30 {
		t.Fatalf("limit fell to %d, below half of 60", low)
	}
	// Stuck at that floor, it relearns its references and grows back.
	if back == 0 || d.l.Limit() != 60 {
		t.Fatalf("limit %d after 300 windows, want it back at 60", d.l.Limit())
	}
	d.drain()
}

func TestFixedLimitIgnoresWindows(t *testing.T) {
	t.Parallel()
	d := newDriver(t, Config{Initial: 32, Min: 32, Max: 32})
	for i := range 100 {
		if got := d.window(time.Duration(1+i%7) * flat); got != 32 {
			t.Fatalf("fixed limit moved to %d", got)
		}
	}
	d.drain()
}

func TestNoisyWindowsDoNotRatchetPastTheKnee(t *testing.T) {
	t.Parallel()
	took := saturated(4) // knee at 40 in flight
	rng := rand.New(rand.NewPCG(11, 11))
	// Slow start's one overshoot is TestGrowthStopsWhereThroughputStops's.
	d := newDriver(t, Config{Initial: 8, Max: 500, NoSlowStart: true})
	peak := 0
	for range 3000 {
		// ±20% jitter on every window.
		noise := 0.8 + 0.4*rng.Float64()
		peak = max(peak, d.window(time.Duration(float64(took(d.l.Limit()))*noise)))
	}
	t.Logf("limit %d, peak %d", d.l.Limit(), peak)
	if peak > 52 {
		t.Fatalf("peak limit %d: noise ratcheted the limit past the knee at 40", peak)
	}
	d.drain()
}

func TestSlowStartDoublesUntilOverload(t *testing.T) {
	t.Parallel()
	rec := &countingRecorder{}
	d := newDriver(t, Config{Initial: 8, Max: 1000, Recorder: rec})
	var got []int
	for range 8 {
		got = append(got, d.window(flat))
	}
	// The first window at each limit is not timed; the second doubles it.
	if want := []int{8, 16, 16, 32, 32, 64, 64, 128}; !slices.Equal(got, want) {
		t.Fatalf("limits per window %v, want %v", got, want)
	}
	// The target refuses with 127 others in flight: the cut sits just
	// below what fitted, and growth is additive from there.
	d.complete(1, time.Millisecond, Overload)
	if got := d.l.Limit(); got != 114 {
		t.Fatalf("limit after the overload = %d, want 114 (0.9·127)", got)
	}
	d.drain()
	d.fill()
	if got := []int{d.window(flat), d.window(flat)}; !slices.Equal(got, []int{115, 116}) {
		t.Fatalf("limits per window after the cut %v, want [115 116]: slow start is over", got)
	}
	if rec.Cuts() != 1 {
		t.Fatalf("cuts = %d, want 1", rec.Cuts())
	}
	d.drain()
}

func TestSlowStartStopsAtMax(t *testing.T) {
	t.Parallel()
	d := newDriver(t, Config{Initial: 8, Max: 50})
	var got []int
	for range 8 {
		got = append(got, d.window(flat))
	}
	if want := []int{8, 16, 16, 32, 32, 50, 50, 50}; !slices.Equal(got, want) {
		t.Fatalf("limits per window %v, want %v", got, want)
	}
	// A fine window at Max ended slow start: a slow one now is judged by
	// the throughput check, not sent back to 32.
	if got := d.window(2 * flat); got != 50 {
		t.Fatalf("limit %d after a slow window at Max, want 50", got)
	}
	d.drain()
}

func TestChangedSignalsLimitChanges(t *testing.T) {
	t.Parallel()
	d := newDriver(t, Config{Initial: 4, Max: 100, NoSlowStart: true})
	changed := d.l.Changed()
	d.fill()
	d.complete(3, flat, Success) // three of a window of four: no change
	select {
	case <-changed:
		t.Fatal("Changed closed before the limit changed")
	default:
	}
	d.complete(1, flat, Success)
	select {
	case <-changed:
	default:
		t.Fatalf("Changed not closed after the limit went to %d", d.l.Limit())
	}
	// A new channel for the next change: the cut.
	next := d.l.Changed()
	if next == changed {
		t.Fatal("Changed returned the closed channel again")
	}
	d.complete(1, time.Millisecond, Overload)
	select {
	case <-next:
	default:
		t.Fatal("Changed not closed after a cut")
	}
	d.drain()
}

func TestSlowStartEndsOnSlowWindow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		slow  time.Duration // the window at 64
		after int           // the limit once that window ended
	}{
		// 1.2× as long at twice the limit: the doubling still paid.
		{"mildly slow", flat * 12 / 10, 64},
		// 1.6× as long: most of the new slots queue; back to 32.
		{"far slower", flat * 16 / 10, 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDriver(t, Config{Initial: 8, Max: 1000})
			for _, want := range []int{8, 16, 16, 32, 32, 64, 64} {
				if got := d.window(flat); got != want {
					t.Fatalf("slow start: limit %d, want %d", got, want)
				}
			}
			// One slow window holds the limit; the second ends slow start.
			if got := d.window(tc.slow); got != 64 {
				t.Fatalf("after one window of %v at 64: limit %d, want 64 held", tc.slow, got)
			}
			if got := d.window(tc.slow); got != tc.after {
				t.Fatalf("after two windows of %v at 64: limit %d, want %d", tc.slow, got, tc.after)
			}
			// Additive from there: the next window adds at most one.
			if got := d.window(flat); got > tc.after+1 {
				t.Fatalf("limit %d after the next window: still doubling", got)
			}
			d.drain()
		})
	}
}

func TestSlowStartRidesOutOneSlowWindow(t *testing.T) {
	t.Parallel()
	d := newDriver(t, Config{Initial: 8, Max: 1000})
	for range 4 {
		d.window(flat) // 8, 16, 16, 32
	}
	// A hiccup: one window at 32 twice as long, then fine again.
	var got []int
	for _, took := range []time.Duration{2 * flat, flat, flat, flat} {
		got = append(got, d.window(took))
	}
	if want := []int{32, 64, 64, 128}; !slices.Equal(got, want) {
		t.Fatalf("limits per window %v, want %v: one slow window must not end slow start", got, want)
	}
	d.drain()
}
