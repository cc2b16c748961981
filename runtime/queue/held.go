package queue

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
)

// HeldRetries gives a Source the queue's acknowledgement semantics on a
// broker that can neither delete one message nor redeliver it after a
// delay (Kafka, RocketMQ), for the broker connector's source underneath:
// nil and ErrTerminate acknowledge; RetryAfter(err, d) holds the message
// for d, re-publishes it to the queue's tail under its msgID and then
// acknowledges the original (a failure in between leaves both, and the
// task store makes the second delivery a no-op); any other error is passed
// on as a nack.
//
// Ownership: each held message has one goroutine, owned by HeldRetries.
// Stop nacks the messages still held (so the source's Close does not wait
// for acknowledgements that never come; they are delivered again) and
// waits for the goroutines; call it before closing the source. Adopt and
// the AckFuncs it returns are safe for concurrent use.
type HeldRetries struct {
	q     Queue
	queue string
	log   *slog.Logger

	mu      sync.Mutex
	stopped bool
	stop    chan struct{} // closed by Stop
	wg      sync.WaitGroup
}

// NewHeldRetries returns the retry holder of a Source of queue name of q;
// log reports failed re-publishes.
func NewHeldRetries(q Queue, name string, log *slog.Logger) *HeldRetries {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &HeldRetries{q: q, queue: name, log: log, stop: make(chan struct{})}
}

// errStopped nacks a message held for a RetryAfter when its reader stops.
var errStopped = errors.New("reader closed before the retry delay passed")

// Adopt turns a message the broker source read into the queue's: its
// Coordinates carry the queue name as Topic and the msgID (the source's
// message key) as ID, and the partitionkey extension the source's decoder
// copied from the msgID (partitionKeyExt, for events that had none) is
// taken off again, so the function sees the event as it was submitted. It
// returns the AckFunc to hand out with msg.
func (h *HeldRetries) Adopt(msg *connectors.Message, ack connectors.AckFunc, partitionKeyExt string) connectors.AckFunc {
	msgID := msg.Key
	msg.Coordinates.ID = msgID
	msg.Coordinates.Topic = h.queue
	if k, ok := msg.Event.Extensions()[partitionKeyExt].(string); ok && msgID != "" && k == msgID {
		msg.Event.SetExtension(partitionKeyExt, nil)
	}
	msg.Key, _ = msg.Event.Extensions()[partitionKeyExt].(string)
	if msg.DecodeErr != nil {
		return ack // never re-published: it would no longer be the message it was
	}
	// The event as stored, for a re-publish: the reader may change the
	// message's event (the async service strips its routing attributes).
	stored := msg.Event
	stored.Context = msg.Event.Context.Clone()
	return func(ctx context.Context, err error) error {
		if err == nil || errors.Is(err, ErrTerminate) {
			return ack(ctx, nil)
		}
		d, ok := RetryDelay(err)
		if !ok {
			return ack(ctx, err)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.stopped {
			return ack(ctx, err)
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.retryLater(d, msgID, stored, ack)
		}()
		return nil
	}
}

func (h *HeldRetries) retryLater(d time.Duration, msgID string, stored cloudevents.Event, ack connectors.AckFunc) {
	t := time.NewTimer(d)
	defer t.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case <-h.stop:
		// A nack, not silence: the source's Close would wait for an
		// acknowledgement that never comes, until its deadline.
		_ = ack(ctx, errStopped)
		return
	case <-t.C:
	}
	data, headers, err := EncodeEvent(stored)
	if err == nil {
		_, err = h.q.Publish(ctx, h.queue, msgID, data, headers)
	}
	if err != nil {
		h.log.Warn("re-publishing a message to retry later failed; it is delivered again when its partition or queue is next assigned",
			"queue", h.queue, "msg_id", msgID, "err", err)
		_ = ack(ctx, err)
		return
	}
	_ = ack(ctx, nil)
}

// Stop nacks the messages still held and waits for their goroutines;
// later RetryAfter acknowledgements are passed on as nacks. Idempotent.
func (h *HeldRetries) Stop() {
	h.mu.Lock()
	if !h.stopped {
		h.stopped = true
		close(h.stop)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// FailedSource returns a Source that cannot be read: Connect and Read
// return err (an invalid queue name, a source that could not be built).
func FailedSource(err error) connectors.Source { return failedSource{err} }

type failedSource struct{ err error }

func (f failedSource) Connect(context.Context) error { return f.err }
func (f failedSource) Read(context.Context) (*connectors.Message, connectors.AckFunc, error) {
	return nil, nil, f.err
}
func (f failedSource) Close(context.Context) error { return nil }
