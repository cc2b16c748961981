// Package sinks defines the contract for result destinations (result routes
// and dead letters). Each kind lives in its own sub-package (sinks/kafka,
// sinks/webhook, sinks/log, ...) and every sink passes sinks/conformance.
package sinks

import (
	"context"
	"errors"
	"fmt"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// Sink writes events to a destination.
//
// Concurrency: Write may be called concurrently from many goroutines. Close is
// called once by the owner after every Write has returned; it is idempotent.
type Sink interface {
	// Write returns nil only once every event is durably written (acks=all,
	// publisher confirm, 2xx, ...). On error none, some or all events may
	// have been written: callers retry the whole slice, so delivery is
	// at-least-once. Write must honour ctx cancellation.
	Write(ctx context.Context, events []cloudevents.Event) error
	// Close flushes and releases resources. Writes after Close fail.
	Close(ctx context.Context) error
}

// ErrRejected marks a write the destination refused for good: the event is
// too large for it, cannot be encoded for it, or was refused with a
// permanent status. Writing the same events again cannot succeed, so the
// runtime does not retry it: a rejected result dead-letters its input
// event, and a rejected dead letter is retried without its data.
// Test with errors.Is(err, ErrRejected).
var ErrRejected = errors.New("rejected by the destination")

// Rejected wraps err as a permanent rejection.
func Rejected(err error) error { return fmt.Errorf("%w: %w", ErrRejected, err) }
