// Package connectors defines the contract between message-queue sources and
// the Sluice runtime. Each broker lives in its own sub-package
// (connectors/kafka, ...) and every source passes connectors/conformance.
//
// Data flows one way: a Source yields Messages; the runtime processes them and
// reports back only through the AckFunc that travels with each Message.
package connectors

import (
	"context"
	"errors"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// ErrClosed is returned by Read after Close has been called.
var ErrClosed = errors.New("source closed")

// ErrRevoked is returned by an AckFunc whose lane was revoked (rebalanced to
// another consumer) before the ack arrived. The position is not committed; the
// new owner re-delivers the message. Callers treat it as informational.
var ErrRevoked = errors.New("lane revoked")

// AckFunc reports the end of one message's processing. It must be called
// exactly once per message, from any goroutine.
//
// err == nil means the message is done (processed and every result durably
// written, or dead-lettered): the source may commit its position. err != nil
// means the message was NOT processed: the source must not commit past it and
// should make it available for redelivery where the broker allows.
//
// The returned error says the acknowledgement itself could not be recorded
// (ErrRevoked, a closed channel, ...); it never means the message is lost.
type AckFunc func(ctx context.Context, err error) error

// Coordinates identify a message's original position in its broker. They are
// copied into dead-letter extension attributes and logs.
type Coordinates struct {
	System    string // "kafka", "rabbitmq", "rocketmq", ...
	Topic     string // topic, or queue name
	Partition int32  // partition or queue id; 0 where the broker has none
	Offset    int64  // offset; -1 where the broker has none
	ID        string // broker message id where offsets do not exist
}

// Message is one record read from a source, already mapped to a CloudEvent.
// The runtime owns it after Read returns; the source must not mutate it.
type Message struct {
	// Event is always set. For undecodable input (DecodeErr != nil) it is a
	// wrapper event carrying the raw payload so that it can be dead-lettered.
	Event cloudevents.Event
	// DecodeErr is non-nil when the payload could not be decoded as a
	// CloudEvent (broken ce_ headers, invalid structured JSON). The runtime
	// dead-letters such messages with this reason and does not invoke the
	// function.
	DecodeErr error
	// Lane names the unit of ordering and commit, e.g. "orders/3" for a Kafka
	// partition. Messages of one lane are yielded in broker order.
	Lane string
	// Key is the ordering key within the lane ("" = no key).
	Key string
	// Coordinates is the original broker position.
	Coordinates Coordinates
	// Revoked is closed when the lane is revoked from this consumer (nil if
	// it never is). The runtime should not start new work for such a message
	// and acks it with ErrRevoked-wrapping error instead.
	Revoked <-chan struct{}
	// Size is the payload size in bytes.
	Size int
	// ReceivedAt is when the source read the message.
	ReceivedAt time.Time
}

// Source reads messages from one broker subscription.
//
// Concurrency: Connect and Close are called once each by the owner (the
// engine). Read is called from one goroutine at a time. AckFuncs may be called
// concurrently from any goroutine, also after Close has begun (they then
// report an error and commit nothing). Close may be called concurrently with a
// blocked Read, which then returns ErrClosed.
type Source interface {
	// Connect establishes the subscription. It retries transient broker
	// errors with backoff until ctx is done (logging each failure and
	// reporting it through Health); a returned error is permanent (bad
	// configuration, authentication refused) or ctx's error.
	Connect(ctx context.Context) error
	// Read blocks until a message is available, ctx is done (ctx.Err()), or
	// the source is closed (ErrClosed). Not calling Read is backpressure: a
	// source holds at most Options.Window unacknowledged messages per lane
	// and stops fetching beyond that. Transient broker errors are handled
	// inside the source (reconnect with backoff); any other error is fatal
	// for the pipeline.
	Read(ctx context.Context) (*Message, AckFunc, error)
	// Close stops reading, waits until outstanding acks arrive or ctx is
	// done, commits the contiguous acknowledged prefix of every lane it
	// still owns and releases broker resources. It is idempotent.
	Close(ctx context.Context) error
}

// Health is implemented by sources (and sinks) that can report whether they
// are currently connected. A nil error means healthy.
type Health interface {
	Health() error
}

// Options are the runtime-side settings every source receives.
type Options struct {
	// Window is the maximum number of messages read but not yet acked per
	// lane (the bound on what a crash re-delivers). Zero means the source's
	// default.
	Window int
	// Name identifies the pipeline in logs and metrics.
	Name string
}

// CreditFollower is implemented by sources whose read-ahead can follow the
// runtime's credit instead of staying at the fixed Options.Window.
//
// n is the credit of the whole source, across all its lanes: the most
// messages it should hold read but not yet acknowledged (handed to Read and
// not acked, plus whatever it has fetched from the broker for later
// Reads). The engine derives it from the function's AIMD concurrency limit
// (about twice the limit's worth of events) and calls SetCredit once before
// Connect, so that the first fetch or prefetch is already sized, and then
// whenever that value changes, from one goroutine at a time, concurrently
// with Read, AckFuncs and Close (after Close it has no effect). n < 1 counts as 1. Options.Window keeps
// bounding each lane: the effective read-ahead of a lane is the smaller of
// its Window and its share of n (at least one message per lane, so a
// source owning more lanes than n may hold one per lane).
//
// Lowering the credit takes nothing back: messages already held stay
// valid and their AckFuncs work; the source delivers nothing new from a
// lane until it is back under its share. Each source documents how its
// broker-side prefetch follows (docs/connectors).
type CreditFollower interface {
	SetCredit(n int)
}

// BrokerRetrier is implemented by sources configured to leave retries to
// the broker (RocketMQ retry: broker). When BrokerRetries reports true, the
// runtime does not retry or dead-letter a failed event itself: it acks it
// with the failure (AckFunc(err)), and the broker's own redelivery policy
// (delays, attempt count, dead-letter queue) takes over.
type BrokerRetrier interface {
	BrokerRetries() bool
}
