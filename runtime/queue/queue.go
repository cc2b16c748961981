// Package queue is Sluice's durable task queue (DESIGN §7): the invoke API
// stores each accepted task here before replying 202, and the dispatcher reads
// the tasks back through connectors.Source, so the engine that runs pipelines
// over Kafka runs asynchronous invocations the same way.
//
// The default implementation is an embedded NATS JetStream server with file
// storage in Sluice's data directory (OpenEmbedded); the same code runs
// against an external NATS cluster (OpenNATS). Package kafkaq implements
// Queue on Kafka (without Move). docs/queues.md describes the stream,
// subjects, consumers and the sync policy, and the Kafka topics and groups.
package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// Queue stores task messages durably in named queues and hands them out to
// readers.
//
// Concurrency: every method is safe for concurrent use. Close is called once
// by the owner, after every Source obtained from the queue has been closed;
// calls after Close return ErrClosed.
type Queue interface {
	// Publish durably stores one message in queue and returns only once the
	// store acknowledged the write (see docs/queues.md, "Sync policy", for
	// what survives a process kill and what survives a power loss).
	//
	// msgID, when not empty, deduplicates: a second Publish with the same
	// msgID within the duplicate window stores nothing and returns a Receipt
	// with Duplicate set. headers travel with the message (use EncodeEvent
	// for CloudEvents). The queue does not need to have been created:
	// messages published to a queue without readers wait for one.
	//
	// Errors: ErrInvalidName, ErrFull (the store's size limit is reached;
	// retry later), ErrTooLarge, ErrClosed, or a transport error (the write
	// may or may not have happened; a retry with the same msgID is safe).
	Publish(ctx context.Context, queue, msgID string, data []byte, headers map[string]string) (Receipt, error)

	// CreateQueue makes queue readable: it creates the queue's consumer
	// (or updates its settings). Idempotent.
	CreateQueue(ctx context.Context, queue string) error
	// DeleteQueue removes queue's consumer. It refuses with ErrNotEmpty while
	// messages are stored in the queue (Move them first), so that deleting
	// never loses a task. Deleting a missing queue is not an error. Sources
	// reading the queue must be closed first; otherwise their Read fails with
	// ErrQueueDeleted.
	DeleteQueue(ctx context.Context, queue string) error
	// Queues lists the created queues, for a dispatcher that restarts.
	Queues(ctx context.Context) ([]string, error)

	// Source returns an unconnected reader of one created queue. Lane is the
	// queue name; messages carry the stored CloudEvent (see EncodeEvent). The
	// acknowledgement semantics are described on NewSource's result and in
	// docs/queues.md. Several Sources may read one queue (also from several
	// processes); each message goes to one of them.
	Source(queue string, opts connectors.Options) connectors.Source

	// Move transfers the messages of from that were never delivered to a
	// reader and that filter accepts (nil accepts all) to the queue to, and
	// returns how many it moved. Each is republished to to, then deleted from
	// from: a failure in between leaves a copy in both (at-least-once, never
	// lost); re-running Move after a failure does not duplicate what was
	// already copied within the duplicate window. Messages currently held by
	// readers of from (delivered, unacknowledged) stay in from.
	Move(ctx context.Context, from, to string, filter Filter) (int, error)

	// Depth is the number of messages stored in queue: waiting, in flight
	// (delivered and not yet acknowledged) and waiting for a redelivery.
	Depth(ctx context.Context, queue string) (int, error)

	// Close releases the connection (and, for the embedded queue, stops the
	// server, flushing the store). It is idempotent.
	Close(ctx context.Context) error
}

// Receipt describes a stored message.
type Receipt struct {
	// Seq is the message's position in the store (unique, increasing).
	Seq uint64
	// Duplicate is set when msgID matched an earlier message within the
	// duplicate window; nothing new was stored and Seq is the earlier one's.
	Duplicate bool
}

// Stored is a message as Move's filter sees it. Filters must not modify it.
type Stored struct {
	Queue   string
	Seq     uint64
	MsgID   string            // the msgID given to Publish ("" if none)
	Headers map[string]string // the headers given to Publish
	Data    []byte
	Time    time.Time // when it was stored
}

// Filter selects the messages Move transfers.
type Filter func(*Stored) bool

// Errors callers branch on.
var (
	// ErrClosed: the queue (or the Source) was closed.
	ErrClosed = connectors.ErrClosed
	// ErrInvalidName: a queue name is not dot-separated tokens of ASCII
	// letters, digits, '-' and '_'.
	ErrInvalidName = errors.New("invalid queue name")
	// ErrFull: the store reached its size limit; nothing was stored. The
	// invoke API answers 503 with Retry-After.
	ErrFull = errors.New("queue store full")
	// ErrTooLarge: the message exceeds the maximum message size.
	ErrTooLarge = errors.New("message too large for the queue")
	// ErrNoQueue: the queue was never created (or was deleted).
	ErrNoQueue = errors.New("queue does not exist")
	// ErrQueueDeleted: a Source's queue was deleted while it was reading.
	ErrQueueDeleted = errors.New("queue deleted while reading")
	// ErrNotEmpty: DeleteQueue refused because messages are stored.
	ErrNotEmpty = errors.New("queue not empty")
	// ErrUnsupported: the implementation cannot do this at all (Move on
	// Kafka, whose topics cannot give up single records); retrying is
	// pointless. See CanMove.
	ErrUnsupported = errors.New("not supported by this queue")
)

// CanMove reports whether q supports Move. An implementation whose Move
// always fails with ErrUnsupported says so with a CanMove() bool method
// returning false, so that callers (the async service's placement) can
// avoid depending on Move instead of failing at it.
func CanMove(q Queue) bool {
	m, ok := q.(interface{ CanMove() bool })
	return !ok || m.CanMove()
}

// ErrTerminate, wrapped in the error passed to a Source's AckFunc, removes
// the message for good instead of making it available again (for a task that
// was cancelled or already handled elsewhere). Sluice's engine never needs it:
// it dead-letters failed events itself and then acknowledges with nil.
var ErrTerminate = errors.New("terminate message")

// RetryAfter wraps err so that a Source's AckFunc makes the message available
// again only after d (instead of immediately), e.g. when a function answered
// 429 with Retry-After during shutdown.
func RetryAfter(err error, d time.Duration) error {
	return &retryAfterError{err: err, d: d}
}

type retryAfterError struct {
	err error
	d   time.Duration
}

func (e *retryAfterError) Error() string {
	return fmt.Sprintf("%v (redeliver after %s)", e.err, e.d)
}

func (e *retryAfterError) Unwrap() error { return e.err }

// RetryDelay returns the delay a RetryAfter in err's chain asks for, for
// implementations outside this package.
func RetryDelay(err error) (time.Duration, bool) {
	var ra *retryAfterError
	if errors.As(err, &ra) {
		return ra.d, true
	}
	return 0, false
}
