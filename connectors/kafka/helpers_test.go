package kafka

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipelines"
)

// leakOptions ignores the metrics ticker sarama's go-metrics dependency
// starts once per process and never stops.
func leakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick")}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakOptions()...)
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// fastGroup shortens the consumer group timings so that rebalances in tests
// take seconds, not a minute.
func fastGroup(c *sarama.Config) {
	c.Consumer.Group.Session.Timeout = 6 * time.Second
	c.Consumer.Group.Heartbeat.Interval = time.Second
	c.Consumer.Group.Rebalance.Timeout = 15 * time.Second
	c.Consumer.MaxWaitTime = 100 * time.Millisecond
}

// testOptions are the Source options every broker test uses.
func testOptions() []Option {
	return []Option{
		WithSaramaConfig(fastGroup),
		WithCommitInterval(200 * time.Millisecond),
		WithRevokeGrace(5 * time.Second),
	}
}

func newTestSource(t *testing.T, brokers []string, topic, group string, opts connectors.Options, extra ...Option) *Source {
	t.Helper()
	spec := pipelines.KafkaSource{Brokers: brokers, Topics: []string{topic}, Group: group, Start: "earliest"}
	src, err := New(spec, opts, testLogger(), append(testOptions(), extra...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return src
}

func readOne(t *testing.T, src connectors.Source) (*connectors.Message, connectors.AckFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msg, ack, err := src.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return msg, ack
}
