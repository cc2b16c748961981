package kafka

import (
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
			return newSink(t, pipelines.KafkaSink{Brokers: []string{testenv.FreeAddr(t)}, Topic: "nowhere"})
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
