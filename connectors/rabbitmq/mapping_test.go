package rabbitmq

import (
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpce"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/pipelines"
)

const testSource = "amqp://127.0.0.1:5672/%2F/orders"

func TestMappingWrap(t *testing.T) {
	m := newMapper("orders", testSource, "", pipelines.RabbitKeyFromRoutingKey)
	ts := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	now := time.Now()
	d := &amqp.Delivery{
		Exchange: "shop", RoutingKey: "order.created", Redelivered: true, MessageId: "m-1",
		Timestamp: ts, ContentType: "application/json", Body: []byte(`{"a":1}`),
	}
	msg := m.message(d, nil, now)
	if msg.DecodeErr != nil {
		t.Fatalf("DecodeErr = %v", msg.DecodeErr)
	}
	ev := msg.Event
	checks := []struct {
		name      string
		got, want any
	}{
		{"id", ev.ID(), "m-1"},
		{"source", ev.Source(), testSource},
		{"type", ev.Type(), pipelines.DefaultRabbitEventType},
		{"subject", ev.Subject(), "order.created"},
		{"time", ev.Time().UTC(), ts},
		{"datacontenttype", ev.DataContentType(), "application/json"},
		{"data", string(ev.Data()), `{"a":1}`},
		{ExtExchange, ev.Extensions()[ExtExchange], "shop"},
		{ExtRoutingKey, ev.Extensions()[ExtRoutingKey], "order.created"},
		{ExtRedelivered, ev.Extensions()[ExtRedelivered], true},
		{ExtPartitionKey, ev.Extensions()[ExtPartitionKey], "order.created"},
		{"lane", msg.Lane, "orders"},
		{"key", msg.Key, "order.created"},
		{"coordinates", msg.Coordinates.System + "|" + msg.Coordinates.Topic + "|" + msg.Coordinates.ID, "rabbitmq|orders|m-1"},
		{"offset", msg.Coordinates.Offset, int64(-1)},
		{"size", msg.Size, 7},
		{"receivedAt", msg.ReceivedAt, now},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	if err := ev.Validate(); err != nil {
		t.Errorf("wrapped event invalid: %v", err)
	}
}

func TestMappingWrapMinimal(t *testing.T) {
	m := newMapper("q", testSource, "com.acme.raw", pipelines.RabbitKeyFromRoutingKey)
	msg := m.message(&amqp.Delivery{}, nil, time.Now()) // default exchange, no key, no body
	ev := msg.Event
	if err := ev.Validate(); err != nil {
		t.Fatalf("invalid: %v", err)
	}
	if ev.Type() != "com.acme.raw" || ev.DataContentType() != DefaultContentType || ev.Subject() != "" || !ev.Time().IsZero() {
		t.Errorf("event %v", ev)
	}
	for _, x := range []string{ExtExchange, ExtRoutingKey, ExtPartitionKey} {
		if _, ok := ev.Extensions()[x]; ok {
			t.Errorf("extension %s set on a message without it", x)
		}
	}
	if msg.Coordinates.ID != ev.ID() {
		t.Errorf("Coordinates.ID = %q, want the event id %q", msg.Coordinates.ID, ev.ID())
	}
}

// TestMessageIDStable: without a message-id, the id is the same on every
// delivery of a message (redelivery, another channel, a trip through a
// dead-letter exchange) and differs between different messages.
func TestMessageIDStable(t *testing.T) {
	ts := time.Unix(1700000000, 0)
	d1 := &amqp.Delivery{Body: []byte("payload"), Timestamp: ts, Exchange: "x", RoutingKey: "k", DeliveryTag: 1}
	d2 := &amqp.Delivery{Body: []byte("payload"), Timestamp: ts, Exchange: "dlx", RoutingKey: "retry", DeliveryTag: 99, Redelivered: true,
		Headers: amqp.Table{"x-death": []any{}}}
	if a, b := messageID(d1), messageID(d2); a != b {
		t.Errorf("ids differ across deliveries: %s %s", a, b)
	}
	for _, other := range []*amqp.Delivery{
		{Body: []byte("payload2"), Timestamp: ts},
		{Body: []byte("payload"), Timestamp: ts.Add(time.Second)},
		{Body: []byte("payload"), Timestamp: ts, CorrelationId: "c"},
		{Body: []byte("payload"), Timestamp: ts, Type: "t"},
	} {
		if messageID(other) == messageID(d1) {
			t.Errorf("different message %+v got the same id", other)
		}
	}
}

func TestMappingKeyFrom(t *testing.T) {
	d := &amqp.Delivery{RoutingKey: "rk", Headers: amqp.Table{"tenant": "acme", "n": int32(7), "raw": []byte("b")}}
	tests := []struct{ keyFrom, want string }{
		{pipelines.RabbitKeyFromRoutingKey, "rk"},
		{"", "rk"},
		{pipelines.RabbitKeyFromNone, ""},
		{"header:tenant", "acme"},
		{"header:n", "7"},
		{"header:raw", "b"},
		{"header:missing", ""},
	}
	for _, tt := range tests {
		m := newMapper("q", testSource, "", tt.keyFrom)
		if got := m.message(d, nil, time.Now()).Key; got != tt.want {
			t.Errorf("keyFrom %q: key = %q, want %q", tt.keyFrom, got, tt.want)
		}
	}
}

// TestMappingCloudEvents: binary CloudEvents are passed on unchanged (no
// broker extensions added); broken ones are wrapped with DecodeErr.
func TestMappingCloudEvents(t *testing.T) {
	m := newMapper("q", testSource, "", pipelines.RabbitKeyFromRoutingKey)
	want := cetest.Full(t, "ce-1")
	p, err := amqpce.Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	d := &amqp.Delivery{Headers: p.Headers, ContentType: p.ContentType, Body: p.Body, MessageId: p.MessageId, RoutingKey: "rk", Redelivered: true}
	msg := m.message(d, nil, time.Now())
	if msg.DecodeErr != nil {
		t.Fatal(msg.DecodeErr)
	}
	cetest.Equal(t, want, msg.Event)
	if msg.Key != "rk" || msg.Coordinates.ID != "ce-1" {
		t.Errorf("key %q, coordinates %+v", msg.Key, msg.Coordinates)
	}

	broken := &amqp.Delivery{
		Headers:   amqp.Table{amqpce.Prefix + "specversion": "1.0", amqpce.Prefix + "id": "b-1", amqpce.Prefix + "time": "not a time"},
		MessageId: "b-1", Body: []byte("raw"), RoutingKey: "rk",
	}
	bm := m.message(broken, nil, time.Now())
	if !errors.Is(bm.DecodeErr, amqpce.ErrInvalidCloudEvent) {
		t.Fatalf("DecodeErr = %v, want ErrInvalidCloudEvent", bm.DecodeErr)
	}
	if bm.Event.ID() != "b-1" || string(bm.Event.Data()) != "raw" || bm.Event.Validate() != nil {
		t.Errorf("broken message not wrapped: %v", bm.Event)
	}
}
