package kafkaload

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/connectors/kafka/kafkace"
)

// config is the sarama configuration every client here starts from: the
// protocol version Sluice's Kafka connector speaks by default.
func config(clientID string) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V4_0_0_0
	c.ClientID = clientID
	return c
}

// CreateTopic creates a topic with the given partitions (replication 1).
func CreateTopic(brokers []string, topic string, partitions int) error {
	adm, err := sarama.NewClusterAdmin(brokers, config("sluice-bench"))
	if err != nil {
		return fmt.Errorf("kafka admin: %w", err)
	}
	defer adm.Close()
	err = adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: int32(partitions), ReplicationFactor: 1}, false)
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// DeleteTopic deletes a topic the bench created (benchmarks produce
// gigabytes; leaving them would fill the broker's disk).
func DeleteTopic(brokers []string, topic string) error {
	adm, err := sarama.NewClusterAdmin(brokers, config("sluice-bench"))
	if err != nil {
		return fmt.Errorf("kafka admin: %w", err)
	}
	defer adm.Close()
	if err := adm.DeleteTopic(topic); err != nil && !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return fmt.Errorf("delete topic %s: %w", topic, err)
	}
	return nil
}

// Produce writes ev to topic as CloudEvents in Kafka binary content mode
// (ce_ headers, the partition key as record key). Event i goes to partition
// KeyIndex(i) mod partitions, so partitions get equal shares and a key
// lives in one partition.
func Produce(ctx context.Context, brokers []string, topic string, partitions int, ev Events, progress *harness.Progress) error {
	p, err := sarama.NewAsyncProducer(brokers, producerConfig(ev))
	if err != nil {
		return fmt.Errorf("kafka producer: %w", err)
	}
	var acked atomic.Int64
	stop := progress.Track("produce "+topic, int64(ev.N), acked.Load)
	defer stop()

	// The feeder is owned by Produce: it stops after the last event or when
	// feedCtx ends, and Produce waits for it before closing the producer.
	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for i := 0; i < ev.N; i++ {
			select {
			case p.Input() <- record(topic, partitions, ev, i):
			case <-feedCtx.Done():
				return
			}
		}
	}()
	var firstErr error
	for n := 0; n < ev.N && firstErr == nil; {
		select {
		case <-p.Successes():
			n++
			acked.Add(1)
		case perr := <-p.Errors():
			firstErr = fmt.Errorf("produce to %s: %w", topic, perr.Err)
		case <-ctx.Done():
			firstErr = ctx.Err()
		}
	}
	if firstErr == nil {
		<-fed
		if err := p.Close(); err != nil {
			return fmt.Errorf("close producer: %w", err)
		}
		return nil
	}
	// Stop the feeder, draining so that it cannot stay blocked on Input,
	// then close the producer and drain it to the end.
	stopFeed()
	for running := true; running; {
		select {
		case <-fed:
			running = false
		case <-p.Successes():
		case <-p.Errors():
		}
	}
	p.AsyncClose()
	for s, e := p.Successes(), p.Errors(); s != nil || e != nil; {
		select {
		case _, ok := <-s:
			if !ok {
				s = nil
			}
		case _, ok := <-e:
			if !ok {
				e = nil
			}
		}
	}
	return firstErr
}

// producerConfig is Produce's sarama configuration for ev.
func producerConfig(ev Events) *sarama.Config {
	cfg := config("sluice-bench-producer")
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.RequiredAcks = sarama.WaitForLocal
	cfg.Producer.Return.Successes = true
	cfg.Producer.Flush.Bytes = 1 << 20
	cfg.Producer.Flush.Frequency = 5 * time.Millisecond
	if ev.MaxBatchBytes > 0 {
		cfg.Producer.MaxMessageBytes = ev.MaxBatchBytes
	}
	return cfg
}

func record(topic string, partitions int, ev Events, i int) *sarama.ProducerMessage {
	key := ev.Key(i)
	h := func(k, v string) sarama.RecordHeader { return sarama.RecordHeader{Key: []byte(k), Value: []byte(v)} }
	return &sarama.ProducerMessage{
		Topic:     topic,
		Partition: int32(ev.KeyIndex(i) % partitions),
		Key:       sarama.StringEncoder(key),
		Value:     sarama.ByteEncoder(ev.Data(i)),
		Headers: []sarama.RecordHeader{
			h(kafkace.HeaderPrefix+"specversion", "1.0"),
			h(kafkace.HeaderPrefix+"id", ev.ID(i)),
			h(kafkace.HeaderPrefix+"source", Source),
			h(kafkace.HeaderPrefix+"type", Type),
			h(kafkace.HeaderPrefix+kafkace.PartitionKeyExtension, key),
			h(kafkace.ContentTypeHeader, ContentType),
		},
	}
}
