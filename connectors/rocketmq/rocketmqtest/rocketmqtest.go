// Package rocketmqtest provides RocketMQ helpers for tests that run against
// the real broker (see internal/testenv): send CloudEvents or raw messages
// to chosen queues, and read topics back. It is a test helper: only _test.go
// files import it. Every helper fails the test on error.
//
// The helpers speak the remoting protocol directly (package rmqwire) rather
// than through the client library: the library's background goroutines
// outlive Shutdown and race with it (an unsynchronised "closed" flag), which
// the race detector reports in whatever test happens to run.
package rocketmqtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/rocketmq/rmqwire"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
)

// timeout only stops a hung test.
const timeout = 90 * time.Second

// queueRef is one queue of a topic.
type queueRef struct {
	broker string // master address
	id     int
}

// queues returns the topic's queues sorted by broker name and id, waiting
// for the route (a topic the broker created by itself, such as a %DLQ%
// topic, reaches the name server only with the broker's next registration).
func queues(t testing.TB, nameServers []string, topic string) []queueRef {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		bqs, err := rmqwire.Client{}.Route(ctx, nameServers, topic)
		if err == nil {
			var out []queueRef
			for _, bq := range bqs { // sorted by name
				for q := range bq.Queues {
					out = append(out, queueRef{bq.Addr, q})
				}
			}
			return out
		}
		if !errors.Is(err, rmqwire.ErrNoRoute) || ctx.Err() != nil {
			t.Fatalf("rocketmqtest: route of %s: %v", topic, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// Producer sends messages to chosen queues of topics.
type Producer struct {
	ns     []string
	routes map[string][]queueRef
}

// SendResult is where a message was stored.
type SendResult struct {
	MsgID       string // the UNIQ_KEY property
	QueueOffset int64
}

// NewProducer returns a producer for the name servers.
func NewProducer(t testing.TB, nameServers []string) *Producer {
	t.Helper()
	return &Producer{ns: nameServers, routes: map[string][]queueRef{}}
}

// Send stores m in the queue with index queue (modulo the topic's queue
// count, queues sorted by broker and id).
func (p *Producer) Send(t testing.TB, m *primitive.Message, queue int) SendResult {
	t.Helper()
	qs, ok := p.routes[m.Topic]
	if !ok {
		qs = queues(t, p.ns, m.Topic)
		p.routes[m.Topic] = qs
	}
	q := qs[queue%len(qs)]
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	id, off, err := rmqwire.Client{}.Send(ctx, q.broker, m.Topic, q.id, m)
	if err != nil {
		t.Fatalf("rocketmqtest: %v", err)
	}
	return SendResult{MsgID: id, QueueOffset: off}
}

// Message encodes ev in the binary content mode (rocketmqce.Encode; KEYS
// from the partitionkey extension).
func Message(t testing.TB, topic string, ev cloudevents.Event) *primitive.Message {
	t.Helper()
	enc, err := rocketmqce.Encode(ev, "")
	if err != nil {
		t.Fatalf("rocketmqtest: encode %s: %v", ev.ID(), err)
	}
	m := primitive.NewMessage(topic, enc.Body)
	m.WithProperties(enc.Properties)
	if enc.Key != "" {
		m.WithKeys([]string{enc.Key})
	}
	return m
}

// PublishEvents sends events in binary mode, event i to queue i % queues,
// so the order within each queue is the slice order.
func PublishEvents(t testing.TB, nameServers []string, topic string, queues int, evs []cloudevents.Event) {
	t.Helper()
	p := NewProducer(t, nameServers)
	for i, ev := range evs {
		p.Send(t, Message(t, topic, ev), i%queues)
	}
}

// ReadMessages reads the first n messages of topic from the earliest
// offset of each queue, in queue order within each queue. It commits
// nothing.
func ReadMessages(t testing.TB, nameServers []string, topic string, n int) []*primitive.MessageExt {
	t.Helper()
	qs := queues(t, nameServers, topic)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	next := make([]int64, len(qs))
	var out []*primitive.MessageExt
	for len(out) < n {
		got := 0
		for i, q := range qs {
			msgs, nx, err := rmqwire.Client{}.Pull(ctx, q.broker, "rocketmqtest-reader", topic, q.id, next[i], 32)
			if err != nil {
				t.Fatalf("rocketmqtest: %v", err)
			}
			next[i] = nx
			for _, m := range msgs {
				m.Queue = &primitive.MessageQueue{Topic: topic, QueueId: q.id}
			}
			out = append(out, msgs...)
			got += len(msgs)
		}
		if got > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			t.Fatalf("rocketmqtest: read %d messages from %s, want %d (next offsets per queue %v of %v)", len(out), topic, n, next, qs)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return out[:n]
}

// Decode reads a message as a CloudEvent (rocketmqce.Decode); a message
// that is not one fails the test.
func Decode(t testing.TB, m *primitive.MessageExt) cloudevents.Event {
	t.Helper()
	ev, ok, err := rocketmqce.Decode(m.GetProperties(), "", m.Body)
	if !ok || err != nil {
		t.Fatalf("rocketmqtest: message %s is not a CloudEvent (ok=%v): %v", m.MsgId, ok, err)
	}
	return ev
}

// ReadEvents reads the first n messages of topic and decodes them.
func ReadEvents(t testing.TB, nameServers []string, topic string, n int) []cloudevents.Event {
	t.Helper()
	msgs := ReadMessages(t, nameServers, topic, n)
	evs := make([]cloudevents.Event, len(msgs))
	for i, m := range msgs {
		evs[i] = Decode(t, m)
	}
	return evs
}
