// Package flow implements AIMD concurrency limiting of function invocations.
package flow

import "context"

// Outcome is what one invocation said about the target's capacity.
type Outcome int

const (
	// Success: the call completed (2xx or a non-overload failure such as a 4xx).
	Success Outcome = iota
	// Overload: 429, 503, timeout, connection refused or reset.
	Overload
	// Ignore: the call gave no capacity signal (cancelled, not sent).
	Ignore
)

// Limiter bounds in-flight invocations to one function endpoint.
// Implementations are safe for concurrent use.
type Limiter interface {
	// Acquire blocks until a slot is free or ctx is done (ctx.Err()). The
	// returned release must be called exactly once with the call's outcome.
	Acquire(ctx context.Context) (release func(Outcome), err error)
	// Limit is the current concurrency limit.
	Limit() int
	// InFlight is the number of acquired, unreleased slots.
	InFlight() int
	// Changed returns a channel closed at the next change of Limit; call
	// it again for the change after.
	Changed() <-chan struct{}
}
