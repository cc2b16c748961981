package rocketmq

import (
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqtest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/conformance"
)

// leakOptions ignores the RocketMQ client library's own goroutines, which
// outlive Shutdown by up to a few seconds (its schedulers first sleep) or
// for the life of the process (a cache janitor started at init); see
// docs/connectors/rocketmq.md, "Quirks".
func leakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/primitive.WithRecover"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/consumer.(*pushConsumer).pullMessage"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/consumer.(*pushConsumer).Start.func1"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/internal.(*rmqClient).RebalanceImmediately"),
		goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"),
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakOptions()...)
}

// TestConformance runs the shared sink suite against the real broker.
func TestConformance(t *testing.T) {
	ns := []string{testenv.RocketMQNameServer(t)}
	conformance.RunSink(t, conformance.SinkHarness{
		Target: func(t *testing.T) conformance.Target {
			topic := testenv.UniqueName(t, "sink")
			testenv.RocketMQCreateTopic(t, topic, 2)
			return target{ns: ns, topic: topic}
		},
		NewUnavailable: func(t *testing.T) sinks.Sink {
			return newSink(t, pipelines.RocketMQSink{NameServers: []string{testenv.FreeAddr(t)}, Topic: "nowhere"})
		},
		LeakOptions: leakOptions(),
	})
}

type target struct {
	ns    []string
	topic string
}

func (tg target) New(t *testing.T) sinks.Sink {
	return newSink(t, pipelines.RocketMQSink{NameServers: tg.ns, Topic: tg.topic})
}

func (tg target) ReadBack(t *testing.T, n int) []cloudevents.Event {
	return rocketmqtest.ReadEvents(t, tg.ns, tg.topic, n)
}

func newSink(t *testing.T, spec pipelines.RocketMQSink) *Sink {
	t.Helper()
	s, err := New(spec, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}
