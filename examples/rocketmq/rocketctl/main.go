// Command rocketctl sends test CloudEvents to a RocketMQ topic and prints
// the CloudEvents in a topic, for the RocketMQ example (see README.md).
//
//	rocketctl send [-namesrv A] [-topic orders] [-n 100] [-poison 3] [-customers 10]
//	rocketctl read [-namesrv A] [-topic order-results]
//
// It speaks the remoting protocol directly (connectors/rocketmq/rmqwire),
// without a client library, and reads every queue from its first offset
// without a consumer group.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/rocketmq/rmqwire"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "rocketctl:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: rocketctl send|read [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	namesrv := fs.String("namesrv", "127.0.0.1:9876", "name server address")
	topic := fs.String("topic", "", "topic (send: orders, read: order-results)")
	n := fs.Int("n", 100, "send: events to send")
	poison := fs.Int("poison", 0, "send: events whose id starts with poison- (the example function rejects them)")
	customers := fs.Int("customers", 10, "send: distinct customers (message keys)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch args[0] {
	case "send":
		if *topic == "" {
			*topic = "orders"
		}
		return send(ctx, *namesrv, *topic, *n, *poison, *customers)
	case "read":
		if *topic == "" {
			*topic = "order-results"
		}
		return read(ctx, *namesrv, *topic)
	}
	return fmt.Errorf("unknown command %q: want send or read", args[0])
}

func send(ctx context.Context, namesrv, topic string, n, poison, customers int) error {
	bqs, err := rmqwire.Client{}.Route(ctx, []string{namesrv}, topic)
	if err != nil {
		return err
	}
	run := time.Now().Format("150405")
	for i := range n {
		id := fmt.Sprintf("order-%s-%04d", run, i)
		if i < poison {
			id = "poison-" + id
		}
		customer := fmt.Sprintf("customer-%d", i%max(customers, 1))
		ev := cloudevents.NewEvent()
		ev.SetID(id)
		ev.SetSource("/rocketctl")
		ev.SetType("com.example.order.created")
		ev.SetExtension("partitionkey", customer)
		if err := ev.SetData(cloudevents.ApplicationJSON, map[string]any{"order": i, "customer": customer}); err != nil {
			return err
		}
		enc, err := rocketmqce.Encode(ev, "")
		if err != nil {
			return err
		}
		m := primitive.NewMessage(topic, enc.Body)
		m.WithProperties(enc.Properties)
		m.WithKeys([]string{enc.Key})
		tag := "created"
		if i%10 == 9 {
			tag = "shipped" // filtered out by the example's tag expression
		}
		m.WithTag(tag)
		// One customer, one queue: their order is kept.
		bq := bqs[i%max(customers, 1)%len(bqs)]
		q := (i % max(customers, 1)) % bq.Queues
		if _, _, err := (rmqwire.Client{}).Send(ctx, bq.Addr, topic, q, m); err != nil {
			return err
		}
	}
	fmt.Printf("sent %d events to %s (%d poison)\n", n, topic, poison)
	return nil
}

func read(ctx context.Context, namesrv, topic string) error {
	bqs, err := rmqwire.Client{}.Route(ctx, []string{namesrv}, topic)
	if err != nil {
		return err
	}
	count := 0
	for _, bq := range bqs {
		for q := range bq.Queues {
			for off := int64(0); ; {
				msgs, next, err := rmqwire.Client{}.Pull(ctx, bq.Addr, "rocketctl", topic, q, off, 32)
				if err != nil {
					return err
				}
				if len(msgs) == 0 {
					break
				}
				off = next
				for _, m := range msgs {
					count++
					ev, ok, err := rocketmqce.Decode(m.GetProperties(), "", m.Body)
					switch {
					case err != nil:
						fmt.Printf("%s/%d@%d: broken CloudEvent: %v\n", bq.Name, q, m.QueueOffset, err)
					case !ok:
						fmt.Printf("%s/%d@%d: %s\n", bq.Name, q, m.QueueOffset, m.Body)
					default:
						reason := ""
						if r, ok := ev.Extensions()["sluicereason"]; ok {
							reason = fmt.Sprintf(" reason=%q", r)
						}
						fmt.Printf("%s/%d@%d: %s %s%s %s\n", bq.Name, q, m.QueueOffset, ev.Type(), ev.ID(), reason, ev.Data())
					}
				}
			}
		}
	}
	fmt.Printf("%d messages in %s\n", count, topic)
	return nil
}
