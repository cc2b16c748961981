package rabbitload

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/bench/internal/kafkaload"
	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpce"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Sluice's RabbitMQ source must read each message as the same CloudEvent
// that B1's Kafka records and raw-http's requests carry.
func TestPublishingIsTheBenchEvent(t *testing.T) {
	ev := kafkaload.Events{N: 2000, Size: 1024, Keys: 1000}
	for _, i := range []int{0, 1, 999, 1000, 1999} {
		p := Publishing(ev, i)
		got, ok, err := amqpce.Decode(p.Headers, p.ContentType, p.Body)
		if !ok || err != nil {
			t.Fatalf("event %d: Decode ok=%v err=%v", i, ok, err)
		}
		if got.ID() != ev.ID(i) || got.Source() != kafkaload.Source || got.Type() != kafkaload.Type ||
			got.DataContentType() != kafkaload.ContentType || got.SpecVersion() != "1.0" {
			t.Errorf("event %d: attributes %s", i, got)
		}
		if k := got.Extensions()["partitionkey"]; k != ev.Key(i) {
			t.Errorf("event %d: partitionkey %v, want %s", i, k, ev.Key(i))
		}
		if string(got.Data()) != string(ev.Data(i)) || len(got.Data()) != 1024 {
			t.Errorf("event %d: data of %d bytes differs from the bench event's", i, len(got.Data()))
		}
		if p.MessageId != ev.ID(i) || p.DeliveryMode != amqp.Persistent {
			t.Errorf("event %d: message-id %q, delivery mode %d; want the event id, persistent", i, p.MessageId, p.DeliveryMode)
		}
	}
}
