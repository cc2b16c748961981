package flow

import (
	"context"
	"sync"
	"time"
)

// Defaults applied by NewAIMD to zero Config fields.
const (
	DefaultInitial = 8
	DefaultMax     = 512
	DefaultBackoff = 0.7
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
//   - Increase: the limit grows by one after a limit's worth of successful
//     completions (one "round trip" of the whole window, as TCP grows per
//     RTT). A success counts only if, when it completed, at least half the
//     limit was in flight (an idle or lightly loaded limiter does not grow a
//     limit it never uses), and only if the call started after the last cut.
//   - Decrease: an overload multiplies the limit by Backoff, once per
//     overload event. Every cut starts a new epoch; overloads reported by
//     calls that started in an earlier epoch are ignored, because they
//     describe the load before the last cut. A burst of 429s answering one
//     overload thus costs a single cut, while an overload that persists
//     after the cut (seen by calls started under the lowered limit) cuts
//     again.
//
// Lowering the limit does not cancel in-flight calls; new acquisitions wait
// until in-flight drops below the new limit.
type AIMD struct {
	min, max int
	backoff  float64
	latency  time.Duration
	now      func() time.Time
	rec      Recorder

	mu       sync.Mutex
	limit    int
	inFlight int
	// successes counts qualifying successes since the last limit change.
	successes int
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

// slot records what release needs to know about an acquisition.
type slot struct {
	epoch uint64
	start time.Time
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
	if a.backoff == 0 {
		a.backoff = DefaultBackoff
	}
	a.backoff = min(max(a.backoff, minBackoff), maxBackoff)
	if a.now == nil {
		a.now = time.Now
	}
	if a.rec != nil {
		a.rec.SetLimit(a.limit)
		a.rec.SetInFlight(0)
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
	a.recordInFlightLocked()
	return slot{epoch: a.epoch, start: a.now()}
}

// grantWaitersLocked hands free slots to waiters in FIFO order.
func (a *AIMD) grantWaitersLocked() {
	for len(a.waiters) > 0 && a.canGrantLocked() {
		w := a.waiters[0]
		a.waiters[0] = nil
		a.waiters = a.waiters[1:]
		w.slot = a.grantLocked()
		w.granted = true
		close(w.ready)
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
	a.inFlight--
	if o == Success && a.latency > 0 && a.now().Sub(s.start) > a.latency {
		o = Overload
	}
	switch o {
	case Success:
		// Successes of calls started before the last cut say nothing about
		// the lowered limit; counting them would undo the cut at once.
		if busy && s.epoch == a.epoch {
			a.successes++
			if a.successes >= a.limit {
				a.successes = 0
				if a.limit < a.max {
					a.limit++
					a.recordLimitLocked()
				}
			}
		}
	case Overload:
		if s.epoch == a.epoch {
			a.cutLocked()
		}
	}
	a.recordInFlightLocked()
	a.grantWaitersLocked()
}

func (a *AIMD) cutLocked() {
	a.epoch++
	a.successes = 0
	next := min(int(float64(a.limit)*a.backoff), a.limit-1)
	a.limit = max(next, a.min)
	if a.rec != nil {
		a.rec.Cut()
	}
	a.recordLimitLocked()
}

func (a *AIMD) recordLimitLocked() {
	if a.rec != nil {
		a.rec.SetLimit(a.limit)
	}
}

func (a *AIMD) recordInFlightLocked() {
	if a.rec != nil {
		a.rec.SetInFlight(a.inFlight)
	}
}
