// Command rabbitctl is the RabbitMQ companion of examples/rabbitmq: it
// declares the example's result queues, publishes CloudEvents (binary
// content mode, persistent, confirmed) and reads queues back.
//
//	rabbitctl setup                      declare order-results and orders-dlq
//	rabbitctl publish -n 100 -poison 3   publish order events to exchange shop
//	rabbitctl read -queue order-results  print and remove what a queue holds
//
// The broker URL comes from -url or SLUICE_RABBITMQ_URL.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpce"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rabbitctl:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: rabbitctl setup|publish|read [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	url := fs.String("url", os.Getenv("SLUICE_RABBITMQ_URL"), "AMQP URL (default $SLUICE_RABBITMQ_URL)")
	n := fs.Int("n", 10, "publish: number of events")
	poison := fs.Int("poison", 0, "publish: how many of them get a poison- id (the example function rejects those)")
	exchange := fs.String("exchange", "shop", "publish: exchange")
	queue := fs.String("queue", "order-results", "read: queue")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *url == "" {
		*url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	conn, err := amqp.Dial(*url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	switch args[0] {
	case "setup":
		for _, q := range []string{"order-results", "orders-dlq"} {
			if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "declared", q)
		}
		return nil
	case "publish":
		return publish(ch, *exchange, *n, *poison, stdout)
	case "read":
		return read(ch, *queue, stdout)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func publish(ch *amqp.Channel, exchange string, n, poison int, stdout io.Writer) error {
	if err := ch.Confirm(false); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var confirms []*amqp.DeferredConfirmation
	for i := range n {
		id := fmt.Sprintf("order-%05d", i)
		if i < poison {
			id = fmt.Sprintf("poison-%05d", i)
		}
		customer := fmt.Sprintf("customer-%d", i%7)
		ev := cloudevents.NewEvent()
		ev.SetID(id)
		ev.SetSource("/examples/rabbitmq")
		ev.SetType("com.acme.order.created")
		ev.SetExtension("partitionkey", customer)
		if err := ev.SetData(cloudevents.ApplicationJSON, map[string]any{"id": id, "customer": customer, "amount": 10 + i}); err != nil {
			return err
		}
		p, err := amqpce.Encode(ev)
		if err != nil {
			return err
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, "order.created", true, false, p)
		if err != nil {
			return err
		}
		confirms = append(confirms, dc)
	}
	for _, dc := range confirms {
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			return fmt.Errorf("publish not confirmed (ack=%v): %v", ok, err)
		}
	}
	fmt.Fprintf(stdout, "published %d events to exchange %s\n", n, exchange)
	return nil
}

func read(ch *amqp.Channel, queue string, stdout io.Writer) error {
	count := 0
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			return err
		}
		if !ok {
			fmt.Fprintf(stdout, "%d messages read from %s\n", count, queue)
			return nil
		}
		count++
		ev, err := amqpce.DecodeDelivery(&d)
		if err != nil {
			fmt.Fprintf(stdout, "not a CloudEvent: %v\n", err)
			continue
		}
		reason := ""
		if r, ok := ev.Extensions()["sluicereason"]; ok {
			reason = fmt.Sprintf(" reason=%v", r)
		}
		fmt.Fprintf(stdout, "%s %s %s%s\n", ev.ID(), ev.Type(), ev.Data(), reason)
	}
}
