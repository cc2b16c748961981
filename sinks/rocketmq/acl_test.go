package rocketmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/rocketmq/rmqwire"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks"
)

func aclSpec(b testenv.RocketMQACLBroker, topic, accessKey, secretKey string) pipelines.RocketMQSink {
	return pipelines.RocketMQSink{
		NameServers: []string{b.NameServer}, Topic: topic, Retries: 1,
		ACL: &pipelines.RocketMQACL{AccessKey: pipelines.NewSecret("", accessKey), SecretKey: pipelines.NewSecret("", secretKey)},
	}
}

// readSigned reads n messages of a one-queue topic of the ACL-enabled
// broker with signed pulls and decodes them.
func readSigned(t *testing.T, b testenv.RocketMQACLBroker, topic string, n int) []cloudevents.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := rmqwire.Client{Credentials: &rmqwire.Credentials{AccessKey: b.AccessKey, SecretKey: b.SecretKey}}
	bqs, err := c.Route(ctx, []string{b.NameServer}, topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []cloudevents.Event
	next := int64(0)
	for len(out) < n {
		msgs, nx, err := c.Pull(ctx, bqs[0].Addr, "sluice-acl-reader", topic, 0, next, 32)
		if err != nil {
			t.Fatalf("signed pull: %v", err)
		}
		next = nx
		for _, m := range msgs {
			ev, ok, err := rocketmqce.Decode(m.GetProperties(), "", m.Body)
			if !ok || err != nil {
				t.Fatalf("message %s is not a CloudEvent: %v", m.MsgId, err)
			}
			out = append(out, ev)
		}
		if len(msgs) == 0 {
			select {
			case <-ctx.Done():
				t.Fatalf("read %d of %d messages", len(out), n)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return out
}

// TestACLWrite: with the broker's credentials the sink writes to a broker
// that authenticates every request; every event arrives, in order.
func TestACLWrite(t *testing.T) {
	b := testenv.RocketMQACL(t)
	topic := testenv.UniqueName(t, "acl")
	b.CreateTopic(t, topic, 1)
	s := newSink(t, aclSpec(b, topic, b.AccessKey, b.SecretKey))
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	evs := make([]cloudevents.Event, 4)
	for i := range evs {
		evs[i] = cetest.New(t, fmt.Sprintf("%s-%d", topic, i), map[string]int{"i": i})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.Write(ctx, evs); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got := readSigned(t, b, topic, len(evs))
	for i := range evs {
		if got[i].ID() != evs[i].ID() {
			t.Fatalf("message %d: got %s, want %s", i, got[i].ID(), evs[i].ID())
		}
	}
}

// TestACLRefused: a wrong secret key fails Write with the broker's reason
// (not a rejection of the event: it is not dead-lettered), Health reports
// it, and nothing is stored.
func TestACLRefused(t *testing.T) {
	b := testenv.RocketMQACL(t)
	topic := testenv.UniqueName(t, "acl-refused")
	b.CreateTopic(t, topic, 1)
	s := newSink(t, aclSpec(b, topic, b.AccessKey, b.SecretKey+"-wrong"))
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := s.Write(ctx, []cloudevents.Event{cetest.New(t, topic+"-0", nil)})
	if err == nil || errors.Is(err, sinks.ErrRejected) || !strings.Contains(err.Error(), "check signature failed") {
		t.Fatalf("Write = %v, want the broker's \"check signature failed\", not a rejection", err)
	}
	if h := s.Health(); h == nil || !strings.Contains(h.Error(), "check signature failed") {
		t.Errorf("Health = %v, want the refusal", h)
	}
	t.Logf("Write: %v", err)
	c := rmqwire.Client{Credentials: &rmqwire.Credentials{AccessKey: b.AccessKey, SecretKey: b.SecretKey}}
	bqs, err := c.Route(ctx, []string{b.NameServer}, topic)
	if err != nil {
		t.Fatal(err)
	}
	msgs, _, err := c.Pull(ctx, bqs[0].Addr, "sluice-acl-reader", topic, 0, 0, 32)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("topic holds %d messages (err %v), want none", len(msgs), err)
	}
}
