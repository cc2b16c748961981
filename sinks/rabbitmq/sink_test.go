package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpce"
	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpconf"
	"github.com/sluicehq/sluice/connectors/rabbitmq/rabbittest"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks"
)

func write(t *testing.T, s *Sink, evs ...cloudevents.Event) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return s.Write(ctx, evs)
}

func closeAtEnd(t *testing.T, s *Sink) {
	t.Cleanup(func() { _ = s.Close(context.Background()) })
}

// TestPublishedMessage: properties of what the sink publishes.
func TestPublishedMessage(t *testing.T) {
	url := testenv.RabbitURL(t)
	q := testenv.UniqueName(t, "props")
	rabbittest.DeclareQueue(t, url, q, nil)
	s := newSink(t, pipelines.RabbitMQSink{URL: pipelines.NewSecret("", url), RoutingKey: q})
	closeAtEnd(t, s)
	ev := cetest.Full(t, "p-1")
	if err := write(t, s, ev); err != nil {
		t.Fatal(err)
	}
	d := rabbittest.Get(t, url, q, 1)[0]
	if d.MessageId != "p-1" || d.DeliveryMode != amqp.Persistent || d.ContentType != "application/json" || d.Headers[amqpce.Prefix+"id"] != "p-1" {
		t.Errorf("published %+v", d)
	}
}

// TestRoutingKeyFrom: the routing key comes from an event attribute, with
// the static routing key as fallback.
func TestRoutingKeyFrom(t *testing.T) {
	url := testenv.RabbitURL(t)
	x := testenv.UniqueName(t, "rx")
	eu, fallback := testenv.UniqueName(t, "eu"), testenv.UniqueName(t, "fb")
	ch := rabbittest.Channel(t, url)
	if err := ch.ExchangeDeclare(x, "direct", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	rabbittest.DeclareQueue(t, url, eu, nil)
	rabbittest.DeclareQueue(t, url, fallback, nil)
	for q, key := range map[string]string{eu: "eu", fallback: "other"} {
		if err := ch.QueueBind(q, key, x, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	s := newSink(t, pipelines.RabbitMQSink{URL: pipelines.NewSecret("", url), Exchange: x, RoutingKey: "other", RoutingKeyFrom: "extension:region"})
	closeAtEnd(t, s)
	a, b := cetest.New(t, "a", nil), cetest.New(t, "b", nil)
	a.SetExtension("region", "eu")
	if err := write(t, s, a, b); err != nil {
		t.Fatal(err)
	}
	if got := rabbittest.ReadEvents(t, url, eu, 1)[0].ID(); got != "a" {
		t.Errorf("queue eu got %s", got)
	}
	if got := rabbittest.ReadEvents(t, url, fallback, 1)[0].ID(); got != "b" {
		t.Errorf("fallback queue got %s", got)
	}

	for _, tt := range []struct{ from, want string }{
		{"type", cetest.Type}, {"source", cetest.Source}, {"id", "a"}, {"subject", "other"},
	} {
		got, err := routingKeyOf(a, pipelines.RabbitMQSink{RoutingKey: "other", RoutingKeyFrom: tt.from})
		if err != nil || got != tt.want {
			t.Errorf("routingKeyFrom %s = %q, %v; want %q", tt.from, got, err, tt.want)
		}
	}
}

// TestUnroutable: a message no queue is bound for fails the write
// (mandatory + basic.return), while the routable ones of the same write
// still arrive; the sink keeps working.
func TestUnroutable(t *testing.T) {
	url := testenv.RabbitURL(t)
	x := testenv.UniqueName(t, "ux")
	q := testenv.UniqueName(t, "uq")
	ch := rabbittest.Channel(t, url)
	if err := ch.ExchangeDeclare(x, "direct", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	rabbittest.DeclareQueue(t, url, q, nil)
	if err := ch.QueueBind(q, "ok", x, false, nil); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, pipelines.RabbitMQSink{URL: pipelines.NewSecret("", url), Exchange: x, RoutingKeyFrom: "subject"})
	closeAtEnd(t, s)
	evs := make([]cloudevents.Event, 6)
	for i := range evs {
		evs[i] = cetest.New(t, fmt.Sprintf("u-%d", i), nil)
		evs[i].SetSubject("ok")
	}
	evs[3].SetSubject("nowhere")
	err := write(t, s, evs...)
	if !errors.Is(err, ErrUnroutable) || !strings.Contains(err.Error(), `"u-3"`) || strings.Contains(err.Error(), `"u-2"`) {
		t.Fatalf("Write = %v, want ErrUnroutable naming u-3 only", err)
	}
	if got := rabbittest.ReadEvents(t, url, q, 5); len(got) != 5 {
		t.Errorf("got %d routable events", len(got))
	}
	if err := write(t, s, evs[0]); err != nil {
		t.Errorf("Write after an unroutable one: %v", err)
	}
}

// TestMissingExchange: publishing to an exchange that does not exist closes
// the channel (404); the write fails and the next one reconnects.
func TestMissingExchange(t *testing.T) {
	url := testenv.RabbitURL(t)
	s := newSink(t, pipelines.RabbitMQSink{URL: pipelines.NewSecret("", url), Exchange: testenv.UniqueName(t, "none"), RoutingKey: "k"})
	closeAtEnd(t, s)
	for i := range 2 {
		err := write(t, s, cetest.New(t, fmt.Sprintf("m-%d", i), nil))
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "NOT_FOUND") {
			t.Fatalf("attempt %d: Write = %v, want ErrUnavailable with NOT_FOUND", i, err)
		}
	}
	if err := s.Health(); err == nil {
		t.Errorf("Health = nil after the channel failed")
	}
}

// TestSinkReconnect: the broker closes the sink's connection; the next
// write reconnects and succeeds.
func TestSinkReconnect(t *testing.T) {
	url := testenv.RabbitURL(t)
	q := testenv.UniqueName(t, "rq")
	rabbittest.DeclareQueue(t, url, q, nil)
	s := newSink(t, pipelines.RabbitMQSink{URL: pipelines.NewSecret("", url), RoutingKey: q})
	closeAtEnd(t, s)
	if err := write(t, s, cetest.New(t, "before", nil)); err != nil {
		t.Fatal(err)
	}
	if n := rabbittest.KillConnections(t, q); n != 1 {
		t.Fatalf("closed %d connections, want 1", n)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := write(t, s, cetest.New(t, "after", nil))
		if err == nil {
			break
		}
		if !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Write after the connection was closed: %v", err)
		}
		t.Logf("write during reconnect: %v", err)
	}
	ids := map[string]bool{}
	for _, ev := range rabbittest.ReadEvents(t, url, q, 2) {
		ids[ev.ID()] = true
	}
	if !ids["before"] || !ids["after"] {
		t.Errorf("read back %v", ids)
	}
}

func TestSinkErrors(t *testing.T) {
	for _, spec := range []pipelines.RabbitMQSink{
		{URL: pipelines.NewSecret("", "amqp://h/")}, // default exchange without a routing key
		{URL: pipelines.NewSecret("", "amqp://h/"), RoutingKey: "q", RoutingKeyFrom: "time"},
		{URL: pipelines.NewSecret("", "ftp://h/"), RoutingKey: "q"},
	} {
		if _, err := New(spec, nil); !errors.Is(err, amqpconf.ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", spec, err)
		}
	}
	s := newSink(t, pipelines.RabbitMQSink{URL: pipelines.NewSecret("", "amqp://guest:guest@127.0.0.1:1/"), RoutingKey: "q"})
	bad := cloudevents.NewEvent()
	bad.SetID("no-source")
	if err := write(t, s, bad); !errors.Is(err, sinks.ErrRejected) {
		t.Errorf("Write of an invalid event = %v, want sinks.ErrRejected", err)
	}
	huge := cetest.New(t, "huge", nil)
	huge.SetData("application/octet-stream", make([]byte, MaxMessageSize+1))
	if err := write(t, s, huge); !errors.Is(err, sinks.ErrRejected) {
		t.Errorf("Write of a too large event = %v, want sinks.ErrRejected", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := write(t, s); !errors.Is(err, ErrClosed) {
		t.Errorf("empty Write after Close = %v, want ErrClosed", err)
	}
}
