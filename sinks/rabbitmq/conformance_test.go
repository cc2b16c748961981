package rabbitmq

import (
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors/rabbitmq/rabbittest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/conformance"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestConformance runs the shared sink suite against the real broker,
// publishing through the default exchange to a fresh queue.
func TestConformance(t *testing.T) {
	url := testenv.RabbitURL(t)
	conformance.RunSink(t, conformance.SinkHarness{
		Target: func(t *testing.T) conformance.Target {
			q := testenv.UniqueName(t, "sink")
			rabbittest.DeclareQueue(t, url, q, nil)
			return target{url: url, queue: q}
		},
		NewUnavailable: func(t *testing.T) sinks.Sink {
			return newSink(t, pipelines.RabbitMQSink{URL: pipelines.NewSecret("", "amqp://guest:guest@"+testenv.FreeAddr(t)+"/"), RoutingKey: "nowhere"})
		},
	})
}

type target struct {
	url, queue string
}

func (tg target) New(t *testing.T) sinks.Sink {
	return newSink(t, pipelines.RabbitMQSink{URL: pipelines.NewSecret("", tg.url), RoutingKey: tg.queue})
}

func (tg target) ReadBack(t *testing.T, n int) []cloudevents.Event {
	return rabbittest.ReadEvents(t, tg.url, tg.queue, n)
}

func newSink(t *testing.T, spec pipelines.RabbitMQSink) *Sink {
	t.Helper()
	s, err := New(spec, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}
