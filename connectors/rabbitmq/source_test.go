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

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpconf"
	"github.com/sluicehq/sluice/connectors/rabbitmq/rabbittest"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
)

func makeEvents(t *testing.T, prefix string, n int) []cloudevents.Event {
	t.Helper()
	evs := make([]cloudevents.Event, n)
	for i := range evs {
		evs[i] = cetest.New(t, fmt.Sprintf("%s-%04d", prefix, i), map[string]int{"i": i})
	}
	return evs
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReconnectAfterConnectionKilled: the broker closes the source's
// connection mid-stream. The source reconnects; the acks of messages
// delivered on the dead channel report ErrRevoked and ack nothing (an old
// delivery tag acked on the new channel would make the broker close it with
// PRECONDITION_FAILED: the session count proves that never happened); those
// messages come back; in the end every message is acknowledged and the queue
// is empty.
func TestReconnectAfterConnectionKilled(t *testing.T) {
	url := testenv.RabbitURL(t)
	q := testenv.UniqueName(t, "kill")
	rabbittest.DeclareQueue(t, url, q, nil)
	const total, window, held = 300, 20, 8
	evs := makeEvents(t, q, total)
	rabbittest.PublishEvents(t, url, "", q, evs)

	name := testenv.UniqueName(t, "p")
	src := newTestSource(t, testSpec(url, q), connectors.Options{Window: window, Name: name})
	connect(t, src)

	acked := map[string]int{}
	seen := map[string]int{}
	var old []struct {
		msg *connectors.Message
		ack connectors.AckFunc
	}
	for range 50 {
		msg, ack := readOne(t, src)
		seen[msg.Event.ID()]++
		if len(old) < held {
			old = append(old, struct {
				msg *connectors.Message
				ack connectors.AckFunc
			}{msg, ack})
			continue
		}
		if err := ack(context.Background(), nil); err != nil {
			t.Fatalf("ack: %v", err)
		}
		acked[msg.Event.ID()]++
	}

	if n := rabbittest.KillConnections(t, name); n != 1 {
		t.Fatalf("closed %d connections, want 1", n)
	}
	for _, o := range old {
		select {
		case <-o.msg.Revoked:
		case <-time.After(60 * time.Second):
			t.Fatalf("Revoked of %s not closed after the connection was killed", o.msg.Event.ID())
		}
	}
	for _, o := range old {
		err := o.ack(context.Background(), nil)
		if !errors.Is(err, connectors.ErrRevoked) {
			t.Errorf("ack of %s from the dead channel = %v, want ErrRevoked", o.msg.Event.ID(), err)
		}
	}
	waitUntil(t, "reconnect", func() bool { return src.Health() == nil })

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for len(acked) < total {
		msg, ack, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("Read after reconnect (%d of %d acked): %v", len(acked), total, err)
		}
		seen[msg.Event.ID()]++
		if err := ack(context.Background(), nil); err != nil {
			t.Fatalf("ack after reconnect: %v", err)
		}
		acked[msg.Event.ID()]++
	}
	for _, o := range old {
		if seen[o.msg.Event.ID()] < 2 {
			t.Errorf("%s, unacknowledged when the connection died, was not redelivered", o.msg.Event.ID())
		}
	}
	src.mu.Lock()
	sessions := src.gen
	src.mu.Unlock()
	if sessions != 2 {
		t.Errorf("%d sessions opened, want 2 (a channel error after the reconnect means a stale tag was used)", sessions)
	}
	if err := src.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := rabbittest.Depth(t, url, q); d != 0 {
		t.Errorf("queue holds %d messages after every one was acknowledged", d)
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	t.Logf("%d messages, %d redeliveries after the kill (bound: window %d)", total, dups, window)
	if dups > window {
		t.Errorf("%d redeliveries, more than the window %d", dups, window)
	}
}

// TestNackPolicies: onNack requeue redelivers at once (marked redelivered);
// onNack dead-letter routes to the queue's dead-letter exchange.
func TestNackPolicies(t *testing.T) {
	url := testenv.RabbitURL(t)
	t.Run("requeue", func(t *testing.T) {
		q := testenv.UniqueName(t, "nq")
		rabbittest.DeclareQueue(t, url, q, nil)
		rabbittest.Publish(t, url, "", q, []amqp.Publishing{{MessageId: "plain-1", Body: []byte("x")}})
		src := newTestSource(t, testSpec(url, q), connectors.Options{})
		connect(t, src)
		msg, ack := readOne(t, src)
		if msg.Event.Extensions()[ExtRedelivered] != false {
			t.Errorf("first delivery redelivered = %v", msg.Event.Extensions()[ExtRedelivered])
		}
		if err := ack(context.Background(), errors.New("not now")); err != nil {
			t.Fatal(err)
		}
		again, ack2 := readOne(t, src)
		if again.Event.ID() != "plain-1" || again.Event.Extensions()[ExtRedelivered] != true {
			t.Errorf("redelivery %s redelivered=%v", again.Event.ID(), again.Event.Extensions()[ExtRedelivered])
		}
		if err := ack2(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		if err := ack2(context.Background(), nil); !errors.Is(err, ErrAckedTwice) {
			t.Errorf("second ack = %v, want ErrAckedTwice", err)
		}
	})
	t.Run("dead-letter", func(t *testing.T) {
		q, dlx, dlq := testenv.UniqueName(t, "dq"), testenv.UniqueName(t, "dlx"), testenv.UniqueName(t, "dlq")
		rabbittest.DeclareQueue(t, url, dlq, nil)
		spec := testSpec(url, q)
		spec.OnNack = pipelines.RabbitOnNackDeadLetter
		spec.Declare = &pipelines.RabbitMQDeclare{
			Queue:     pipelines.RabbitMQQueue{DeadLetterExchange: dlx},
			Exchanges: []pipelines.RabbitMQExchange{{Name: dlx, Type: "fanout"}},
		}
		src := newTestSource(t, spec, connectors.Options{})
		rabbittest.DeleteAtCleanup(t, url, q)
		t.Cleanup(func() { deleteExchange(t, url, dlx) })
		connect(t, src)
		ch := rabbittest.Channel(t, url)
		if err := ch.QueueBind(dlq, "", dlx, false, nil); err != nil {
			t.Fatal(err)
		}
		rabbittest.PublishEvents(t, url, "", q, makeEvents(t, "dl", 2))
		for range 2 {
			msg, ack := readOne(t, src)
			err := error(nil)
			if msg.Event.ID() == "dl-0001" {
				err = errors.New("give up")
			}
			if aerr := ack(context.Background(), err); aerr != nil {
				t.Fatal(aerr)
			}
		}
		got := rabbittest.ReadEvents(t, url, dlq, 1)
		if got[0].ID() != "dl-0001" {
			t.Errorf("dead-lettered %s, want dl-0001", got[0].ID())
		}
		if d := rabbittest.Depth(t, url, q); d != 0 {
			t.Errorf("source queue holds %d messages", d)
		}
	})
}

func deleteExchange(t *testing.T, url, name string) {
	c, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer c.Close()
	if ch, err := c.Channel(); err == nil {
		_ = ch.ExchangeDelete(name, false, false)
	}
}

// TestDeclareTopology: exchanges, a quorum queue with arguments and a
// binding are declared; a message published to the exchange arrives with
// its exchange and routing key mapped. A second Source redeclares the same
// topology without error (declaration is idempotent).
func TestDeclareTopology(t *testing.T) {
	url := testenv.RabbitURL(t)
	q, x := testenv.UniqueName(t, "tq"), testenv.UniqueName(t, "tx")
	spec := testSpec(url, q)
	spec.Declare = &pipelines.RabbitMQDeclare{
		Queue: pipelines.RabbitMQQueue{
			Type: pipelines.RabbitQueueQuorum, SingleActiveConsumer: true, DeliveryLimit: 3,
			MessageTTL: pipelines.Duration(time.Hour), DeadLetterExchange: x, DeadLetterRoutingKey: "dead",
		},
		Exchanges: []pipelines.RabbitMQExchange{{Name: x, Type: "topic"}},
		Bindings:  []pipelines.RabbitMQBinding{{Exchange: x, RoutingKey: "order.#"}},
	}
	rabbittest.DeleteAtCleanup(t, url, q)
	t.Cleanup(func() { deleteExchange(t, url, x) })
	src := newTestSource(t, spec, connectors.Options{})
	connect(t, src)
	rabbittest.Publish(t, url, x, "order.created", []amqp.Publishing{{MessageId: "m-1", Body: []byte("{}"), ContentType: "application/json"}})
	msg, ack := readOne(t, src)
	if msg.Event.Subject() != "order.created" || msg.Event.Extensions()[ExtExchange] != x || msg.Key != "order.created" {
		t.Errorf("event %v key %q", msg.Event, msg.Key)
	}
	if err := ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	again := newTestSource(t, spec, connectors.Options{})
	connect(t, again)
}

// TestSingleActiveConsumer: with x-single-active-consumer only one of two
// sources receives; when it closes, the other takes over, in queue order.
func TestSingleActiveConsumer(t *testing.T) {
	url := testenv.RabbitURL(t)
	q := testenv.UniqueName(t, "sac")
	spec := testSpec(url, q)
	spec.Declare = &pipelines.RabbitMQDeclare{Queue: pipelines.RabbitMQQueue{SingleActiveConsumer: true}}
	rabbittest.DeleteAtCleanup(t, url, q)
	a := newTestSource(t, spec, connectors.Options{Window: 5})
	connect(t, a)
	b := newTestSource(t, spec, connectors.Options{Window: 5})
	connect(t, b)
	evs := makeEvents(t, "sac", 10)
	rabbittest.PublishEvents(t, url, "", q, evs)
	for i := range 3 {
		msg, ack := readOne(t, a)
		if msg.Event.ID() != evs[i].ID() {
			t.Fatalf("active consumer got %s, want %s", msg.Event.ID(), evs[i].ID())
		}
		if err := ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if msg, _, err := b.Read(ctx); err == nil {
		t.Fatalf("standby consumer received %s", msg.Event.ID())
	}
	cancel()
	if err := a.Close(context.Background()); err == nil {
		t.Log("active consumer closed with its prefetched messages requeued")
	}
	for i := 3; i < len(evs); i++ {
		msg, ack := readOne(t, b)
		if msg.Event.ID() != evs[i].ID() {
			t.Fatalf("after takeover got %s, want %s (queue order)", msg.Event.ID(), evs[i].ID())
		}
		if err := ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConnectRetriesThenPermanent: a missing queue (passive check) is
// retried until it exists; a declaration conflicting with the existing
// queue and refused credentials fail Connect at once.
func TestConnectRetriesThenPermanent(t *testing.T) {
	url := testenv.RabbitURL(t)
	t.Run("missing queue appears", func(t *testing.T) {
		q := testenv.UniqueName(t, "late")
		src := newTestSource(t, testSpec(url, q), connectors.Options{})
		errc := make(chan error, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		go func() { errc <- src.Connect(ctx) }()
		waitUntil(t, "Health to report the missing queue", func() bool {
			err := src.Health()
			return err != nil && strings.Contains(err.Error(), "NOT_FOUND")
		})
		rabbittest.DeclareQueue(t, url, q, nil)
		if err := <-errc; err != nil {
			t.Fatalf("Connect: %v", err)
		}
		t.Cleanup(func() { _ = src.Close(context.Background()) })
		if err := src.Health(); err != nil {
			t.Errorf("Health after Connect: %v", err)
		}
	})
	t.Run("conflicting declaration", func(t *testing.T) {
		q := testenv.UniqueName(t, "conf")
		rabbittest.DeclareQueue(t, url, q, nil) // classic
		spec := testSpec(url, q)
		spec.Declare = &pipelines.RabbitMQDeclare{Queue: pipelines.RabbitMQQueue{Type: pipelines.RabbitQueueQuorum}}
		src := newTestSource(t, spec, connectors.Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		err := src.Connect(ctx)
		if err == nil || ctx.Err() != nil || !amqpconf.IsPermanent(err) {
			t.Fatalf("Connect = %v (ctx %v), want a permanent error at once", err, ctx.Err())
		}
		if err := src.Close(context.Background()); err != nil {
			t.Errorf("Close after a failed Connect: %v", err)
		}
	})
	t.Run("bad credentials", func(t *testing.T) {
		bad := strings.Replace(url, "guest:guest@", "guest:wrong@", 1)
		src := newTestSource(t, testSpec(bad, "any"), connectors.Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := src.Connect(ctx); err == nil || ctx.Err() != nil {
			t.Fatalf("Connect with a wrong password = %v (ctx %v), want a permanent error at once", err, ctx.Err())
		}
		_ = src.Close(context.Background())
	})
}

func TestNewErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		spec pipelines.RabbitMQSource
		opts connectors.Options
	}{
		{"no queue", pipelines.RabbitMQSource{URL: pipelines.NewSecret("", "amqp://h/")}, connectors.Options{}},
		{"bad url", pipelines.RabbitMQSource{URL: pipelines.NewSecret("", "http://h/"), Queue: "q"}, connectors.Options{}},
		{"window too large", testSpec("amqp://h/", "q"), connectors.Options{Window: 70000}},
		{"bad onNack", pipelines.RabbitMQSource{URL: pipelines.NewSecret("", "amqp://h/"), Queue: "q", OnNack: "drop"}, connectors.Options{}},
		{"missing CA file", pipelines.RabbitMQSource{URL: pipelines.NewSecret("", "amqps://h/"), Queue: "q", TLS: &pipelines.TLSSpec{Enabled: true, CAFile: "/nonexistent/ca.pem"}}, connectors.Options{}},
	} {
		if _, err := New(tt.spec, tt.opts, nil); !errors.Is(err, amqpconf.ErrConfig) {
			t.Errorf("%s: New = %v, want ErrConfig", tt.name, err)
		}
	}
}
