package rocketmq

import (
	"errors"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/pipelines"
)

func ext(props map[string]string, body string) *primitive.MessageExt {
	m := &primitive.MessageExt{QueueOffset: 42, BornTimestamp: 1714979289123, MsgId: "UNIQ-1"}
	m.Body = []byte(body)
	m.WithProperties(props)
	return m
}

func TestMapping(t *testing.T) {
	mq := &primitive.MessageQueue{Topic: "orders", BrokerName: "broker-a", QueueId: 3}
	retryMQ := &primitive.MessageQueue{Topic: "%RETRY%billing", BrokerName: "broker-a", QueueId: 0}
	l := &lane{name: laneName(mq), revoked: make(chan struct{})}
	full := cetest.Full(t, "ce-1")
	enc, err := rocketmqce.Encode(full, "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		keyProperty string
		mq          *primitive.MessageQueue
		m           *primitive.MessageExt
		wantKey     string
		wantDecErr  bool
		check       func(t *testing.T, ev cloudevents.Event)
	}{
		{
			name: "plain message is wrapped", mq: mq,
			m:       ext(map[string]string{"TAGS": "created", "KEYS": "k1 k2", "content-type": "text/plain", "color": "red"}, "hello"),
			wantKey: "k1",
			check: func(t *testing.T, ev cloudevents.Event) {
				want := cloudevents.NewEvent()
				want.SetID("UNIQ-1")
				want.SetSource("rocketmq://127.0.0.1:9876/orders")
				want.SetType(DefaultEventType)
				want.SetSubject("created")
				want.SetTime(time.UnixMilli(1714979289123))
				_ = want.SetData("text/plain", []byte("hello"))
				want.SetExtension(ExtTopic, "orders")
				want.SetExtension(ExtQueueID, 3)
				want.SetExtension(ExtOffset, "42")
				want.SetExtension(ExtTags, "created")
				want.SetExtension(ExtKeys, "k1 k2")
				want.SetExtension("partitionkey", "k1")
				cetest.Equal(t, want, ev)
			},
		},
		{
			name: "subject from keys, default content type", mq: mq,
			m:       ext(map[string]string{"KEYS": "only"}, "x"),
			wantKey: "only",
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.Subject() != "only" || ev.DataContentType() != DefaultContentType {
					t.Errorf("subject %q, content type %q", ev.Subject(), ev.DataContentType())
				}
			},
		},
		{
			name: "key from a property", keyProperty: "customer", mq: mq,
			m:       ext(map[string]string{"KEYS": "k1", "customer": "c-9"}, "x"),
			wantKey: "c-9",
		},
		{
			name: "key property missing", keyProperty: "customer", mq: mq,
			m: ext(map[string]string{"KEYS": "k1"}, "x"),
		},
		{
			name: "binary CloudEvent", mq: mq,
			m:       ext(withKeys(enc.Properties, enc.Key), string(enc.Body)),
			wantKey: "key-ce-1",
			check:   func(t *testing.T, ev cloudevents.Event) { cetest.Equal(t, full, ev) },
		},
		{
			name: "broken CloudEvent", mq: mq,
			m:          ext(map[string]string{"ce_specversion": "1.0", "ce_type": "t"}, "x"),
			wantDecErr: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.ID() != "UNIQ-1" || ev.Type() != DefaultEventType {
					t.Errorf("wrapper = %v", ev)
				}
			},
		},
		{
			name: "redelivery through the retry topic names the original topic", mq: retryMQ,
			m: ext(map[string]string{"RETRY_TOPIC": "orders"}, "x"),
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.Source() != "rocketmq://127.0.0.1:9876/orders" || ev.Extensions()[ExtTopic] != "orders" {
					t.Errorf("source %q, topic extension %v", ev.Source(), ev.Extensions()[ExtTopic])
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mp := newMapper(pipelines.RocketMQSource{NameServers: []string{"127.0.0.1:9876"}, KeyProperty: tt.keyProperty})
			now := time.Now()
			msg := mp.message(tt.m, tt.mq, l, now)
			if msg.Key != tt.wantKey {
				t.Errorf("Key = %q, want %q", msg.Key, tt.wantKey)
			}
			if (msg.DecodeErr != nil) != tt.wantDecErr {
				t.Errorf("DecodeErr = %v, want error: %v", msg.DecodeErr, tt.wantDecErr)
			}
			if msg.DecodeErr != nil && !errors.Is(msg.DecodeErr, rocketmqce.ErrInvalidCloudEvent) {
				t.Errorf("DecodeErr %v does not wrap ErrInvalidCloudEvent", msg.DecodeErr)
			}
			c := msg.Coordinates
			if c.System != "rocketmq" || c.Topic != tt.mq.Topic || int(c.Partition) != tt.mq.QueueId || c.Offset != 42 || c.ID != "UNIQ-1" {
				t.Errorf("Coordinates = %+v", c)
			}
			if msg.Lane != "orders/broker-a/3" || msg.Revoked != (<-chan struct{})(l.revoked) || !msg.ReceivedAt.Equal(now) {
				t.Errorf("Lane %q, Revoked %v, ReceivedAt %v", msg.Lane, msg.Revoked, msg.ReceivedAt)
			}
			if msg.Size != len(msg.Event.Data()) {
				t.Errorf("Size = %d, want %d", msg.Size, len(msg.Event.Data()))
			}
			if err := msg.Event.Validate(); err != nil {
				t.Errorf("event invalid: %v", err)
			}
			if tt.check != nil {
				tt.check(t, msg.Event)
			}
		})
	}
}

func withKeys(props map[string]string, key string) map[string]string {
	out := map[string]string{"KEYS": key}
	for k, v := range props {
		out[k] = v
	}
	return out
}

func TestLaneName(t *testing.T) {
	if got := laneName(&primitive.MessageQueue{Topic: "t", BrokerName: "b", QueueId: 7}); got != "t/b/7" {
		t.Errorf("laneName = %q", got)
	}
}

func TestNewRejects(t *testing.T) {
	ok := pipelines.RocketMQSource{NameServers: []string{"n:9876"}, Topic: "t", Group: "g"}
	tests := []struct {
		name   string
		modify func(*pipelines.RocketMQSource)
	}{
		{"no name servers", func(s *pipelines.RocketMQSource) { s.NameServers = nil }},
		{"no topic", func(s *pipelines.RocketMQSource) { s.Topic = "" }},
		{"no group", func(s *pipelines.RocketMQSource) { s.Group = "" }},
		{"tags and sql", func(s *pipelines.RocketMQSource) { s.Tags, s.SQL = "a", "b = 1" }},
		{"bad start", func(s *pipelines.RocketMQSource) { s.Start = "middle" }},
		{"bad retry", func(s *pipelines.RocketMQSource) { s.Retry = "both" }},
		{"half an ACL", func(s *pipelines.RocketMQSource) {
			s.ACL = &pipelines.RocketMQACL{AccessKey: pipelines.NewSecret("", "ak")}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := ok
			tt.modify(&spec)
			if _, err := New(spec, connectorsOptions(0), nil); !errors.Is(err, ErrConfig) {
				t.Errorf("New = %v, want ErrConfig", err)
			}
		})
	}
	if _, err := New(ok, connectorsOptions(-1), nil); !errors.Is(err, ErrConfig) {
		t.Errorf("New with window -1 = %v, want ErrConfig", err)
	}
	if _, err := New(ok, connectorsOptions(0), nil); err != nil {
		t.Errorf("New(valid) = %v", err)
	}
}
