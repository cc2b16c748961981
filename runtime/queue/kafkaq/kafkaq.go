// Package kafkaq is the task queue (runtime/queue.Queue) on a Kafka cluster:
// one topic per queue, read by the Kafka connector's consumer group source.
//
// Kafka keeps records until retention removes them; it cannot delete one
// record, so Move is not supported (queue.ErrUnsupported) and the async
// service runs without placement promotion on it. Kafka does not deduplicate
// either: Publish never reports a Duplicate and a repeated msgID stores the
// message twice; the task store makes the second delivery a no-op.
// docs/queues.md ("Kafka") describes the topics, groups and guarantees.
package kafkaq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/kafka/kafkace"
	"github.com/sluicehq/sluice/connectors/kafka/kafkaconf"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/queue"
)

// Defaults of Config.
const (
	DefaultPrefix = "sluice.tasks"
	// DefaultPartitions: a queue's readers (all instances together) share
	// its partitions, and a message held for a retry blocks the commit of
	// its partition only; 8 lets up to 8 instances read one queue and keeps
	// one slow task from holding back the whole queue's commits.
	DefaultPartitions = 8
	// DefaultMaxMessageBytes is the producer's limit (Kafka's default
	// message.max.bytes); larger messages fail with queue.ErrTooLarge.
	DefaultMaxMessageBytes = 1 << 20
)

// Config configures a Kafka queue.
type Config struct {
	// Brokers are the bootstrap brokers, "host:port". Required.
	Brokers []string
	// Prefix names the topics and consumer groups: queue q is topic and
	// group "<Prefix>.<q>" (default DefaultPrefix).
	Prefix string
	// Partitions of each topic CreateQueue or Publish creates (default
	// DefaultPartitions). Existing topics are left as they are.
	Partitions int32
	// ReplicationFactor of created topics (default -1: the broker's
	// default.replication.factor).
	ReplicationFactor int16
	// MaxMessageBytes bounds a message (default DefaultMaxMessageBytes).
	MaxMessageBytes int
	// ClientID is the Kafka client id (default "sluice-queue").
	ClientID string
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Partitions <= 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.ClientID == "" {
		c.ClientID = "sluice-queue"
	}
	return c
}

// Queue is a queue.Queue on Kafka. Safe for concurrent use; see
// queue.Queue for the ownership of Close.
type Queue struct {
	cfg      Config
	log      *slog.Logger
	client   sarama.Client
	admin    sarama.ClusterAdmin
	producer sarama.SyncProducer

	mu     sync.Mutex
	closed bool
	topics map[string]bool // topics known to exist (created or seen)
}

var _ queue.Queue = (*Queue)(nil)

// Open connects to the cluster. The caller owns the Queue and closes it.
// Errors wrap kafkaconf.ErrConfig for a bad configuration; others are
// connection errors.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Queue, error) {
	cfg = cfg.withDefaults()
	if !queue.ValidName(cfg.Prefix) {
		return nil, fmt.Errorf("%w: prefix %q: %w", kafkaconf.ErrConfig, cfg.Prefix, queue.ErrInvalidName)
	}
	sc, err := kafkaconf.New(kafkaconf.Common{Brokers: cfg.Brokers, ClientID: cfg.ClientID})
	if err != nil {
		return nil, err
	}
	// Publish is synchronous and durable: every in-sync replica has the
	// record before it returns, and the idempotent producer keeps sarama's
	// own retries from writing it twice.
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1 // sarama's requirement for idempotence
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Retry.Max = 10 // a topic just created takes a moment to have leaders
	sc.Producer.Timeout = 10 * time.Second
	sc.Producer.MaxMessageBytes = cfg.MaxMessageBytes
	// Publish creates topics itself, with the configured partitions.
	sc.Metadata.AllowAutoTopicCreation = false
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", kafkaconf.ErrConfig, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// sarama's dial takes no context; it is bounded by its dial timeout and
	// metadata retries instead.
	client, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return nil, fmt.Errorf("kafka queue: connect: %w", err)
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("kafka queue: admin: %w", err)
	}
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("kafka queue: producer: %w", err)
	}
	return &Queue{
		cfg: cfg, log: log.With("component", "queue", "queue_kind", "kafka"),
		client: client, admin: admin, producer: producer, topics: map[string]bool{},
	}, nil
}

// Topic is the topic (and the consumer group) of queue name.
func (q *Queue) Topic(name string) string { return q.cfg.Prefix + "." + name }

// CanMove reports false: see queue.CanMove.
func (q *Queue) CanMove() bool { return false }

func (q *Queue) check(name string) error {
	if !queue.ValidName(name) {
		return fmt.Errorf("%w: %q", queue.ErrInvalidName, name)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("kafka queue: %w", queue.ErrClosed)
	}
	return nil
}

// ensureTopic creates name's topic unless it is known to exist.
func (q *Queue) ensureTopic(name string) error {
	topic := q.Topic(name)
	q.mu.Lock()
	known := q.topics[topic]
	q.mu.Unlock()
	if known {
		return nil
	}
	err := q.admin.CreateTopic(topic, &sarama.TopicDetail{
		NumPartitions: q.cfg.Partitions, ReplicationFactor: q.cfg.ReplicationFactor,
	}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return fmt.Errorf("queue %s: create topic %s: %w", name, topic, err)
	}
	q.mu.Lock()
	q.topics[topic] = true
	q.mu.Unlock()
	return nil
}

func (q *Queue) forget(name string) {
	q.mu.Lock()
	delete(q.topics, q.Topic(name))
	q.mu.Unlock()
}

// Publish implements queue.Queue. The message is produced with acks=all;
// msgID becomes the record key (so the reader knows the task) and the
// headers are written as the CloudEvents Kafka binding's ("ce-x" → "ce_x").
// The Receipt's Seq is the record's offset in its partition (increasing
// per partition only); Duplicate is never set: Kafka does not deduplicate.
// ctx bounds only the wait for the topic's creation: a produce in progress
// runs to its own timeout.
func (q *Queue) Publish(ctx context.Context, name, msgID string, data []byte, headers map[string]string) (queue.Receipt, error) {
	if err := q.check(name); err != nil {
		return queue.Receipt{}, err
	}
	if err := ctx.Err(); err != nil {
		return queue.Receipt{}, err
	}
	if err := q.ensureTopic(name); err != nil {
		return queue.Receipt{}, err
	}
	rec := &sarama.ProducerMessage{Topic: q.Topic(name), Value: sarama.ByteEncoder(data)}
	if msgID != "" {
		rec.Key = sarama.StringEncoder(msgID)
	}
	for k, v := range headers {
		if len(k) > len(queue.HeaderPrefix) && strings.EqualFold(k[:len(queue.HeaderPrefix)], queue.HeaderPrefix) {
			k = kafkace.HeaderPrefix + k[len(queue.HeaderPrefix):]
		}
		rec.Headers = append(rec.Headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
	}
	_, offset, err := q.producer.SendMessage(rec)
	if err != nil {
		return queue.Receipt{}, q.publishError(name, err)
	}
	return queue.Receipt{Seq: uint64(offset)}, nil
}

func (q *Queue) publishError(name string, err error) error {
	var ce sarama.ConfigurationError
	switch {
	case errors.Is(err, sarama.ErrMessageSizeTooLarge),
		// sarama refuses records over MaxMessageBytes before sending them.
		errors.As(err, &ce) && strings.Contains(string(ce), "MaxMessageBytes"):
		return fmt.Errorf("queue %s: %w: %v", name, queue.ErrTooLarge, err)
	case errors.Is(err, sarama.ErrUnknownTopicOrPartition):
		q.forget(name) // deleted meanwhile: the next Publish creates it again
	case errors.Is(err, sarama.ErrClosedClient), errors.Is(err, sarama.ErrShuttingDown):
		return fmt.Errorf("queue %s: %w", name, queue.ErrClosed)
	}
	return fmt.Errorf("queue %s: publish: %w", name, err)
}

// CreateQueue implements queue.Queue: it creates the topic. The consumer
// group comes into being when the first Source joins it and starts at the
// topic's earliest record, so messages published before are read.
func (q *Queue) CreateQueue(_ context.Context, name string) error {
	if err := q.check(name); err != nil {
		return err
	}
	return q.ensureTopic(name)
}

// DeleteQueue implements queue.Queue: it refuses with queue.ErrNotEmpty
// while the group's lag is not zero, else deletes the group and the topic.
// A Publish racing the deletion can be lost with the topic; the async
// service never publishes to a queue it deletes (it cannot reclaim on Kafka).
func (q *Queue) DeleteQueue(ctx context.Context, name string) error {
	n, err := q.Depth(ctx, name)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("queue %s: %w: %d messages stored", name, queue.ErrNotEmpty, n)
	}
	topic := q.Topic(name)
	if err := q.admin.DeleteConsumerGroup(topic); err != nil && !errors.Is(err, sarama.ErrGroupIDNotFound) {
		return fmt.Errorf("queue %s: delete group: %w", name, err)
	}
	q.forget(name)
	if err := q.admin.DeleteTopic(topic); err != nil && !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return fmt.Errorf("queue %s: delete topic: %w", name, err)
	}
	return nil
}

// Queues implements queue.Queue: the queues whose topic exists (created by
// CreateQueue or by a Publish).
func (q *Queue) Queues(context.Context) ([]string, error) {
	q.mu.Lock()
	closed := q.closed
	q.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("kafka queue: %w", queue.ErrClosed)
	}
	topics, err := q.admin.ListTopics()
	if err != nil {
		return nil, fmt.Errorf("kafka queue: list topics: %w", err)
	}
	var out []string
	for t := range topics {
		if name, ok := strings.CutPrefix(t, q.cfg.Prefix+"."); ok && queue.ValidName(name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// Depth implements queue.Queue: the group's lag, the records past its
// committed offsets (from the earliest retained record where it committed
// nothing). Acknowledged records count until the reader's next commit
// (about a second).
func (q *Queue) Depth(ctx context.Context, name string) (int, error) {
	if err := q.check(name); err != nil {
		return 0, err
	}
	// A topic just created (or a broker just restarted) answers "not the
	// leader" until its metadata settles: retry those, bounded by ctx.
	n, err := backoff.Retry(ctx, func() (int, error) {
		n, err := q.depth(name)
		if err != nil && !settling(err) {
			return 0, backoff.Permanent(err)
		}
		return n, err
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(10*time.Second))
	if err != nil {
		return 0, fmt.Errorf("queue %s: depth: %w", name, err)
	}
	return n, nil
}

// settling reports errors a partition gives while its leadership or its
// group coordinator is still being set up.
func settling(err error) bool {
	for _, e := range []error{
		sarama.ErrNotLeaderForPartition, sarama.ErrLeaderNotAvailable, sarama.ErrUnknownTopicOrPartition,
		sarama.ErrOffsetsLoadInProgress, sarama.ErrNotCoordinatorForConsumer, sarama.ErrConsumerCoordinatorNotAvailable,
		sarama.ErrRequestTimedOut,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// depth is one attempt of Depth.
func (q *Queue) depth(name string) (int, error) {
	topic := q.Topic(name)
	if err := q.client.RefreshMetadata(topic); err != nil {
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return 0, nil // never created, or deleted: nothing stored
		}
		return 0, err
	}
	parts, err := q.client.Partitions(topic)
	if err != nil {
		return 0, err
	}
	committed, err := q.admin.ListConsumerGroupOffsets(topic, map[string][]int32{topic: parts})
	if err != nil {
		return 0, fmt.Errorf("committed offsets: %w", err)
	}
	var total int64
	for _, p := range parts {
		end, err := q.client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return 0, fmt.Errorf("end offset of %d: %w", p, err)
		}
		pos := int64(-1)
		if b := committed.GetBlock(topic, p); b != nil {
			pos = b.Offset
		}
		if pos < 0 {
			if pos, err = q.client.GetOffset(topic, p, sarama.OffsetOldest); err != nil {
				return 0, fmt.Errorf("start offset of %d: %w", p, err)
			}
		}
		total += max(end-pos, 0)
	}
	return int(total), nil
}

// Move implements queue.Queue: it always fails with queue.ErrUnsupported,
// since a Kafka topic cannot give up single records.
func (q *Queue) Move(_ context.Context, from, to string, _ queue.Filter) (int, error) {
	return 0, fmt.Errorf("kafka queue: move %s to %s: %w", from, to, queue.ErrUnsupported)
}

// Source implements queue.Queue: the Kafka connector's source on the
// queue's topic in the queue's consumer group (shared by every instance).
// Lanes are its partitions ("<topic>/<partition>"); a message's
// Coordinates carry the queue name as Topic and the msgID as ID.
//
// Acknowledgements: nil and queue.ErrTerminate commit the record (once
// every earlier record of its partition is settled: commits are
// contiguous). queue.RetryAfter(err, d) re-publishes the message to the
// queue's tail after d and then commits the original, so a paused task
// comes back like on JetStream (the partition's commits wait for it
// meanwhile). Any other error leaves the record uncommitted: it is
// delivered again, with the records after it, when its partition is next
// assigned (the reader restarts, or a rebalance) — what the engine wants
// for messages it gives back while stopping.
func (q *Queue) Source(name string, opts connectors.Options) connectors.Source {
	if !queue.ValidName(name) {
		return queue.FailedSource(fmt.Errorf("%w: %q", queue.ErrInvalidName, name))
	}
	topic := q.Topic(name)
	src, err := kafka.New(pipelines.KafkaSource{
		Brokers: q.cfg.Brokers, Topics: []string{topic}, Group: topic, Start: "earliest",
		EventType: queue.WrappedEventType, ClientID: q.cfg.ClientID,
	}, opts, q.log)
	if err != nil {
		return queue.FailedSource(fmt.Errorf("queue %s: %w", name, err))
	}
	return &source{Source: src, held: queue.NewHeldRetries(q, name, q.log)}
}

// Close implements queue.Queue.
func (q *Queue) Close(context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	// The producer and the admin share the client: close them, then it.
	err := errors.Join(q.producer.Close(), q.admin.Close())
	if !q.client.Closed() {
		err = errors.Join(err, q.client.Close())
	}
	if err != nil {
		return fmt.Errorf("kafka queue: close: %w", err)
	}
	return nil
}

// source adapts the Kafka source's messages to the queue's and gives
// queue.RetryAfter its meaning (queue.HeldRetries; see Queue.Source).
// Health and SetCredit are the Kafka source's.
type source struct {
	*kafka.Source
	held *queue.HeldRetries
}

var (
	_ connectors.Source = (*source)(nil)
	_ connectors.Health = (*source)(nil)
)

// Close implements connectors.Source: the held messages are given back
// first, so that the Kafka source does not wait for their acks.
func (s *source) Close(ctx context.Context) error {
	s.held.Stop()
	return s.Source.Close(ctx)
}

// Read implements connectors.Source.
func (s *source) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	msg, ack, err := s.Source.Read(ctx)
	if err != nil {
		return msg, ack, err
	}
	return msg, s.held.Adopt(msg, ack, kafkace.PartitionKeyExtension), nil
}
