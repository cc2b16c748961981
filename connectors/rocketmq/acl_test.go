package rocketmq

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/rocketmq/rmqwire"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqtest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
)

// aclFixture is a fresh topic and group on the ACL-enabled RocketMQ
// (testenv.RocketMQACL), which refuses requests without valid credentials.
type aclFixture struct {
	broker testenv.RocketMQACLBroker
	topic  string
	group  string
}

func newACLFixture(t *testing.T, queues int) aclFixture {
	t.Helper()
	f := aclFixture{broker: testenv.RocketMQACL(t), topic: testenv.UniqueName(t, "t"), group: testenv.UniqueName(t, "g")}
	f.broker.CreateTopic(t, f.topic, queues)
	return f
}

// spec is a source spec for the fixture with the given keys.
func (f aclFixture) spec(accessKey, secretKey string) pipelines.RocketMQSource {
	return pipelines.RocketMQSource{
		NameServers: []string{f.broker.NameServer}, Topic: f.topic, Group: f.group,
		ACL: &pipelines.RocketMQACL{AccessKey: pipelines.NewSecret("", accessKey), SecretKey: pipelines.NewSecret("", secretKey)},
	}
}

// publish sends evs in binary mode with signed requests, event i to queue
// i % queues.
func (f aclFixture) publish(t *testing.T, evs []cloudevents.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := rmqwire.Client{Credentials: &rmqwire.Credentials{AccessKey: f.broker.AccessKey, SecretKey: f.broker.SecretKey}}
	bqs, err := c.Route(ctx, []string{f.broker.NameServer}, f.topic)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range evs {
		bq := bqs[0]
		if _, _, err := c.Send(ctx, bq.Addr, f.topic, i%bq.Queues, rocketmqtest.Message(t, f.topic, ev)); err != nil {
			t.Fatalf("signed send: %v", err)
		}
	}
}

// TestACLConsume: with the broker's credentials the source consumes from a
// broker that authenticates every request: every message, in queue order,
// and the acknowledged offsets are committed (a second source of the group
// finds nothing left).
func TestACLConsume(t *testing.T) {
	f := newACLFixture(t, 2)
	evs := events(t, 6)
	f.publish(t, evs)
	src := newTestSource(t, f.spec(f.broker.AccessKey, f.broker.SecretKey), connectorsOptions(0))
	connect(t, src)
	got := map[string]bool{}
	last := map[string]int{}
	for range evs {
		msg, ack := readOne(t, src)
		i := eventIndex(t, evs, msg.Event.ID())
		if got[msg.Event.ID()] {
			t.Fatalf("event %d delivered twice", i)
		}
		got[msg.Event.ID()] = true
		if l, ok := last[msg.Lane]; ok && l > i {
			t.Errorf("lane %s: event %d after %d", msg.Lane, i, l)
		}
		last[msg.Lane] = i
		if err := ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	expectNothing(t, src, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := src.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}

	again := newTestSource(t, f.spec(f.broker.AccessKey, f.broker.SecretKey), connectorsOptions(0))
	connect(t, again)
	expectNothing(t, again, 3*time.Second)
}

// TestACLRefused: a wrong secret key, or no credentials at all, fail
// Connect with ErrConfig carrying the broker's reason, instead of a
// consumer whose every request the broker refuses.
func TestACLRefused(t *testing.T) {
	f := newACLFixture(t, 1)
	wrong := f.spec(f.broker.AccessKey, f.broker.SecretKey+"-wrong")
	none := f.spec("", "")
	none.ACL = nil
	for name, tc := range map[string]struct {
		spec pipelines.RocketMQSource
		want string
	}{
		"wrong secret":   {wrong, "check signature failed"},
		"no credentials": {none, "username cannot be null"},
	} {
		t.Run(name, func(t *testing.T) {
			src := newTestSource(t, tc.spec, connectorsOptions(0))
			defer func() { _ = src.Close(context.Background()) }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // only against a hang
			defer cancel()
			err := src.Connect(ctx)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Connect = %v, want ErrConfig with the broker's %q", err, tc.want)
			}
			t.Logf("Connect: %v", err)
		})
	}
}
