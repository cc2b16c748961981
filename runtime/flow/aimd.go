package flow

import (
	"context"
	"math/bits"
	"sync"
	"time"
)

// Defaults applied by NewAIMD to zero Config fields.
const (
	DefaultInitial         = 8
	DefaultMax             = 512
	DefaultBackoff         = 0.7
	DefaultGrowthTolerance = 1.1
)

// Tuning of the growth and cut rules; see AIMD for what each does.
const (
	// probeCut is where the first overload after growth cuts to, as a
	// fraction of the calls that fitted when the target refused.
	probeCut = 0.9
	// plateauWindows is how many windows the limit stays at the last point
	// that fitted before probing one above it.
	plateauWindows = 3
	// queueSlack is window growth too small to call queueing whatever the
	// ratio: below it, scheduling jitter of fast targets dominates.
	queueSlack = time.Millisecond
	// overFactor scales the tolerance's margin to where the limit is given
	// back: with tolerance 1.1, windows 50% slower than the reference.
	overFactor = 5
	// kneeWindows is how many windows in a row must be fast for the limit
	// to grow near where windows last slowed down.
	kneeWindows = 4
	// stuckWindows is how many mildly slow windows in a row give a slot
	// back, and how many slow windows in a row at the give-back floor make
	// the references be learnt again.
	stuckWindows = 8
)

// Bounds of Config.Backoff; values outside are clamped.
const (
	minBackoff = 0.5
	maxBackoff = 0.9
)

// Recorder receives the limiter's state for metrics. Methods are called with
// the limiter's lock held, so values arrive in order; they must be cheap and
// must not call back into the limiter. A nil Recorder records nothing.
type Recorder interface {
	// SetLimit reports the current limit (after every change, and once at
	// construction).
	SetLimit(int)
	// SetInFlight reports the number of acquired, unreleased slots.
	SetInFlight(int)
	// SetWaiting reports the number of blocked Acquire calls: demand the
	// limit (or a pause) holds back. Zero while in-flight is below the
	// limit says the callers, not the limiter, bound the calls.
	SetWaiting(int)
	// Cut counts one multiplicative decrease.
	Cut()
}

// Config configures an AIMD limiter. Zero fields take defaults.
type Config struct {
	// Initial is the starting limit (default DefaultInitial), clamped to
	// [Min, Max].
	Initial int
	// Min is the lowest limit (default and at least 1).
	Min int
	// Max is the highest limit (default DefaultMax; raised to Min if lower).
	Max int
	// Backoff is the factor applied to the limit on overload (default
	// DefaultBackoff, clamped to [0.5, 0.9]). A cut always lowers the limit
	// by at least one until Min.
	Backoff float64
	// LatencyThreshold, when positive, treats a success that took longer
	// than this as an overload signal: a guard for targets that slow down
	// instead of refusing.
	LatencyThreshold time.Duration
	// GrowthTolerance stops growth where throughput stops: the limit grows
	// only while a window (a limit's worth of calls) takes at most this
	// factor of the time windows took at up to four times lower limits,
	// that is while each slot still delivers nearly as many calls per
	// second as before (default DefaultGrowthTolerance; values in (0, 1.05)
	// are raised to 1.05; negative turns the check off). Windows much
	// slower than that give slots back one per window, but never below
	// half of the last limit whose windows were fine: a target that only
	// got slower (at any limit) loses at most half its limit, and only
	// until a few slow windows at that floor make the limiter learn its
	// references again.
	GrowthTolerance float64
	// NoSlowStart starts in additive increase: the limit grows by one per
	// window from Initial instead of doubling per window until the target
	// first refuses or windows first slow down. For targets whose capacity
	// Initial already approximates, and for tests of the later phases.
	NoSlowStart bool
	// Now is the clock (default time.Now); tests inject a fake one. It
	// measures latencies and decides when a Pause is over. Pauses end by
	// real timers, so a fake clock must follow real time for a pause to
	// end on its own.
	Now func() time.Time
	// Recorder receives limit, in-flight and cut updates; may be nil.
	Recorder Recorder
}

// AIMD is a Limiter whose limit follows the target's capacity with additive
// increase and multiplicative decrease (DESIGN §6). It is safe for
// concurrent use; one AIMD is shared by every pipeline calling the same
// function (see Registry).
//
// Windows are counted in calls, not time, so there is no period to tune:
//
//   - Window: a limit's worth of successful completions (one "round trip"
//     of the whole window, as TCP grows per RTT). A success counts only if,
//     when it completed, at least half the limit was in flight (an idle or
//     lightly loaded limiter does not grow a limit it never uses), and only
//     if the call started after the last cut. Half, not all: callers that
//     are themselves sized to the limit (a worker pool following it) only
//     grow after the limit did, so requiring every slot taken would pace
//     growth to their resizing and put that wait into the window durations
//     the throughput check compares. Demand steady between half the limit
//     and the limit is left to that check: windows slow down as the limit
//     outgrows the demand.
//   - Slow start: until the first overload or the first windows that show
//     queueing, the limit doubles after every window in which every slot
//     was taken, as TCP's congestion window does before its first loss. A
//     window is slow at over GrowthTolerance times the last fine one (at
//     the limit before the doubling); the first window at a new limit is
//     not timed. Two slow windows in a row end slow start: the limit stays
//     if they were only mildly slow (the doubling still paid) and goes back
//     to the limit before if they were far slower; growth continues as
//     below, with the slow limit as the knee. Without it a limit starting
//     at 8 took seconds to reach the 100–200 calls a 10 ms function on two
//     cores takes (one per window, and every window a call's duration),
//     and a short backlog was mostly processed on the ramp.
//   - Increase: after each window the limit grows, shaped like TCP CUBIC
//     around the last point that fitted (wmax, the calls in flight beside
//     the one the target refused): by one per window below wmax; at wmax
//     it waits plateauWindows windows before probing wmax+1, so the target
//     refuses rarely; above wmax (the target has grown) the step doubles
//     every window, up to an eighth of the limit. Before any overload the
//     limit grows by one per window.
//   - Throughput: growth is skipped while windows (the median of the last
//     three, smoothed) take over GrowthTolerance times as long as they did
//     at lower limits. A window is one pass of every slot, so its duration
//     is the time a slot needs per call, including any wait for work: when
//     it grows with the limit, calls are queueing somewhere (at the
//     target, on a saturated CPU, in the pipeline feeding the limiter) and
//     more of them in flight would add latency, not throughput. Windows
//     far slower (overFactor of the tolerance's margin) give one slot back
//     per window, stuckWindows mildly slow ones in a row give one back,
//     down to half of the last good limit at most (see GrowthTolerance).
//     Near the highest limit whose windows slowed down (the
//     knee), growth needs kneeWindows fast windows in a row, so that noise
//     does not ratchet the limit past it. Without this a target that
//     queues instead of refusing drives the limit to Max.
//   - Decrease: the first overload after the limit grew cuts it to probeCut
//     of wmax, since the target has just said how many calls it takes (but
//     never by more than Backoff would). An overload with no growth since
//     the last cut — the target lost capacity — multiplies the limit by
//     Backoff. Every cut starts a new epoch; overloads reported by calls
//     that started in an earlier epoch are ignored, because they describe
//     the load before the last cut. A burst of 429s answering one overload
//     thus costs a single cut, while an overload that persists after the
//     cut (seen by calls started under the lowered limit) cuts again.
//
// Lowering the limit does not cancel in-flight calls; new acquisitions wait
// until in-flight drops below the new limit.
type AIMD struct {
	min, max  int
	backoff   float64
	latency   time.Duration
	tolerance float64 // 0: throughput check off
	now       func() time.Time
	rec       Recorder

	mu       sync.Mutex
	limit    int
	inFlight int
	// successes counts qualifying successes in the current window, which
	// started at windowStart. timed says whether the window's duration
	// means anything: not for the first window after construction or a
	// cut, which include waiting for the first calls or for calls of the
	// old epoch to drain. Idle spells within a window count: a limiter
	// that is not kept full (its feeder cannot keep up) delivers no more
	// by growing.
	successes   int
	windowStart time.Time
	timed       bool
	// wmax is the last number of calls that fitted when the target refused
	// (0 before any overload); grown says whether the limit grew since the
	// last cut; plateau counts windows spent at wmax and step is the next
	// increase above it.
	wmax    int
	grown   bool
	plateau int
	step    int
	// recent is the smoothed duration of the last windows; byLimit the
	// smoothed window duration per power-of-two limit band, the reference
	// the throughput check compares recent with.
	recent  time.Duration
	byLimit [bits.UintSize + 1]band
	// last3 holds the last timed window durations, windows counts them.
	last3   [3]time.Duration
	windows int
	// okLimit is the limit of the last window that did not queue; knee
	// the highest limit whose windows did (0: none, or left behind);
	// freeRun counts windows in a row that did not.
	okLimit int
	knee    int
	freeRun int
	// stuck counts slow windows in a row.
	stuck int
	// slowStart says the limit still doubles per window (see AIMD);
	// ssRef is the last fine window's duration, at this limit or the one
	// before the last doubling, ssPrev. full says every slot was taken at some
	// moment of the current window.
	slowStart bool
	full      bool
	ssSlow    int // slow windows in a row in slow start
	ssRef     time.Duration
	ssPrev    int
	// changed is closed, and dropped, when the limit changes (see Changed).
	changed chan struct{}
	// epoch is incremented by every cut; slots remember the epoch they were
	// granted in.
	epoch       uint64
	pausedUntil time.Time
	pauseTimer  *time.Timer
	// waiters are blocked Acquire calls in arrival order (FIFO).
	waiters []*waiter
}

var _ Limiter = (*AIMD)(nil)

// waiter is one blocked Acquire. Fields other than ready are guarded by
// AIMD.mu.
type waiter struct {
	ready   chan struct{} // closed when the slot is granted
	granted bool
	slot    slot
}

// band is the smoothed window duration measured while the limit was in one
// power-of-two range.
type band struct {
	took time.Duration // zero: never measured
}

// slot records what release needs to know about an acquisition.
type slot struct {
	epoch uint64
	start time.Time
	// beside is the number of other calls in flight when this one was
	// granted.
	beside int
}

// NewAIMD returns a limiter starting at cfg.Initial.
func NewAIMD(cfg Config) *AIMD {
	a := &AIMD{
		min:     max(cfg.Min, 1),
		max:     cfg.Max,
		backoff: cfg.Backoff,
		latency: cfg.LatencyThreshold,
		now:     cfg.Now,
		rec:     cfg.Recorder,
	}
	if a.max <= 0 {
		a.max = DefaultMax
	}
	a.max = max(a.max, a.min)
	initial := cfg.Initial
	if initial <= 0 {
		initial = DefaultInitial
	}
	a.limit = min(max(initial, a.min), a.max)
	a.slowStart = !cfg.NoSlowStart && a.min < a.max // a fixed limit has nothing to find
	if a.backoff == 0 {
		a.backoff = DefaultBackoff
	}
	a.backoff = min(max(a.backoff, minBackoff), maxBackoff)
	switch t := cfg.GrowthTolerance; {
	case t == 0:
		a.tolerance = DefaultGrowthTolerance
	case t > 0:
		// Below ~1.05 ordinary jitter would stop growth for good.
		a.tolerance = max(t, 1.05)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.rec != nil {
		a.rec.SetLimit(a.limit)
		a.rec.SetInFlight(0)
		a.rec.SetWaiting(0)
	}
	return a
}

// Acquire blocks until a slot is free, or ctx is done (ctx.Err()). Waiters
// are served first come, first served. A slot that is free at once is
// granted even if ctx is already done; a blocked Acquire that is cancelled
// never holds a slot. The returned release must be called exactly once;
// calling it twice panics, since double counting would corrupt the limit.
func (a *AIMD) Acquire(ctx context.Context) (release func(Outcome), err error) {
	a.mu.Lock()
	if len(a.waiters) == 0 && a.canGrantLocked() {
		s := a.grantLocked()
		a.mu.Unlock()
		return a.releaser(s), nil
	}
	if err := ctx.Err(); err != nil {
		a.mu.Unlock()
		return nil, err
	}
	w := &waiter{ready: make(chan struct{})}
	a.waiters = append(a.waiters, w)
	a.recordWaitingLocked()
	a.mu.Unlock()

	select {
	case <-w.ready:
		return a.releaser(w.slot), nil
	case <-ctx.Done():
		a.mu.Lock()
		defer a.mu.Unlock()
		if w.granted {
			// Granted while we were giving up: hand the slot on.
			a.inFlight--
			a.recordInFlightLocked()
			a.grantWaitersLocked()
		} else {
			a.removeWaiterLocked(w)
			a.recordWaitingLocked()
		}
		return nil, ctx.Err()
	}
}

// Limit is the current limit.
func (a *AIMD) Limit() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.limit
}

// InFlight is the number of acquired, unreleased slots. It may exceed Limit
// right after a cut.
func (a *AIMD) InFlight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inFlight
}

// Changed returns a channel that is closed when the limit next changes, so
// that what is sized to the limit (read-ahead credit, worker pools) follows
// it at once rather than on a poll: a doubling in slow start is only
// measured right if the callers fill the new slots in the next window.
// Call it again after each close for the following change.
func (a *AIMD) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.changed == nil {
		a.changed = make(chan struct{})
	}
	return a.changed
}

// Waiting is the number of blocked Acquire calls.
func (a *AIMD) Waiting() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.waiters)
}

// Pause stops granting slots until the given time, so that the runtime can
// honour a target's Retry-After for every caller at once. In-flight calls
// are unaffected; blocked and new Acquire calls wait (and still honour their
// ctx). A pause only ever extends: an earlier time than the current pause
// end is ignored. The limit itself is not changed (an overload reported with
// the Retry-After cuts it as usual).
func (a *AIMD) Pause(until time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !until.After(a.pausedUntil) || !until.After(a.now()) {
		return
	}
	a.pausedUntil = until
	a.armPauseTimerLocked()
}

// armPauseTimerLocked makes sure waiters are woken when the pause ends. The
// timer belongs to the limiter and is re-armed, never duplicated; its
// callback only takes the lock and grants slots, so there is nothing to stop
// or wait for when the limiter is dropped.
func (a *AIMD) armPauseTimerLocked() {
	d := a.pausedUntil.Sub(a.now())
	if a.pauseTimer == nil {
		a.pauseTimer = time.AfterFunc(d, a.pauseEnded)
		return
	}
	a.pauseTimer.Reset(d)
}

// pauseEnded runs on the pause timer's goroutine.
func (a *AIMD) pauseEnded() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pausedLocked() {
		// Extended, or the timer fired early against Now: wait again.
		a.armPauseTimerLocked()
		return
	}
	a.grantWaitersLocked()
}

func (a *AIMD) pausedLocked() bool {
	if a.pausedUntil.IsZero() {
		return false
	}
	if a.now().Before(a.pausedUntil) {
		return true
	}
	a.pausedUntil = time.Time{}
	return false
}

func (a *AIMD) canGrantLocked() bool {
	return a.inFlight < a.limit && !a.pausedLocked()
}

// grantLocked takes a slot.
func (a *AIMD) grantLocked() slot {
	a.inFlight++
	if a.inFlight >= a.limit {
		a.full = true
	}
	a.recordInFlightLocked()
	return slot{epoch: a.epoch, start: a.now(), beside: a.inFlight - 1}
}

// grantWaitersLocked hands free slots to waiters in FIFO order.
func (a *AIMD) grantWaitersLocked() {
	n := len(a.waiters)
	for len(a.waiters) > 0 && a.canGrantLocked() {
		w := a.waiters[0]
		a.waiters[0] = nil
		a.waiters = a.waiters[1:]
		w.slot = a.grantLocked()
		w.granted = true
		close(w.ready)
	}
	if len(a.waiters) != n {
		a.recordWaitingLocked()
	}
}

func (a *AIMD) removeWaiterLocked(w *waiter) {
	for i, x := range a.waiters {
		if x == w {
			a.waiters = append(a.waiters[:i], a.waiters[i+1:]...)
			return
		}
	}
}

func (a *AIMD) releaser(s slot) func(Outcome) {
	released := false
	return func(o Outcome) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if released {
			panic("flow: release called twice")
		}
		released = true
		a.releaseLocked(s, o)
	}
}

func (a *AIMD) releaseLocked(s slot, o Outcome) {
	// Utilisation is judged with this call still counted in flight.
	busy := 2*a.inFlight >= a.limit
	// The calls in flight beside this one, what the target was serving
	// when it answered: counted at its start or at its end, whichever is
	// more (calls started after it may have reached the target first,
	// calls that finished meanwhile were still there).
	beside := max(s.beside, a.inFlight-1)
	a.inFlight--
	took := a.now().Sub(s.start)
	if o == Success && a.latency > 0 && took > a.latency {
		o = Overload
	}
	switch o {
	case Success:
		// Successes of calls started before the last cut say nothing about
		// the lowered limit; counting them would undo the cut at once.
		if busy && s.epoch == a.epoch {
			a.successes++
			if a.successes >= a.limit {
				a.windowDoneLocked()
			}
		}
	case Overload:
		if s.epoch == a.epoch {
			a.cutLocked(beside)
		}
	}
	a.recordInFlightLocked()
	a.grantWaitersLocked()
}

// windowDoneLocked ends a window of qualifying successes and grows the
// limit unless calls are queueing.
func (a *AIMD) windowDoneLocked() {
	now := a.now()
	took, timed, full := now.Sub(a.windowStart), a.timed, a.full
	a.successes, a.windowStart, a.timed, a.full = 0, now, true, a.inFlight >= a.limit
	if a.min == a.max {
		return // fixed: nothing to learn
	}
	if a.slowStart {
		a.slowStartWindowLocked(took, timed, full)
		return
	}
	if timed {
		if q := a.queueingLocked(took); q != queueFree {
			a.step, a.freeRun = 1, 0
			a.knee = max(a.knee, a.limit)
			a.stuck++
			// Give back one slot per clearly slow window, or per
			// stuckWindows mildly slow ones in a row: if calls queue, the
			// windows get faster. Never below half of the last limit that
			// did not queue: if they stay slow down there, the target got
			// slower at any limit (or the machine busier), the references
			// are out of date, and they are learnt again.
			floor := max(a.okLimit/2, a.min)
			switch {
			case a.limit > floor && (q == queueOver || a.stuck >= stuckWindows):
				a.limit--
				a.stuck = 0
				a.recordLimitLocked()
			case a.limit <= floor && a.stuck >= stuckWindows:
				a.byLimit = [len(a.byLimit)]band{}
				a.knee, a.okLimit, a.stuck = 0, a.limit, 0
			}
			return
		}
		a.okLimit, a.stuck = a.limit, 0
		a.freeRun++
		if a.knee > 0 && a.limit >= a.knee-1 {
			// Near where windows last slowed down, one fast window is
			// likely luck: grow only after kneeWindows in a row, and
			// forget the knee once well past it.
			if a.freeRun < kneeWindows {
				return
			}
			a.freeRun = 0
			if a.limit > a.knee+a.knee/8 {
				a.knee = 0
			}
		}
	}
	var grow int
	switch {
	case a.wmax == 0 || a.limit < a.wmax:
		grow = 1
	case a.limit == a.wmax:
		if a.plateau++; a.plateau > plateauWindows {
			grow = 1
		}
	default:
		// Above the last point that fitted without a refusal: the target
		// has grown, so find its new size quickly.
		grow = min(a.step, max(1, a.limit/8))
		a.step = min(2*a.step, a.max)
	}
	if grow == 0 || a.limit >= a.max {
		return
	}
	a.limit = min(a.limit+grow, a.max)
	a.grown = true
	if a.limit <= a.wmax {
		a.plateau = 0
	}
	a.recordLimitLocked()
}

// slowStartWindowLocked ends a window in slow start. A timed window in
// which every slot was taken doubles the limit, unless it took over
// tolerance times the last fine one (and more than queueSlack longer),
// which was at this limit or half of it: a doubling is worth it while each
// slot keeps nearly its speed, so that it nearly doubles the throughput.
// (Against the fastest window so far, windows of 8 or 16 calls on a busy
// machine made the reference so lucky that slow start ended at 32 in B3.)
// Two such slow windows in a row end slow start, judged as the throughput
// check judges windows: up to overFactor of the tolerance's margin the
// doubling still paid (a window 1.2 times as long at twice the limit is
// 1.7 times the throughput) and the limit stays; beyond, it returns to the
// limit before. Growth goes on by one per window from there, with this
// limit as the knee: probing faster (as above a refusal's point) overshot
// a queueing target's knee by a third before the smoothed windows showed
// it. The window durations are also the references the throughput check
// starts from. With the check off, only an overload or Max ends slow
// start.
func (a *AIMD) slowStartWindowLocked(took time.Duration, timed, full bool) {
	if !timed {
		return
	}
	if a.tolerance > 0 {
		b := &a.byLimit[bits.Len(uint(a.limit))]
		b.took = smooth(b.took, took)
		if a.ssRef > 0 && took-a.ssRef > queueSlack && float64(took) > a.tolerance*float64(a.ssRef) {
			// One slow window of a few dozen calls may be a hiccup of a
			// busy machine: hold the limit and measure once more.
			if a.ssSlow++; a.ssSlow < 2 {
				return
			}
			a.slowStart = false
			a.knee = a.limit
			if float64(took) > (1+overFactor*(a.tolerance-1))*float64(a.ssRef) {
				a.limit = max(a.ssPrev, a.min)
				a.recordLimitLocked()
			}
			a.okLimit = a.limit
			return
		}
		a.ssSlow, a.ssRef = 0, took
	}
	if a.limit >= a.max {
		// Fine at Max: nothing left to find.
		a.slowStart, a.okLimit = false, a.limit
		return
	}
	// Doubling a limit the callers did not use up would let it run far
	// ahead of the demand (RFC 7661's cwnd-limited rule): wait until it is.
	if !full {
		return
	}
	a.ssPrev = a.limit
	a.limit = min(2*a.limit, a.max)
	a.grown = true
	// The window after a doubling ends with the calls the new slots let
	// out all at once, which finish together, the last of them late on a
	// busy machine (a window of 64 at 1.5 times the window of 32 in B3,
	// where 64 calls in flight cost 5 % more each): that window is not
	// timed, the one after it measures the new limit.
	a.timed = false
	a.recordLimitLocked()
}

// queue is what the window durations say about queueing.
type queue int

const (
	queueFree queue = iota // growing the limit adds throughput
	queueFull              // it would add little: hold
	queueOver              // calls clearly queue: give one slot back
)

// queueingLocked records a window's duration and says whether calls are
// queueing. It compares the smoothed recent duration with the lowest
// reference of the two bands below this limit's (limits up to four times
// lower): up to tolerance times the reference is free, up to overFactor of
// that margin is full, beyond is over; with no reference yet it is free. A
// difference under queueSlack is always free. References do not expire by
// time, since at a steady knee fresh references would be measured in the
// queue and let the limit drift up; see windowDoneLocked for when they are
// dropped.
func (a *AIMD) queueingLocked(took time.Duration) queue {
	if a.tolerance == 0 || took <= 0 {
		return queueFree
	}
	// The median of the last three windows: one stalled window (a GC
	// pause, a descheduled process) says nothing about the limit, two in
	// three do.
	a.last3[a.windows%3] = took
	a.windows++
	if a.windows < 3 {
		return queueFree
	}
	took = median3(a.last3)
	a.recent = smooth(a.recent, took)
	i := bits.Len(uint(a.limit))
	b := &a.byLimit[i]
	b.took = smooth(b.took, took)
	// The reference comes from lower limits only: this band follows the
	// recent windows, and comparing them with themselves would let every
	// lucky window grow the limit.
	var ref time.Duration
	for _, lower := range a.byLimit[max(i-2, 0):i] {
		if lower.took > 0 && (ref == 0 || lower.took < ref) {
			ref = lower.took
		}
	}
	if ref == 0 {
		return queueFree // nothing to compare with yet
	}
	ratio := float64(a.recent) / float64(ref)
	switch {
	case a.recent-ref <= queueSlack || ratio <= a.tolerance:
		return queueFree
	case ratio <= 1+overFactor*(a.tolerance-1):
		return queueFull
	default:
		return queueOver
	}
}

// smooth folds sample into the moving average avg (0: none yet).
func smooth(avg, sample time.Duration) time.Duration {
	if avg == 0 {
		return sample
	}
	return (avg + sample) / 2
}

func median3(x [3]time.Duration) time.Duration {
	return max(min(x[0], x[1]), min(max(x[0], x[1]), x[2]))
}

// cutLocked lowers the limit on an overload; beside is the number of other
// calls in flight when the target refused.
func (a *AIMD) cutLocked(beside int) {
	a.epoch++
	a.slowStart = false
	a.successes, a.timed, a.full = 0, false, false
	floor := int(float64(a.limit) * a.backoff)
	next := floor
	if a.grown {
		// The limit grew into the overload: the target has just said that
		// it takes about beside calls. Sit a little below that.
		a.wmax = max(min(beside, a.limit-1), a.min)
		next = max(int(probeCut*float64(a.wmax)), floor)
	} else {
		a.wmax = max(a.limit-1, a.min)
	}
	a.limit = max(min(next, a.limit-1), a.min)
	// Backoff bounds the cut; if that leaves the limit over what fitted,
	// the limit is the point to grow back to, not one to accelerate from.
	a.wmax = max(a.wmax, a.limit)
	a.grown, a.plateau, a.step = false, 0, 1
	if a.rec != nil {
		a.rec.Cut()
	}
	a.recordLimitLocked()
}

// recordLimitLocked publishes a limit change to the Recorder and to
// Changed's channel.
func (a *AIMD) recordLimitLocked() {
	if a.rec != nil {
		a.rec.SetLimit(a.limit)
	}
	if a.changed != nil {
		close(a.changed)
		a.changed = nil
	}
}

func (a *AIMD) recordInFlightLocked() {
	if a.rec != nil {
		a.rec.SetInFlight(a.inFlight)
	}
}

func (a *AIMD) recordWaitingLocked() {
	if a.rec != nil {
		a.rec.SetWaiting(len(a.waiters))
	}
}
