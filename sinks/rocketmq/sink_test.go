package rocketmq

import (
	"context"
	crand "crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqtest"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks"
)

func TestNewRejects(t *testing.T) {
	for name, spec := range map[string]pipelines.RocketMQSink{
		"no topic":         {NameServers: []string{"n:1"}},
		"no name servers":  {Topic: "t"},
		"negative retries": {NameServers: []string{"n:1"}, Topic: "t", Retries: -1},
		"half an ACL":      {NameServers: []string{"n:1"}, Topic: "t", ACL: &pipelines.RocketMQACL{SecretKey: pipelines.NewSecret("", "s")}},
	} {
		if _, err := New(spec, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: New = %v, want ErrConfig", name, err)
		}
	}
}

func TestMessage(t *testing.T) {
	ev := cetest.Full(t, "m-1") // partitionkey "key-m-1", subject "orders/m-1"
	tests := []struct {
		name             string
		spec             pipelines.RocketMQSink
		ev               cloudevents.Event
		wantKey, wantTag string
		wantErr          bool
	}{
		{name: "defaults", ev: ev, wantKey: "key-m-1"},
		{name: "key attribute", spec: pipelines.RocketMQSink{Key: "subject"}, ev: ev, wantKey: "orders/m-1"},
		{name: "fixed tag", spec: pipelines.RocketMQSink{Tag: "billed"}, ev: ev, wantKey: "key-m-1", wantTag: "billed"},
		{name: "tag attribute wins", spec: pipelines.RocketMQSink{Tag: "billed", TagAttribute: "type"}, ev: ev, wantKey: "key-m-1", wantTag: cetest.Type},
		{name: "tag attribute missing", spec: pipelines.RocketMQSink{Tag: "billed", TagAttribute: "region"}, ev: ev, wantKey: "key-m-1", wantTag: "billed"},
		{name: "no key", spec: pipelines.RocketMQSink{Key: "region"}, ev: ev},
		{name: "tag with a bar", spec: pipelines.RocketMQSink{TagAttribute: "subject"}, ev: withSubject(ev, "a|b"), wantErr: true},
		{name: "key with a separator", spec: pipelines.RocketMQSink{Key: "subject"}, ev: withSubject(ev, "a\x02b"), wantErr: true},
		{name: "invalid event", ev: cloudevents.NewEvent(), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			spec.NameServers, spec.Topic = []string{"n:1"}, "out"
			s, err := New(spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			m, err := s.message(tt.ev)
			if tt.wantErr {
				werr := s.Write(context.Background(), []cloudevents.Event{tt.ev})
				if !errors.Is(werr, sinks.ErrRejected) || !errors.Is(werr, rocketmqce.ErrInvalidCloudEvent) {
					t.Errorf("Write = %v, want ErrRejected and ErrInvalidCloudEvent", werr)
				}
				if !errors.Is(err, rocketmqce.ErrInvalidCloudEvent) {
					t.Fatalf("message = %v, want ErrInvalidCloudEvent", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Topic != "out" || m.GetKeys() != tt.wantKey || m.GetShardingKey() != tt.wantKey || m.GetTags() != tt.wantTag {
				t.Errorf("topic %q keys %q sharding %q tag %q; want keys %q tag %q", m.Topic, m.GetKeys(), m.GetShardingKey(), m.GetTags(), tt.wantKey, tt.wantTag)
			}
			if m.GetProperty("ce_id") != tt.ev.ID() {
				t.Errorf("ce_id = %q", m.GetProperty("ce_id"))
			}
		})
	}
}

func withSubject(ev cloudevents.Event, s string) cloudevents.Event {
	e := ev.Clone()
	e.SetSubject(s)
	return e
}

// fakeProducer answers every send with status.
type fakeProducer struct {
	status primitive.SendStatus
	sent   int
}

func (f *fakeProducer) SendSync(context.Context, ...*primitive.Message) (*primitive.SendResult, error) {
	f.sent++
	return &primitive.SendResult{Status: f.status}, nil
}
func (f *fakeProducer) Shutdown() error { return nil }

// TestOnlySendOKCounts: any other status is a failed write.
func TestOnlySendOKCounts(t *testing.T) {
	for _, st := range []primitive.SendStatus{primitive.SendFlushDiskTimeout, primitive.SendFlushSlaveTimeout, primitive.SendSlaveNotAvailable, primitive.SendUnknownError} {
		s, err := New(pipelines.RocketMQSink{NameServers: []string{"n:1"}, Topic: "out"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		f := &fakeProducer{status: st}
		s.producer = f
		evs := []cloudevents.Event{cetest.New(t, "a", "x"), cetest.New(t, "b", "y")}
		err = s.Write(context.Background(), evs)
		if !errors.Is(err, ErrNotStored) || !strings.Contains(err.Error(), statusName(st)) {
			t.Errorf("status %d: Write = %v, want ErrNotStored naming the status", st, err)
		}
		if f.sent != 1 {
			t.Errorf("status %d: %d sends, want to stop at the first failure", st, f.sent)
		}
		if s.Health() == nil {
			t.Errorf("status %d: Health = nil after a failed send", st)
		}
		f.status = primitive.SendOK
		if err := s.Write(context.Background(), evs); err != nil || s.Health() != nil {
			t.Errorf("after SEND_OK: Write = %v, Health = %v", err, s.Health())
		}
		_ = s.Close(context.Background())
		if !errors.Is(s.Health(), ErrClosed) {
			t.Errorf("Health after Close = %v", s.Health())
		}
	}
}

// TestKeysTagsAndSharding against the real broker: messages carry KEYS and
// TAGS, and one key's events land in one queue, in order.
func TestKeysTagsAndSharding(t *testing.T) {
	ns := []string{testenv.RocketMQNameServer(t)}
	topic := testenv.UniqueName(t, "keys")
	testenv.RocketMQCreateTopic(t, topic, 4)
	s := newSink(t, pipelines.RocketMQSink{NameServers: ns, Topic: topic, Tag: "billed"})
	defer s.Close(context.Background())
	var evs []cloudevents.Event
	for i := range 12 {
		ev := cetest.New(t, testenv.UniqueName(t, "e")+"-"+string(rune('a'+i)), i)
		ev.SetExtension("partitionkey", []string{"k1", "k2", "k3"}[i%3])
		evs = append(evs, ev)
	}
	if err := s.Write(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	msgs := rocketmqtest.ReadMessages(t, ns, topic, len(evs))
	queueOf := map[string]int{}
	order := map[string][]string{}
	for _, m := range msgs {
		key := m.GetKeys()
		if m.GetTags() != "billed" {
			t.Errorf("tag %q", m.GetTags())
		}
		if q, ok := queueOf[key]; ok && q != m.Queue.QueueId {
			t.Errorf("key %s in queues %d and %d", key, q, m.Queue.QueueId)
		}
		queueOf[key] = m.Queue.QueueId
		order[key] = append(order[key], rocketmqtest.Decode(t, m).ID())
	}
	for i, ev := range evs {
		key := []string{"k1", "k2", "k3"}[i%3]
		if order[key][i/3] != ev.ID() {
			t.Errorf("key %s: order %v", key, order[key])
		}
	}
}

// TestTooLargeIsRejected: the broker refuses a message over its maximum
// size for good, and the sink says so (sinks.ErrRejected), so the runtime
// dead-letters instead of retrying forever.
func TestTooLargeIsRejected(t *testing.T) {
	ns := []string{testenv.RocketMQNameServer(t)}
	topic := testenv.UniqueName(t, "big")
	testenv.RocketMQCreateTopic(t, topic, 1)
	s := newSink(t, pipelines.RocketMQSink{NameServers: ns, Topic: topic})
	defer s.Close(context.Background())
	data := make([]byte, 5<<20)
	_, _ = crand.Read(data) // incompressible
	ev := cetest.New(t, "big-1", nil)
	if err := ev.SetData("application/octet-stream", data); err != nil {
		t.Fatal(err)
	}
	err := s.Write(context.Background(), []cloudevents.Event{ev})
	if !errors.Is(err, sinks.ErrRejected) {
		t.Fatalf("Write of 5 MiB = %v, want ErrRejected", err)
	}
	t.Logf("refused: %v", err)
	if err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "small-1", "x")}); err != nil {
		t.Errorf("Write after the refusal: %v", err)
	}
}
