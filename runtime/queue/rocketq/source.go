package rocketq

import (
	"context"
	"fmt"

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
		return queue.FailedSource(err)
	}
	topic := q.Topic(name)
	src, err := rocketmq.New(pipelines.RocketMQSource{
		NameServers: q.cfg.NameServers, Topic: topic, Group: topic, Start: pipelines.StartEarliest,
		EventType: queue.WrappedEventType, Retry: pipelines.RocketMQRetrySluice, KeyProperty: queue.MsgIDHeader,
		ConsumeTimeout: pipelines.Duration(q.cfg.ConsumeTimeout),
	}, opts, q.log)
	if err != nil {
		return queue.FailedSource(fmt.Errorf("queue %s: %w", name, err))
	}
	return &source{Source: src, held: queue.NewHeldRetries(q, name, q.log)}
}

// source adapts the RocketMQ source's messages to the queue's and gives
// queue.RetryAfter its meaning (queue.HeldRetries; see Queue.Source).
// Health, SetCredit and BrokerRetries are the RocketMQ source's.
type source struct {
	*rocketmq.Source
	held *queue.HeldRetries
}

var (
	_ connectors.Source = (*source)(nil)
	_ connectors.Health = (*source)(nil)
)

// Close implements connectors.Source: the held messages are given back
// first, so that the RocketMQ source does not wait for their acks.
func (s *source) Close(ctx context.Context) error {
	s.held.Stop()
	return s.Source.Close(ctx)
}

// Read implements connectors.Source. The msgID is the message's
// queue.MsgIDHeader property (the source's KeyProperty).
func (s *source) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	msg, ack, err := s.Source.Read(ctx)
	if err != nil {
		return msg, ack, err
	}
	return msg, s.held.Adopt(msg, ack, rocketmqce.PartitionKeyExtension), nil
}
