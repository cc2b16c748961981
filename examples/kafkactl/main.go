// Command kafkactl is a small Kafka tool for the quickstart, examples and
// benchmarks: create topics, produce sample CloudEvents or plain records,
// and print what a topic holds.
//
//	kafkactl -brokers 127.0.0.1:9092 create  -topic orders -partitions 4
//	kafkactl -brokers 127.0.0.1:9092 produce -topic orders -n 20 [-poison 2] [-keys 5] [-plain]
//	kafkactl -brokers 127.0.0.1:9092 consume -topic orders-results [-n 20] [-timeout 30s]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kafkactl:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("kafkactl", flag.ContinueOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated broker list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return errors.New("usage: kafkactl [-brokers B] create|produce|consume [flags]")
	}
	bl := strings.Split(*brokers, ",")
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "create":
		return create(bl, rest, out)
	case "produce":
		return produce(bl, rest, out)
	case "consume":
		return consume(bl, rest, out)
	}
	return fmt.Errorf("unknown command %q", cmd)
}

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V3_6_0_0
	c.ClientID = "kafkactl"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	return c
}

func create(brokers, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	topic := fs.String("topic", "", "topic to create (comma-separated for several)")
	parts := fs.Int("partitions", 4, "partitions")
	if err := fs.Parse(args); err != nil {
		return err
	}
	adm, err := sarama.NewClusterAdmin(brokers, config())
	if err != nil {
		return err
	}
	defer adm.Close()
	for _, t := range strings.Split(*topic, ",") {
		err := adm.CreateTopic(t, &sarama.TopicDetail{NumPartitions: int32(*parts), ReplicationFactor: 1}, false)
		if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
			var te *sarama.TopicError
			if !errors.As(err, &te) || te.Err != sarama.ErrTopicAlreadyExists {
				return fmt.Errorf("create %s: %w", t, err)
			}
		}
		fmt.Fprintf(out, "topic %s ready (%d partitions)\n", t, *parts)
	}
	return nil
}

func produce(brokers, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("produce", flag.ContinueOnError)
	topic := fs.String("topic", "", "topic")
	n := fs.Int("n", 10, "events to produce")
	poison := fs.Int("poison", 0, "how many of them get an id starting with poison- (the example function rejects those)")
	keys := fs.Int("keys", 4, "distinct keys")
	plain := fs.Bool("plain", false, "produce plain JSON records instead of CloudEvents")
	prefix := fs.String("id-prefix", "order-", "event id prefix")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := sarama.NewSyncProducer(brokers, config())
	if err != nil {
		return err
	}
	defer p.Close()
	msgs := make([]*sarama.ProducerMessage, 0, *n)
	for i := 0; i < *n; i++ {
		id := fmt.Sprintf("%s%d", *prefix, i)
		if i < *poison {
			id = fmt.Sprintf("poison-%d", i)
		}
		key := fmt.Sprintf("customer-%d", i%max(*keys, 1))
		data, _ := json.Marshal(map[string]any{"id": id, "key": key, "seq": i, "amount": 10 + i})
		m := &sarama.ProducerMessage{Topic: *topic, Key: sarama.StringEncoder(key), Value: sarama.ByteEncoder(data)}
		if !*plain {
			m.Headers = []sarama.RecordHeader{
				{Key: []byte("ce_specversion"), Value: []byte("1.0")},
				{Key: []byte("ce_id"), Value: []byte(id)},
				{Key: []byte("ce_source"), Value: []byte("/quickstart/shop")},
				{Key: []byte("ce_type"), Value: []byte("com.acme.order.created")},
				{Key: []byte("ce_time"), Value: []byte(time.Now().UTC().Format(time.RFC3339Nano))},
				{Key: []byte("content-type"), Value: []byte("application/json")},
			}
		}
		msgs = append(msgs, m)
	}
	if err := p.SendMessages(msgs); err != nil {
		return err
	}
	fmt.Fprintf(out, "produced %d events to %s (%d poison)\n", *n, *topic, min(*poison, *n))
	return nil
}

func consume(brokers, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("consume", flag.ContinueOnError)
	topic := fs.String("topic", "", "topic")
	n := fs.Int("n", 0, "stop after this many records (0 = until timeout)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := sarama.NewConsumer(brokers, config())
	if err != nil {
		return err
	}
	defer c.Close()
	parts, err := c.Partitions(*topic)
	if err != nil {
		return err
	}
	recs := make(chan *sarama.ConsumerMessage)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	for _, part := range parts {
		pc, err := c.ConsumePartition(*topic, part, sarama.OffsetOldest)
		if err != nil {
			return err
		}
		defer pc.Close()
		go func() {
			for m := range pc.Messages() {
				select {
				case recs <- m:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	seen := 0
	for *n == 0 || seen < *n {
		select {
		case m := <-recs:
			seen++
			var hs []string
			for _, h := range m.Headers {
				if k := string(h.Key); strings.HasPrefix(k, "ce_") && k != "ce_specversion" && k != "ce_time" {
					hs = append(hs, strings.TrimPrefix(k, "ce_")+"="+string(h.Value))
				}
			}
			fmt.Fprintf(out, "%s/%d@%d key=%s %s\n    %s\n", m.Topic, m.Partition, m.Offset, m.Key, strings.Join(hs, " "), m.Value)
		case <-ctx.Done():
			if *n > 0 {
				return fmt.Errorf("timed out after %d of %d records", seen, *n)
			}
			return nil
		}
	}
	return nil
}
