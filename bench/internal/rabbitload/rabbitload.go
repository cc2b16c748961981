// Package rabbitload holds the RabbitMQ side of the benchmarks: B1's
// synthetic events as AMQP messages, queue setup and pre-production with
// publisher confirms, and the raw-consume baseline (amqp091-go, the client
// Sluice's RabbitMQ source uses). Everything here runs inside the bench
// process; every function leaves no goroutine of its own behind.
package rabbitload

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/kafkaload"
	"github.com/sluicehq/sluice/bench/internal/procs"
	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpce"
)

// Publishing is event i of ev as a binary-mode CloudEvent of the AMQP
// binding: cloudEvents_ headers for the attributes and the partition key,
// the content-type property, the id as message-id, persistent, the JSON
// data as the body. The attributes and data are those kafkaload.Events
// gives the Kafka records and raw-http's requests.
func Publishing(ev kafkaload.Events, i int) amqp.Publishing {
	id := ev.ID(i)
	return amqp.Publishing{
		Headers: amqp.Table{
			amqpce.Prefix + "specversion":  "1.0",
			amqpce.Prefix + "id":           id,
			amqpce.Prefix + "source":       kafkaload.Source,
			amqpce.Prefix + "type":         kafkaload.Type,
			amqpce.Prefix + "partitionkey": ev.Key(i),
		},
		ContentType:  kafkaload.ContentType,
		DeliveryMode: amqp.Persistent,
		MessageId:    id,
		Body:         ev.Data(i),
	}
}

// DeclareQueue declares a durable classic queue (the broker's default type,
// which Sluice's source checks passively when its pipeline has no declare).
func DeclareQueue(url, queue string) error {
	return withChannel(url, func(ch *amqp.Channel) error {
		if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare queue %s: %w", queue, err)
		}
		return nil
	})
}

// DeleteQueue deletes a queue the bench declared, with whatever it still
// holds (a failed run may leave a backlog of 100 MiB behind).
func DeleteQueue(url, queue string) error {
	return withChannel(url, func(ch *amqp.Channel) error {
		if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
			return fmt.Errorf("delete queue %s: %w", queue, err)
		}
		return nil
	})
}

func withChannel(url string, f func(*amqp.Channel) error) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq channel: %w", err)
	}
	return f(ch)
}

// unconfirmed bounds the publishes awaiting a confirm while producing: it
// keeps the pipe to the broker full without an unbounded send buffer.
const unconfirmed = 1024

// Produce publishes ev to queue through the default exchange, on one
// channel in confirm mode, and returns once the broker confirmed every
// message. A negative confirm (basic.nack) is an error: the backlog would
// be short.
func Produce(ctx context.Context, url, queue string, ev kafkaload.Events, progress *harness.Progress) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	// The library delivers one confirmation per publish, in order; the
	// buffer holds all that can be outstanding, so its reader never blocks.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, unconfirmed))
	var acked atomic.Int64
	stop := progress.Track("produce "+queue, int64(ev.N), acked.Load)
	defer stop()
	await := func() error {
		select {
		case c, ok := <-confirms:
			if !ok {
				return fmt.Errorf("produce to %s: channel closed after %d confirms", queue, acked.Load())
			}
			if !c.Ack {
				return fmt.Errorf("produce to %s: broker nacked publish %d", queue, c.DeliveryTag)
			}
			acked.Add(1)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i := range ev.N {
		if i-int(acked.Load()) >= unconfirmed {
			if err := await(); err != nil {
				return err
			}
		}
		if err := ch.PublishWithContext(ctx, "", queue, false, false, Publishing(ev, i)); err != nil {
			return fmt.Errorf("produce to %s: %w", queue, err)
		}
	}
	for acked.Load() < int64(ev.N) {
		if err := await(); err != nil {
			return err
		}
	}
	return nil
}

// RawConsume reads n messages of queue with manual acknowledgements and a
// prefetch (basic.qos) of prefetch, and acknowledges each one on its own
// (basic.ack, not multiple), as Sluice's source does — nothing else: the
// ceiling of the source side. Its clock runs from the first delivery to
// the n-th ack, and CPU is the bench process's in between.
func RawConsume(ctx context.Context, url, queue string, n int64, prefetch int, label string, progress *harness.Progress) (kafkaload.Result, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return kafkaload.Result{}, fmt.Errorf("%s: %w", label, err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return kafkaload.Result{}, fmt.Errorf("%s: channel: %w", label, err)
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return kafkaload.Result{}, fmt.Errorf("%s: qos: %w", label, err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	deliveries, err := ch.Consume(queue, "sluice-bench-raw", false, false, false, false, nil)
	if err != nil {
		return kafkaload.Result{}, fmt.Errorf("%s: consume: %w", label, err)
	}
	var count atomic.Int64
	stop := progress.Track(label, n, count.Load)
	defer stop()
	var r kafkaload.Result
	var cpu0 float64
	for count.Load() < n {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return r, fmt.Errorf("%s: deliveries ended after %d of %d: %w", label, count.Load(), n, endReason(closed))
			}
			if r.First.IsZero() {
				r.First = time.Now()
				u, _ := procs.ReadUsage(0)
				cpu0 = u.CPUSeconds
			}
			if err := d.Ack(false); err != nil {
				return r, fmt.Errorf("%s: ack: %w", label, err)
			}
			count.Add(1)
		case <-ctx.Done():
			return r, fmt.Errorf("%s: stopped after %d of %d events: %w", label, count.Load(), n, ctx.Err())
		}
	}
	r.Last = time.Now()
	u, _ := procs.ReadUsage(0)
	r.Events, r.CPUSeconds = n, u.CPUSeconds-cpu0
	return r, nil
}

// endReason is why the channel closed, if the broker said so.
func endReason(closed <-chan *amqp.Error) error {
	select {
	case e, ok := <-closed:
		if ok && e != nil {
			return e
		}
	default:
	}
	return errors.New("consumer cancelled or channel closed")
}
