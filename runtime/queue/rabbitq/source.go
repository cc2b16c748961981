package rabbitq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rabbitmq"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/queue"
)

// Source implements queue.Queue: the RabbitMQ connector's source on the
// queue's RabbitMQ queue (declared with the queue's settings when it
// connects, so that declarations agree), with its prefetch, credit and
// reconnection. Its lane is the RabbitMQ queue; a message's Coordinates
// carry the queue name as Topic and the msgID (the message-id) as ID, and
// its Key is the event's partitionkey.
//
// Acknowledgements: nil and queue.ErrTerminate acknowledge (the message is
// gone). queue.RetryAfter(err, d) stores a copy in the queue's retry queue,
// expiring after d, and then acknowledges the original: the copy is
// dead-lettered back to the queue when it expires (if the copy cannot be
// stored, the message is requeued at once instead). Any other error nacks
// with requeue: the message is delivered again at once.
func (q *Queue) Source(name string, opts connectors.Options) connectors.Source {
	if !q.validName(name) {
		return queue.FailedSource(fmt.Errorf("%w: %q", queue.ErrInvalidName, name))
	}
	src, err := rabbitmq.New(pipelines.RabbitMQSource{
		URL:       pipelines.NewSecret("", q.cfg.URL),
		Queue:     q.QueueName(name),
		Declare:   &pipelines.RabbitMQDeclare{Queue: pipelines.RabbitMQQueue{Type: q.cfg.QueueType}},
		KeyFrom:   pipelines.RabbitKeyFromNone,
		EventType: queue.WrappedEventType,
		Heartbeat: pipelines.Duration(q.cfg.Heartbeat),
		TLS:       q.cfg.TLS,
	}, opts, q.log)
	if err != nil {
		return queue.FailedSource(fmt.Errorf("queue %s: %w", name, err))
	}
	return &source{Source: src, q: q, queue: name}
}

// source adapts the connector's messages to the queue's, gives
// queue.RetryAfter and queue.ErrTerminate their meaning and counts the
// deliveries it handed out for Depth. Health and SetCredit are the
// connector's. It starts no goroutine of its own.
type source struct {
	*rabbitmq.Source
	q     *Queue
	queue string

	mu     sync.Mutex
	held   int  // handed out by Read, AckFunc not called yet
	closed bool // Close returned: held was given back to q
}

var (
	_ connectors.Source         = (*source)(nil)
	_ connectors.Health         = (*source)(nil)
	_ connectors.CreditFollower = (*source)(nil)
)

// Read implements connectors.Source.
func (s *source) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	msg, ack, err := s.Source.Read(ctx)
	if err != nil {
		return msg, ack, err
	}
	msg.Coordinates.Topic = s.queue
	msg.Key, _ = msg.Event.Extensions()[rabbitmq.ExtPartitionKey].(string)
	var stored *cloudevents.Event
	if msg.DecodeErr == nil {
		// The event as stored, for a retry copy: the reader may change
		// the message's event (the async service strips its routing
		// attributes).
		ev := msg.Event
		ev.Context = msg.Event.Context.Clone()
		stored = &ev
	}
	s.mu.Lock()
	s.held++
	s.mu.Unlock()
	s.q.addHeld(s.queue, 1)
	return msg, s.ackFunc(msg.Coordinates.ID, stored, ack), nil
}

// ackFunc maps the queue's acknowledgements onto the connector's (see
// Queue.Source).
func (s *source) ackFunc(msgID string, stored *cloudevents.Event, ack connectors.AckFunc) connectors.AckFunc {
	var called atomic.Bool
	return func(ctx context.Context, err error) error {
		if !called.Swap(true) {
			defer s.settled()
		}
		if err == nil || errors.Is(err, queue.ErrTerminate) {
			return ack(ctx, nil)
		}
		d, ok := queue.RetryDelay(err)
		if !ok || stored == nil {
			return ack(ctx, err)
		}
		data, headers, perr := queue.EncodeEvent(*stored)
		if perr == nil {
			perr = s.q.retryLater(ctx, s.queue, publishing(msgID, data, headers), d)
		}
		if perr != nil {
			s.q.log.Warn("storing a message to retry later failed; it is requeued at once",
				"queue", s.queue, "msg_id", msgID, "err", perr)
			return ack(ctx, err)
		}
		// The copy is stored: the original may go (a failure here leaves
		// both, and the task store makes the second delivery a no-op).
		return ack(ctx, nil)
	}
}

// settled counts one handed-out delivery as settled, unless Close already
// gave the count back.
func (s *source) settled() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.held--
	s.q.addHeld(s.queue, -1)
}

// Close implements connectors.Source: the connector's Close (which waits
// for acknowledgements until ctx ends; the broker requeues what is left).
func (s *source) Close(ctx context.Context) error {
	err := s.Source.Close(ctx)
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.q.addHeld(s.queue, -s.held)
		s.held = 0
	}
	s.mu.Unlock()
	return err
}
