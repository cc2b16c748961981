// Package rabbittest provisions queues and publishes and reads messages on
// the real RabbitMQ for tests of the RabbitMQ source and sink. It is a test
// helper: only _test.go files import it.
package rabbittest

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpce"
)

// opTimeout only stops a hung test.
const opTimeout = 60 * time.Second

// Dial opens a connection closed when the test ends.
func Dial(t testing.TB, url string) *amqp.Connection {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("rabbittest: dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Channel opens a channel on a fresh connection, both closed when the test
// ends.
func Channel(t testing.TB, url string) *amqp.Channel {
	t.Helper()
	ch, err := Dial(t, url).Channel()
	if err != nil {
		t.Fatalf("rabbittest: channel: %v", err)
	}
	return ch
}

// tempChannel opens a channel on a fresh connection; the caller calls
// done to close both (helpers leave no connection behind, so that leak
// checks after them pass).
func tempChannel(t testing.TB, url string) (ch *amqp.Channel, done func()) {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("rabbittest: dial: %v", err)
	}
	ch, err = c.Channel()
	if err != nil {
		c.Close()
		t.Fatalf("rabbittest: channel: %v", err)
	}
	return ch, func() { _ = c.Close() }
}

// DeclareQueue declares a durable queue with the given arguments and
// deletes it when the test ends.
func DeclareQueue(t testing.TB, url, name string, args amqp.Table) {
	t.Helper()
	ch, done := tempChannel(t, url)
	defer done()
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		t.Fatalf("rabbittest: declare queue %s: %v", name, err)
	}
	DeleteAtCleanup(t, url, name)
}

// DeleteAtCleanup deletes the queue when the test ends (on its own
// connection, so that a test's broken connections do not matter).
func DeleteAtCleanup(t testing.TB, url, queue string) {
	t.Helper()
	t.Cleanup(func() {
		c, err := amqp.Dial(url)
		if err != nil {
			return
		}
		defer c.Close()
		if ch, err := c.Channel(); err == nil {
			_, _ = ch.QueueDelete(queue, false, false, false)
		}
	})
}

// Publish publishes messages in order with publisher confirms and fails
// the test unless the broker confirms and routes every one.
func Publish(t testing.TB, url, exchange, key string, msgs []amqp.Publishing) {
	t.Helper()
	ch, done := tempChannel(t, url)
	defer done()
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("rabbittest: confirm mode: %v", err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, len(msgs)))
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	confirms := make([]*amqp.DeferredConfirmation, len(msgs))
	for i, m := range msgs {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, m)
		if err != nil {
			t.Fatalf("rabbittest: publish %d: %v", i, err)
		}
		confirms[i] = dc
	}
	for i, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		if err != nil || !ok {
			t.Fatalf("rabbittest: publish %d not confirmed (ack=%v): %v", i, ok, err)
		}
	}
	select {
	case r := <-returns:
		t.Fatalf("rabbittest: message %q returned: %d %s", r.MessageId, r.ReplyCode, r.ReplyText)
	default:
	}
}

// PublishEvents publishes events in binary content mode.
func PublishEvents(t testing.TB, url, exchange, key string, events []cloudevents.Event) {
	t.Helper()
	msgs := make([]amqp.Publishing, len(events))
	for i, ev := range events {
		p, err := amqpce.Encode(ev)
		if err != nil {
			t.Fatalf("rabbittest: encode %s: %v", ev.ID(), err)
		}
		msgs[i] = p
	}
	Publish(t, url, exchange, key, msgs)
}

// Get takes n messages from queue with basic.get (acknowledging them),
// waiting for them to arrive.
func Get(t testing.TB, url, queue string, n int) []amqp.Delivery {
	t.Helper()
	ch, done := tempChannel(t, url)
	defer done()
	deadline := time.Now().Add(opTimeout)
	out := make([]amqp.Delivery, 0, n)
	for len(out) < n {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatalf("rabbittest: get from %s: %v", queue, err)
		}
		if !ok {
			if time.Now().After(deadline) {
				t.Fatalf("rabbittest: %d of %d messages arrived in %s", len(out), n, queue)
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		out = append(out, d)
	}
	return out
}

// ReadEvents takes n messages from queue and decodes them as CloudEvents.
func ReadEvents(t testing.TB, url, queue string, n int) []cloudevents.Event {
	t.Helper()
	ds := Get(t, url, queue, n)
	evs := make([]cloudevents.Event, len(ds))
	for i := range ds {
		ev, err := amqpce.DecodeDelivery(&ds[i])
		if err != nil {
			t.Fatalf("rabbittest: message %d of %s: %v", i, queue, err)
		}
		evs[i] = ev
	}
	return evs
}

// Depth returns the number of ready messages in queue.
func Depth(t testing.TB, url, queue string) int {
	t.Helper()
	ch, done := tempChannel(t, url)
	defer done()
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatalf("rabbittest: inspect %s: %v", queue, err)
	}
	return q.Messages
}

// KillConnections closes, from the broker side (rabbitmqctl
// close_connection: 320 CONNECTION_FORCED, as in a broker failover), every
// connection whose client properties mention marker, and returns how many
// it closed. Other clients' connections are left alone.
func KillConnections(t testing.TB, marker string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "list_connections", "pid", "client_properties").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbittest: rabbitmqctl list_connections: %v\n%s", err, out)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, marker) {
			continue
		}
		pid, _, _ := strings.Cut(line, "\t")
		if o, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "close_connection", pid, "sluice fault test").CombinedOutput(); err != nil {
			t.Fatalf("rabbittest: rabbitmqctl close_connection %s: %v\n%s", pid, err, o)
		}
		n++
	}
	return n
}

// Unacked returns how many of queue's messages the broker has delivered
// and not had acknowledged (rabbitmqctl list_queues
// messages_unacknowledged), on the default vhost.
func Unacked(t testing.TB, queue string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "list_queues", "name", "messages_unacknowledged").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbittest: rabbitmqctl list_queues: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, n, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok || name != queue {
			continue
		}
		v, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil {
			t.Fatalf("rabbittest: list_queues line %q: %v", line, err)
		}
		return v
	}
	t.Fatalf("rabbittest: queue %s not listed by rabbitmqctl", queue)
	return 0
}
