// Package kafkatest provides Kafka helpers for tests that run against the
// real broker (see internal/testenv): create topics, produce CloudEvents or
// raw records, and read topics back. It is a test helper: only _test.go files
// import it. Every helper fails the test on error and leaves no goroutine
// running when it returns.
package kafkatest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/kafka/kafkace"
)

// timeout only stops a hung test.
const timeout = 90 * time.Second

// Config returns the sarama configuration the helpers use.
func Config() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V4_0_0_0
	return c
}

// CreateTopic creates topic with the given number of partitions and waits
// until every partition has a leader.
func CreateTopic(t testing.TB, brokers []string, topic string, partitions int) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(brokers, Config())
	if err != nil {
		t.Fatalf("kafkatest: cluster admin: %v", err)
	}
	defer admin.Close()
	err = admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: int32(partitions), ReplicationFactor: 1}, false)
	if err != nil {
		t.Fatalf("kafkatest: create topic %s: %v", topic, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		md, err := admin.DescribeTopics([]string{topic})
		if err == nil && len(md) == 1 && errors.Is(md[0].Err, sarama.ErrNoError) && len(md[0].Partitions) == partitions {
			ready := true
			for _, p := range md[0].Partitions {
				ready = ready && p.Leader >= 0
			}
			if ready {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kafkatest: topic %s not ready: %v", topic, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Produce writes msgs (Partition is honoured: manual partitioner) and waits
// for acks=all.
func Produce(t testing.TB, brokers []string, msgs []*sarama.ProducerMessage) {
	t.Helper()
	c := Config()
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer(brokers, c)
	if err != nil {
		t.Fatalf("kafkatest: producer: %v", err)
	}
	defer p.Close()
	if err := p.SendMessages(msgs); err != nil {
		t.Fatalf("kafkatest: produce: %v", err)
	}
}

// ProduceEvents writes events in binary content mode (kafkace.Encode, key
// from the partitionkey extension), spreading them round-robin over
// partitions: event i goes to partition i % partitions, so the order within
// each partition is the slice order.
func ProduceEvents(t testing.TB, brokers []string, topic string, partitions int, evs []cloudevents.Event) {
	t.Helper()
	msgs := make([]*sarama.ProducerMessage, len(evs))
	for i, ev := range evs {
		rec, err := kafkace.Encode(ev, "")
		if err != nil {
			t.Fatalf("kafkatest: encode %s: %v", ev.ID(), err)
		}
		msgs[i] = &sarama.ProducerMessage{
			Topic:     topic,
			Partition: int32(i % partitions),
			Headers:   rec.Headers,
			Value:     sarama.ByteEncoder(rec.Value),
		}
		if rec.Key != nil {
			msgs[i].Key = sarama.ByteEncoder(rec.Key)
		}
	}
	Produce(t, brokers, msgs)
}

// ReadRecords reads the first n records of topic (all partitions, from the
// oldest offset), in partition order within each partition and arbitrary
// order across partitions.
func ReadRecords(t testing.TB, brokers []string, topic string, n int) []*sarama.ConsumerMessage {
	t.Helper()
	consumer, err := sarama.NewConsumer(brokers, Config())
	if err != nil {
		t.Fatalf("kafkatest: consumer: %v", err)
	}
	defer consumer.Close()
	parts, err := consumer.Partitions(topic)
	if err != nil {
		t.Fatalf("kafkatest: partitions of %s: %v", topic, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var (
		mu  sync.Mutex
		out []*sarama.ConsumerMessage
		wg  sync.WaitGroup
	)
	full := make(chan struct{})
	var fullOnce sync.Once
	for _, p := range parts {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatalf("kafkatest: consume %s/%d: %v", topic, p, err)
		}
		wg.Go(func() {
			defer pc.AsyncClose()
			for {
				select {
				case m := <-pc.Messages():
					mu.Lock()
					out = append(out, m)
					if len(out) >= n {
						fullOnce.Do(func() { close(full) })
					}
					mu.Unlock()
				case <-full:
					return
				case <-ctx.Done():
					return
				}
			}
		})
	}
	select {
	case <-full:
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(out) < n {
		t.Fatalf("kafkatest: read %d records from %s, want %d", len(out), topic, n)
	}
	return out[:n]
}

// ReadEvents reads the first n records of topic and decodes them as
// CloudEvents (kafkace.DecodeMessage).
func ReadEvents(t testing.TB, brokers []string, topic string, n int) []cloudevents.Event {
	t.Helper()
	recs := ReadRecords(t, brokers, topic, n)
	evs := make([]cloudevents.Event, len(recs))
	for i, r := range recs {
		ev, err := kafkace.DecodeMessage(r)
		if err != nil {
			t.Fatalf("kafkatest: %v", err)
		}
		evs[i] = ev
	}
	return evs
}

// Committed returns the offset group has committed for topic/partition, or
// -1 when none is.
func Committed(t testing.TB, brokers []string, group, topic string, partition int32) int64 {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(brokers, Config())
	if err != nil {
		t.Fatalf("kafkatest: cluster admin: %v", err)
	}
	defer admin.Close()
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {partition}})
	if err != nil {
		t.Fatalf("kafkatest: offsets of group %s: %v", group, err)
	}
	block := resp.GetBlock(topic, partition)
	if block == nil {
		return -1
	}
	return block.Offset
}
