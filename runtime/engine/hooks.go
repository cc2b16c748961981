package engine

import (
	"context"
	"errors"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/runtime/retry"
)

// ErrSkip, returned by Hooks.Admit or set as the cause of the context it
// returned (context.WithCancelCause), finishes an event without invoking
// it further: it is acknowledged and counted as skipped. The async task
// system uses it for cancelled and paused tasks.
var ErrSkip = errors.New("skipped")

// Hooks let an embedding layer (the async task system) follow and steer
// each event through a pipeline. Methods are called from the event's own
// goroutine, concurrently for different events, and must return quickly.
// Hooks apply to binary and structured modes; Build refuses them with batch
// mode, where events share invocations.
type Hooks interface {
	// Admit is called once per event, before its first invocation. It
	// returns the context the event's invocations and retry waits run
	// under (derived from ctx; cancelling it with cause ErrSkip skips the
	// event, e.g. when its task is cancelled while running). An error
	// wrapping ErrSkip skips the event; any other error abandons it (not
	// acknowledged: redelivered).
	Admit(ctx context.Context, msg *connectors.Message) (context.Context, error)
	// Attempted reports one invocation: its verdict, and whether (after
	// delay) it will be retried.
	Attempted(msg *connectors.Message, attempt int, v retry.Verdict, retrying bool, delay time.Duration)
	// Finished reports the event's end, after its outcome is durable and
	// before it is acknowledged: outcome is one of the metrics.Outcome*
	// constants; results are the result events written (on success);
	// reason explains a failure (dead-lettered, discarded) or abandonment.
	Finished(msg *connectors.Message, outcome string, results []cloudevents.Event, reason string)
}

type priorAttemptsKey struct{}

// WithPriorAttempts returns a context (for Hooks.Admit to return) saying
// the event was already invoked n times before this delivery — a task
// taken over after its dispatcher stopped, or resumed after a pause — so
// that its retry budget continues instead of starting again: the first
// invocation of this delivery counts as attempt n+1.
func WithPriorAttempts(ctx context.Context, n int) context.Context {
	if n <= 0 {
		return ctx
	}
	return context.WithValue(ctx, priorAttemptsKey{}, n)
}

func priorAttempts(ctx context.Context) int {
	n, _ := ctx.Value(priorAttemptsKey{}).(int)
	return n
}

// skipped reports whether ctx was cancelled to skip the event.
func skipped(ctx context.Context) bool {
	return ctx.Err() != nil && errors.Is(context.Cause(ctx), ErrSkip)
}
