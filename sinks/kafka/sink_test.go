package kafka

import (
	"context"
	"errors"
	"fmt"
	"github.com/sluicehq/sluice/sinks"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluicehq/sluice/connectors/kafka/kafkace"
	"github.com/sluicehq/sluice/connectors/kafka/kafkaconf"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
)

func TestNewRejectsBadSpecs(t *testing.T) {
	tests := []struct {
		name string
		spec pipelines.KafkaSink
	}{
		{"no topic", pipelines.KafkaSink{Brokers: []string{"127.0.0.1:9092"}}},
		{"no brokers", pipelines.KafkaSink{Topic: "t"}},
		{"bad version", pipelines.KafkaSink{Brokers: []string{"127.0.0.1:9092"}, Topic: "t", Version: "v"}},
		{"bad SASL", pipelines.KafkaSink{Brokers: []string{"127.0.0.1:9092"}, Topic: "t", SASL: &pipelines.SASLSpec{Mechanism: "X", Username: "u"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.spec, nil); !errors.Is(err, kafkaconf.ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}

func TestNewKeepsGuarantees(t *testing.T) {
	s, err := New(pipelines.KafkaSink{Brokers: []string{"127.0.0.1:9092"}, Topic: "t"}, nil, WithSaramaConfig(func(c *sarama.Config) {
		c.Producer.RequiredAcks = sarama.NoResponse
		c.Producer.Idempotent = false
		c.Net.MaxOpenRequests = 5
	}))
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if c.Producer.RequiredAcks != sarama.WaitForAll || !c.Producer.Idempotent || c.Net.MaxOpenRequests != 1 {
		t.Errorf("acks=%v idempotent=%v maxOpen=%d", c.Producer.RequiredAcks, c.Producer.Idempotent, c.Net.MaxOpenRequests)
	}
}

// TestBinaryModeAndKey checks the record layout on the real broker.
func TestBinaryModeAndKey(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	tests := []struct {
		keyAttr string
		want    func(ev cloudevents.Event) string
	}{
		{"", func(ev cloudevents.Event) string { return "key-" + ev.ID() }},
		{"subject", func(ev cloudevents.Event) string { return ev.Subject() }},
		{"nosuchattr", func(cloudevents.Event) string { return "" }},
	}
	for _, tc := range tests {
		t.Run("key="+tc.keyAttr, func(t *testing.T) {
			topic := testenv.UniqueName(t, "bin")
			kafkatest.CreateTopic(t, brokers, topic, 1)
			s := newSink(t, pipelines.KafkaSink{Brokers: brokers, Topic: topic, Key: tc.keyAttr})
			defer s.Close(context.Background())
			ev := cetest.Full(t, testenv.UniqueName(t, "e"))
			if err := s.Write(context.Background(), []cloudevents.Event{ev}); err != nil {
				t.Fatal(err)
			}
			if err := s.Health(); err != nil {
				t.Errorf("Health after a write: %v", err)
			}
			rec := kafkatest.ReadRecords(t, brokers, topic, 1)[0]
			if got, want := string(rec.Key), tc.want(ev); got != want || (want == "" && rec.Key != nil) {
				t.Errorf("key = %q, want %q", rec.Key, want)
			}
			headers := map[string]string{}
			for _, h := range rec.Headers {
				headers[string(h.Key)] = string(h.Value)
			}
			if headers["ce_specversion"] != "1.0" || headers["ce_id"] != ev.ID() || headers["content-type"] != "application/json" ||
				headers["ce_traceparent"] == "" {
				t.Errorf("headers = %v", headers)
			}
			if !cetest.SameJSON(rec.Value, ev.Data()) {
				t.Errorf("value = %q, want the data %q", rec.Value, ev.Data())
			}
			got, err := kafkace.DecodeMessage(rec)
			if err != nil {
				t.Fatal(err)
			}
			cetest.Equal(t, ev, got)
		})
	}
}

func TestWriteInvalidEvent(t *testing.T) {
	s := newSink(t, pipelines.KafkaSink{Brokers: []string{testenv.FreeAddr(t)}, Topic: "t"})
	bad := cloudevents.NewEvent()
	bad.SetSource("/s") // no id, no type
	err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "ok", nil), bad})
	if !errors.Is(err, kafkace.ErrInvalidCloudEvent) || !errors.Is(err, sinks.ErrRejected) {
		t.Fatalf("err = %v, want ErrInvalidCloudEvent as a rejection (before any network use)", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestUnavailableHealth(t *testing.T) {
	s := newSink(t, pipelines.KafkaSink{Brokers: []string{testenv.FreeAddr(t)}, Topic: "t"})
	if err := s.Health(); err != nil {
		t.Errorf("Health before any write: %v", err)
	}
	err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "x", nil)})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Write = %v, want ErrUnavailable", err)
	}
	if !errors.Is(s.Health(), ErrUnavailable) {
		t.Errorf("Health = %v, want ErrUnavailable", s.Health())
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "y", nil)}); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
}

// TestBrokerRestart: writes fail (in bounded time) while the broker is down
// and succeed again once it is back. kfake stands in for Kafka because the
// shared test broker must not be stopped.
func TestBrokerRestart(t *testing.T) {
	const topic = "sink-restart"
	dir, port := t.TempDir(), testenv.FreePort(t)
	start := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.Ports(port), kfake.DataDir(dir), kfake.SeedTopics(1, topic))
		if err != nil {
			t.Fatalf("kfake: %v", err)
		}
		return c
	}
	cluster := start()
	brokers := []string{fmt.Sprintf("127.0.0.1:%d", port)}
	s := newSink(t, pipelines.KafkaSink{Brokers: brokers, Topic: topic, Version: "2.8.0"})
	defer s.Close(context.Background())
	write := func(id string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		err := s.Write(ctx, []cloudevents.Event{cetest.New(t, id, nil)})
		if ctx.Err() != nil {
			t.Fatalf("Write %s only ended with its context: %v", id, err)
		}
		return err
	}
	if err := write("before"); err != nil {
		t.Fatalf("Write: %v", err)
	}
	cluster.Close()
	if err := write("during"); err == nil {
		t.Fatal("Write while the broker is down returned nil")
	}
	if s.Health() == nil {
		t.Error("Health = nil after a failed write")
	}
	cluster = start()
	defer cluster.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := write("after")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Write after the broker came back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := s.Health(); err != nil {
		t.Errorf("Health after recovery: %v", err)
	}
}

// An event the broker (or sarama, before it) refuses for its size is a
// rejection, so the engine dead-letters instead of retrying forever.
func TestOversizedRecordIsRejected(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "big")
	kafkatest.CreateTopic(t, brokers, topic, 1)
	s, err := New(pipelines.KafkaSink{Brokers: brokers, Topic: topic}, nil,
		WithSaramaConfig(func(c *sarama.Config) { c.Producer.MaxMessageBytes = 512 }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	big := cetest.New(t, "big", strings.Repeat("x", 4096))
	err = s.Write(context.Background(), []cloudevents.Event{big})
	if !errors.Is(err, sinks.ErrRejected) {
		t.Fatalf("Write = %v, want a rejection", err)
	}
}
