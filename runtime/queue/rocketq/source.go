package rocketq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rocketmq"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/queue"
)

// Source implements queue.Queue: the RocketMQ connector's source on the
// queue's topic in the queue's consumer group (shared by every instance),
// with retry: sluice. Lanes are its message queues
// ("<topic>/<broker>/<queueId>"); a message's Coordinates carry the queue
// name as Topic and the msgID as ID.
//
// Acknowledgements: nil and queue.ErrTerminate acknowledge (the client
// then commits past the message once every earlier message of its queue
// is acknowledged). queue.RetryAfter(err, d) holds the message for d,
// re-publishes it to the queue's tail and then acknowledges the original,
// so a paused task comes back like on JetStream, after exactly d — not a
// RocketMQ delay level (see docs/queues.md for why). Any other error
// leaves the message unacknowledged: it is delivered again (with the later
// messages of its queue, which the task store then skips) when its queue
// is next assigned — a restart or a rebalance.
func (q *Queue) Source(name string, opts connectors.Options) connectors.Source {
	if err := q.validName(name); err != nil {
		return errSource{err}
	}
	topic := q.Topic(name)
	src, err := rocketmq.New(pipelines.RocketMQSource{
		NameServers: q.cfg.NameServers, Topic: topic, Group: topic, Start: pipelines.StartEarliest,
		EventType: queue.WrappedEventType, Retry: pipelines.RocketMQRetrySluice, KeyProperty: queue.MsgIDHeader,
		ConsumeTimeout: pipelines.Duration(q.cfg.ConsumeTimeout),
	}, opts, q.log)
	if err != nil {
		return errSource{fmt.Errorf("queue %s: %w", name, err)}
	}
	return &source{Source: src, q: q, queue: name, stop: make(chan struct{})}
}

// source adapts the RocketMQ source's messages to the queue's and gives
// queue.RetryAfter its meaning (see Queue.Source). Health, SetCredit and
// BrokerRetries are the RocketMQ source's.
//
// Ownership: each message acknowledged with a RetryAfter gets one goroutine
// that waits out the delay, re-publishes it and then acknowledges the
// original; Close stops them and waits for them (an original not yet
// re-published is nacked, so it is delivered again) before closing the
// RocketMQ source.
type source struct {
	*rocketmq.Source
	q     *Queue
	queue string

	mu      sync.Mutex
	closed  bool
	stop    chan struct{} // closed by Close
	retries sync.WaitGroup
}

var (
	_ connectors.Source = (*source)(nil)
	_ connectors.Health = (*source)(nil)
)

// errStopped nacks a message held for a RetryAfter when its reader closes.
var errStopped = errors.New("reader closed before the retry delay passed")

// Close implements connectors.Source.
func (s *source) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	s.mu.Unlock()
	s.retries.Wait()
	return s.Source.Close(ctx)
}

// Read implements connectors.Source.
func (s *source) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	msg, ack, err := s.Source.Read(ctx)
	if err != nil {
		return msg, ack, err
	}
	msgID := msg.Key // the property queue.MsgIDHeader (KeyProperty): Publish's msgID
	msg.Coordinates.ID = msgID
	msg.Coordinates.Topic = s.queue
	// The decoder made the message's first KEYS entry (the msgID) the
	// partitionkey of events without one: take it back off, the function
	// must see the event as it was submitted.
	ext := msg.Event.Extensions()
	if k, ok := ext[rocketmqce.PartitionKeyExtension].(string); ok && msgID != "" && k == msgID {
		msg.Event.SetExtension(rocketmqce.PartitionKeyExtension, nil)
	}
	msg.Key, _ = msg.Event.Extensions()[rocketmqce.PartitionKeyExtension].(string)
	if msg.DecodeErr != nil {
		return msg, ack, nil // never re-published: it would no longer be the message it was
	}
	// The event as stored, for a re-publish: the reader may change the
	// message's event (the async service strips its routing attributes).
	stored := msg.Event
	stored.Context = msg.Event.Context.Clone()
	return msg, s.ackFunc(msgID, stored, ack), nil
}

// ackFunc maps the queue's acknowledgements onto the RocketMQ source's:
// nil and ErrTerminate acknowledge; a RetryAfter re-publishes the message
// after its delay and then acknowledges the original; any other error is
// a nack (delivered again when its queue is next assigned).
func (s *source) ackFunc(msgID string, stored cloudevents.Event, ack connectors.AckFunc) connectors.AckFunc {
	return func(ctx context.Context, err error) error {
		if err == nil || errors.Is(err, queue.ErrTerminate) {
			return ack(ctx, nil)
		}
		d, ok := queue.RetryDelay(err)
		if !ok {
			return ack(ctx, err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return ack(ctx, err)
		}
		s.retries.Add(1)
		go func() {
			defer s.retries.Done()
			s.retryLater(d, msgID, stored, ack)
		}()
		return nil
	}
}

func (s *source) retryLater(d time.Duration, msgID string, stored cloudevents.Event, ack connectors.AckFunc) {
	t := time.NewTimer(d)
	defer t.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case <-s.stop:
		// A nack, not silence: the RocketMQ source's Close would wait for
		// an acknowledgement that never comes.
		_ = ack(ctx, errStopped)
		return
	case <-t.C:
	}
	data, headers, err := queue.EncodeEvent(stored)
	if err == nil {
		_, err = s.q.Publish(ctx, s.queue, msgID, data, headers)
	}
	if err != nil {
		s.q.log.Warn("re-publishing a message to retry later failed; it is delivered again when its queue is reassigned",
			"queue", s.queue, "msg_id", msgID, "err", err)
		_ = ack(ctx, err)
		return
	}
	// The copy is stored: the original may go (a failure here leaves both,
	// and the task store makes the second delivery a no-op).
	_ = ack(ctx, nil)
}

// errSource is the Source of a queue that cannot be read: Connect reports why.
type errSource struct{ err error }

func (e errSource) Connect(context.Context) error { return e.err }
func (e errSource) Read(context.Context) (*connectors.Message, connectors.AckFunc, error) {
	return nil, nil, e.err
}
func (e errSource) Close(context.Context) error { return nil }
