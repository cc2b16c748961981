package kafka

import (
	"net"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/conformance"
)

// leakOptions ignores the metrics ticker sarama's go-metrics dependency
// starts once per process and never stops.
func leakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick")}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakOptions()...)
}

// TestConformance runs the shared sink suite against the real broker.
func TestConformance(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	conformance.RunSink(t, conformance.SinkHarness{
		Target: func(t *testing.T) conformance.Target {
			topic := testenv.UniqueName(t, "sink")
			kafkatest.CreateTopic(t, brokers, topic, 3)
			return target{brokers: brokers, topic: topic}
		},
		NewUnavailable: func(t *testing.T) sinks.Sink {
			return newSink(t, pipelines.KafkaSink{Brokers: []string{deadAddr(t)}, Topic: "nowhere"})
		},
		LeakOptions: leakOptions(),
	})
}

type target struct {
	brokers []string
	topic   string
}

func (tg target) New(t *testing.T) sinks.Sink {
	return newSink(t, pipelines.KafkaSink{Brokers: tg.brokers, Topic: tg.topic})
}

func (tg target) ReadBack(t *testing.T, n int) []cloudevents.Event {
	return kafkatest.ReadEvents(t, tg.brokers, tg.topic, n)
}

func newSink(t *testing.T, spec pipelines.KafkaSink) *Sink {
	t.Helper()
	s, err := New(spec, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// deadAddr returns a loopback address with nothing listening.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
