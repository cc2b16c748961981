package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/IBM/sarama"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/connectors"
	kafkasource "github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/kafka/kafkaconf"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/queue"
	kafkasink "github.com/sluicehq/sluice/sinks/kafka"
)

// storage keeps a bus's events between the put and their delivery to
// every target. Implementations are safe for concurrent use; close is
// called once, after everything reading from the storage stopped.
type storage interface {
	// put stores events (already validated) and returns nil only once every
	// one is durable. Errors wrap ErrTooLarge, ErrFull, ErrClosed,
	// sinks.ErrRejected or a transient storage error.
	put(ctx context.Context, events []cloudevents.Event) error
	// targetSource returns the unconnected source target t reads. match
	// reports that it yields every event of the bus, so the target must
	// skip those its rule does not match; otherwise it yields only the
	// events routed to t.
	targetSource(ctx context.Context, t *target) (src connectors.Source, match bool, err error)
	// dispatcher returns what reads the bus's ingress besides the targets
	// (fan-out and archive), or nil when nothing needs to. It is called
	// once, after every target's source was made.
	dispatcher(ctx context.Context, b *Bus) (*dispatcher, error)
	close(ctx context.Context) error
}

// embeddedStorage keeps a bus in the embedded queue: an ingress queue that
// the dispatcher fans out into one queue per target.
type embeddedStorage struct {
	q       Queue
	ingress string
}

// putConcurrency bounds the publishes in flight for one put of a batch.
const putConcurrency = 16

func newEmbeddedStorage(ctx context.Context, q Queue, ingress string) (*embeddedStorage, error) {
	if err := q.CreateQueue(ctx, ingress); err != nil {
		return nil, err
	}
	return &embeddedStorage{q: q, ingress: ingress}, nil
}

func (s *embeddedStorage) put(ctx context.Context, events []cloudevents.Event) error {
	if len(events) == 1 {
		return s.putOne(ctx, &events[0])
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(putConcurrency)
	for i := range events {
		g.Go(func() error { return s.putOne(gctx, &events[i]) })
	}
	return g.Wait()
}

func (s *embeddedStorage) putOne(ctx context.Context, ev *cloudevents.Event) error {
	data, headers, err := encode(ev)
	if err != nil {
		return err
	}
	_, err = s.q.Publish(ctx, s.ingress, ingressID(s.ingress, ev), data, headers)
	return queueError(err)
}

// queueError maps the queue's errors to the bus's.
func queueError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, queue.ErrTooLarge):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, queue.ErrFull):
		return fmt.Errorf("%w: %w", ErrFull, err)
	case errors.Is(err, queue.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

func (s *embeddedStorage) targetSource(ctx context.Context, t *target) (connectors.Source, bool, error) {
	if err := s.q.CreateQueue(ctx, t.queue); err != nil {
		return nil, false, err
	}
	return s.q.Source(t.queue, connectors.Options{Name: t.id}), false, nil
}

func (s *embeddedStorage) dispatcher(_ context.Context, b *Bus) (*dispatcher, error) {
	src := s.q.Source(s.ingress, connectors.Options{Name: b.id})
	return newDispatcher(b, b.id+"/dispatcher", src, s.q), nil
}

// close does nothing: the queue belongs to the process.
func (s *embeddedStorage) close(context.Context) error { return nil }

// kafkaStorage keeps a bus in a Kafka topic; every target is a consumer
// group of its own on it ("GROUP.RULE.INDEX"), and the archive one more
// ("GROUP.archive"), so that several Sluice instances share the bus.
type kafkaStorage struct {
	spec pipelines.BusKafkaStorage
	sink *kafkasink.Sink
	log  *slog.Logger
}

func newKafkaStorage(ctx context.Context, spec pipelines.BusKafkaStorage, log *slog.Logger) (*kafkaStorage, error) {
	if err := ensureTopic(ctx, spec); err != nil {
		return nil, err
	}
	sink, err := kafkasink.New(pipelines.KafkaSink{
		Brokers: spec.Brokers, Topic: spec.Topic, Key: pipelines.DefaultSinkKey,
		ClientID: spec.ClientID, Version: spec.Version, TLS: spec.TLS, SASL: spec.SASL,
	}, log)
	if err != nil {
		return nil, err
	}
	return &kafkaStorage{spec: spec, sink: sink, log: log}, nil
}

// ensureTopic creates the bus's topic with the brokers' default partitions
// and replication when it does not exist: the bus's producer and consumers
// never create topics by accident.
func ensureTopic(ctx context.Context, spec pipelines.BusKafkaStorage) error {
	cfg, err := kafkaconf.New(kafkaconf.Common{
		Brokers: spec.Brokers, ClientID: spec.ClientID, Version: spec.Version, TLS: spec.TLS, SASL: spec.SASL,
	})
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// sarama's admin calls take no context; its dial and metadata
	// timeouts bound them.
	adm, err := sarama.NewClusterAdmin(spec.Brokers, cfg)
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	defer adm.Close()
	md, err := adm.DescribeTopics([]string{spec.Topic})
	if err == nil && len(md) == 1 && md[0].Err == sarama.ErrNoError {
		return nil
	}
	err = adm.CreateTopic(spec.Topic, &sarama.TopicDetail{NumPartitions: -1, ReplicationFactor: -1}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return fmt.Errorf("kafka: create topic %s: %w", spec.Topic, err)
	}
	return nil
}

func (s *kafkaStorage) put(ctx context.Context, events []cloudevents.Event) error {
	return s.sink.Write(ctx, events)
}

func (s *kafkaStorage) source(group, name string) (connectors.Source, error) {
	return kafkasource.New(pipelines.KafkaSource{
		Brokers: s.spec.Brokers, Topics: []string{s.spec.Topic}, Group: group,
		Start: pipelines.StartEarliest, ClientID: s.spec.ClientID, Version: s.spec.Version,
		EventType: pipelines.DefaultEventType, TLS: s.spec.TLS, SASL: s.spec.SASL,
	}, connectors.Options{Name: name}, s.log)
}

func (s *kafkaStorage) targetGroup(t *target) string {
	return fmt.Sprintf("%s.%s.%d", s.spec.Group, t.rule.name, t.index)
}

func (s *kafkaStorage) archiveGroup() string { return s.spec.Group + ".archive" }

func (s *kafkaStorage) targetSource(_ context.Context, t *target) (connectors.Source, bool, error) {
	src, err := s.source(s.targetGroup(t), t.id)
	return src, true, err
}

// dispatcher returns the archiver, and first starts the consumer groups
// that never committed at the topic's end (see startNewGroupsAtEnd).
func (s *kafkaStorage) dispatcher(ctx context.Context, b *Bus) (*dispatcher, error) {
	var groups []string
	for _, ts := range b.targets {
		for _, t := range ts {
			groups = append(groups, s.targetGroup(t))
		}
	}
	if b.archive != nil {
		groups = append(groups, s.archiveGroup())
	}
	if err := s.startNewGroupsAtEnd(ctx, groups); err != nil {
		// The groups start at the oldest event instead: nothing is lost.
		s.log.Warn("bus: could not start new targets at the end of the topic; they start at its oldest event", "err", err)
	}
	if b.archive == nil {
		return nil, nil
	}
	src, err := s.source(s.archiveGroup(), b.id+"/archive")
	if err != nil {
		return nil, err
	}
	return newDispatcher(b, b.id+"/archiver", src, nil), nil
}

// startNewGroupsAtEnd commits the topic's current end offsets for every
// group that has committed nothing on it yet, so that a target added to a
// bus receives the events put from now on, as with embedded storage, not
// the whole history the topic retains. A group that committed once keeps
// its offsets (a restarted target resumes where it stopped); on the first
// start the topic is empty, so its end is its beginning. Groups with active
// members elsewhere already committed, or refuse this commit: they are
// left alone.
func (s *kafkaStorage) startNewGroupsAtEnd(ctx context.Context, groups []string) error {
	if len(groups) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cfg, err := kafkaconf.New(kafkaconf.Common{
		Brokers: s.spec.Brokers, ClientID: s.spec.ClientID, Version: s.spec.Version, TLS: s.spec.TLS, SASL: s.spec.SASL,
	})
	if err != nil {
		return err
	}
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	client, err := sarama.NewClient(s.spec.Brokers, cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	topic := s.spec.Topic
	parts, err := client.Partitions(topic)
	if err != nil {
		return err
	}
	ends := make(map[int32]int64, len(parts))
	for _, p := range parts {
		if ends[p], err = client.GetOffset(topic, p, sarama.OffsetNewest); err != nil {
			return err
		}
	}
	var errs []error
	for _, g := range groups {
		if err := startGroupAt(client, g, topic, ends); err != nil {
			errs = append(errs, fmt.Errorf("group %s: %w", g, err))
		}
	}
	return errors.Join(errs...)
}

// startGroupAt commits offsets for group when it has none on topic.
func startGroupAt(client sarama.Client, group, topic string, offsets map[int32]int64) error {
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		return err
	}
	defer om.Close()
	poms := make(map[int32]sarama.PartitionOffsetManager, len(offsets))
	defer func() {
		for _, pom := range poms {
			pom.AsyncClose()
		}
	}()
	for p := range offsets {
		pom, err := om.ManagePartition(topic, p)
		if err != nil {
			return err
		}
		poms[p] = pom
		if next, _ := pom.NextOffset(); next >= 0 {
			return nil // the group committed before
		}
	}
	for p, pom := range poms {
		pom.MarkOffset(offsets[p], "")
	}
	om.Commit()
	return nil
}

func (s *kafkaStorage) close(ctx context.Context) error { return s.sink.Close(ctx) }
