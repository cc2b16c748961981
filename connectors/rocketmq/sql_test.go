package rocketmq

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqtest"
)

// TestSQLSelector: the broker (scripts/brokers.sh runs it with
// enablePropertyFilter=true) evaluates an SQL92 selector over user
// properties, and the source gets exactly the matching messages, in queue
// order: numbers compared as numbers, a missing property never matches.
func TestSQLSelector(t *testing.T) {
	f := newFixture(t, 2)
	type props struct{ a, region string } // "" = property not set
	cases := []props{
		{"7", "eu"},  // match
		{"3", "eu"},  // a too small
		{"9", "us"},  // wrong region
		{"6", "eu"},  // match
		{"", "eu"},   // no a
		{"8", ""},    // no region
		{"5", "eu"},  // a > 5 is strict
		{"12", "eu"}, // match: 12 > 5 numerically ("12" < "5" as strings)
		{"10", "EU"}, // string comparison is case-sensitive
	}
	want := map[int]bool{0: true, 3: true, 7: true}
	evs := events(t, len(cases))
	p := rocketmqtest.NewProducer(t, f.ns)
	for i, c := range cases {
		m := rocketmqtest.Message(t, f.topic, evs[i])
		if c.a != "" {
			m.WithProperty("a", c.a)
		}
		if c.region != "" {
			m.WithProperty("region", c.region)
		}
		p.Send(t, m, i) // both queues hold matching and other messages
	}

	spec := f.spec()
	spec.SQL = "a > 5 AND region = 'eu'"
	src := newTestSource(t, spec, connectorsOptions(0))
	connect(t, src)
	got := map[int]bool{}
	lastInQueue := map[string]int{}
	for range want {
		msg, ack := readOne(t, src)
		i := eventIndex(t, evs, msg.Event.ID())
		if !want[i] || got[i] {
			t.Fatalf("got event %d (%+v), duplicate=%v; want each of %v once", i, cases[i], got[i], want)
		}
		got[i] = true
		if last, ok := lastInQueue[msg.Lane]; ok && last > i {
			t.Errorf("lane %s: event %d after %d", msg.Lane, i, last)
		}
		lastInQueue[msg.Lane] = i
		if err := ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	expectNothing(t, src, 3*time.Second)
}

// TestSQLSelectorInvalid: an expression the broker cannot compile fails
// Connect with ErrConfig carrying the broker's reason, instead of a
// consumer whose every pull the broker refuses.
func TestSQLSelectorInvalid(t *testing.T) {
	f := newFixture(t, 1)
	spec := f.spec()
	spec.SQL = "a > AND region"
	src := newTestSource(t, spec, connectorsOptions(0))
	defer func() { _ = src.Close(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := src.Connect(ctx)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "refuses the SQL92 subscription") ||
		!strings.Contains(err.Error(), "ParseException") || strings.Contains(err.Error(), "enablePropertyFilter") {
		t.Fatalf("Connect = %v, want ErrConfig: broker refuses the SQL92 subscription, with its ParseException and no hint at the broker setting", err)
	}
	t.Logf("Connect: %v", err)
}

// TestSQLSelectorOnCloudEventsAttributes: in binary mode every CloudEvents
// attribute is a ce_ property, so an SQL92 selector can filter on them.
func TestSQLSelectorOnCloudEventsAttributes(t *testing.T) {
	f := newFixture(t, 1)
	evs := events(t, 4)
	evs[1].SetType("com.example.order.paid")
	evs[3].SetType("com.example.order.paid")
	rocketmqtest.PublishEvents(t, f.ns, f.topic, 1, evs)
	spec := f.spec()
	spec.SQL = "ce_type = 'com.example.order.paid'"
	src := newTestSource(t, spec, connectorsOptions(0))
	connect(t, src)
	for _, want := range []int{1, 3} {
		msg, ack := readOne(t, src)
		if msg.Event.ID() != evs[want].ID() || msg.Event.Type() != "com.example.order.paid" {
			t.Fatalf("got %s (%s), want %s", msg.Event.ID(), msg.Event.Type(), evs[want].ID())
		}
		if err := ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	expectNothing(t, src, 2*time.Second)
}

// TestSQLSelectorBrokerWithoutFilter: a broker without
// enablePropertyFilter=true (the second test instance, testenv.RocketMQACL,
// runs with it off) fails Connect with ErrConfig naming the setting,
// instead of a consumer whose every pull the broker refuses.
func TestSQLSelectorBrokerWithoutFilter(t *testing.T) {
	f := newACLFixture(t, 1)
	spec := f.spec(f.broker.AccessKey, f.broker.SecretKey)
	spec.SQL = "a > 5"
	src := newTestSource(t, spec, connectorsOptions(0))
	defer func() { _ = src.Close(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // only against a hang
	defer cancel()
	err := src.Connect(ctx)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "enablePropertyFilter=true") {
		t.Fatalf("Connect = %v, want ErrConfig naming enablePropertyFilter", err)
	}
	t.Logf("Connect: %v", err)
}

// eventIndex is the index of the event with id in evs.
func eventIndex(t *testing.T, evs []cloudevents.Event, id string) int {
	t.Helper()
	for i, ev := range evs {
		if ev.ID() == id {
			return i
		}
	}
	t.Fatalf("unknown event id %s", id)
	return -1
}
