package retry

import (
	"math/rand/v2"
	"time"

	"github.com/sluicehq/sluice/pipelines"
)

// Defaults applied by NewPolicy to zero fields of a RetrySpec. They match the
// example in DESIGN §2.
const (
	DefaultAttempts      = 5
	DefaultDelay         = 200 * time.Millisecond
	DefaultMaxDelay      = 30 * time.Second
	DefaultRetryAfterMax = 60 * time.Second
)

// Backoff kinds of RetrySpec.Backoff.
const (
	BackoffExponential = "exponential"
	BackoffConstant    = "constant"
)

// Policy turns a pipeline's retry settings into retry decisions. It holds no
// mutable state, so one Policy is shared by every event of a pipeline and
// may be used from any number of goroutines.
//
// Exponential backoff uses "equal jitter": before attempt n+1 the wait is
// drawn uniformly from [b/2, b] where b = min(Delay·2^(n-1), MaxDelay). Half
// of the wait is guaranteed (retries never hammer a struggling target
// immediately), the other half spreads retries of events that failed
// together. It is computed from the attempt number rather than with
// backoff.ExponentialBackOff, whose state would have to be kept per event
// and whose randomised interval may exceed its MaxInterval.
type Policy struct {
	attempts      int
	constant      bool
	delay         time.Duration
	maxDelay      time.Duration
	retryAfterMax time.Duration
	maxEventAge   time.Duration
}

// NewPolicy builds a Policy from spec. Zero fields take the Default*
// values; Attempts counts every call including the first, so Attempts 1
// means "never retry". A Backoff other than "constant" is exponential (the
// pipelines package rejects unknown values). MaxDelay below Delay is raised
// to Delay. maxEventAge <= 0 means events never expire.
func NewPolicy(spec pipelines.RetrySpec, maxEventAge time.Duration) *Policy {
	p := &Policy{
		attempts:      spec.Attempts,
		constant:      spec.Backoff == BackoffConstant,
		delay:         spec.Delay.D(),
		maxDelay:      spec.MaxDelay.D(),
		retryAfterMax: spec.RetryAfterMax.D(),
		maxEventAge:   maxEventAge,
	}
	if p.attempts <= 0 {
		p.attempts = DefaultAttempts
	}
	if p.delay <= 0 {
		p.delay = DefaultDelay
	}
	if p.maxDelay <= 0 {
		p.maxDelay = DefaultMaxDelay
	}
	if p.maxDelay < p.delay {
		p.maxDelay = p.delay
	}
	if p.retryAfterMax <= 0 {
		p.retryAfterMax = DefaultRetryAfterMax
	}
	return p
}

// Attempts is the maximum number of calls per event, including the first.
func (p *Policy) Attempts() int { return p.attempts }

// Next decides whether to retry after a failed attempt, and after how long.
// attempt is the number of attempts made so far (1 after the first call);
// firstAttempt is when the event's first attempt started and now is the
// current time (passed in so callers and tests control the clock).
//
// It returns retry=false when v is not Retriable, when attempt has reached
// Attempts, or when waiting would take the event past maxEventAge measured
// from firstAttempt. Otherwise delay is the backoff (never above MaxDelay),
// or v.RetryAfter capped at RetryAfterMax when the target sent one: a
// Retry-After replaces the computed backoff, shorter or longer.
func (p *Policy) Next(attempt int, v Verdict, firstAttempt, now time.Time) (delay time.Duration, retry bool) {
	if v.Class != Retriable || attempt >= p.attempts {
		return 0, false
	}
	if v.RetryAfter > 0 {
		delay = min(v.RetryAfter, p.retryAfterMax)
	} else {
		delay = p.backoff(attempt)
	}
	if p.maxEventAge > 0 && now.Add(delay).After(firstAttempt.Add(p.maxEventAge)) {
		return 0, false
	}
	return delay, true
}

// backoff is the jittered wait after attempt attempts (attempt >= 1).
func (p *Policy) backoff(attempt int) time.Duration {
	if p.constant {
		return p.delay
	}
	b := p.delay
	// Double until the cap; the loop bound keeps it overflow-free and cheap
	// (at most ~40 iterations from 1ns to hours).
	for i := 1; i < attempt && b < p.maxDelay; i++ {
		b *= 2
	}
	b = min(b, p.maxDelay)
	half := b / 2
	// math/rand/v2's top-level functions are safe for concurrent use.
	return half + rand.N(b-half+1)
}
