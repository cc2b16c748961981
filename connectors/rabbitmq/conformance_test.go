package rabbitmq

import (
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/rabbitmq/rabbittest"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestConformance runs the shared source suite against the real broker.
// A queue is one lane whatever the suite asks for; competing consumers on
// it are the consumer group. Order is not claimed: a requeued message
// goes back to its original position, but one delivered to another
// consumer meanwhile overtakes it (docs/connectors/rabbitmq.md, "Ordering").
func TestConformance(t *testing.T) {
	url := testenv.RabbitURL(t)
	conformance.RunSource(t, conformance.SourceHarness{
		Caps: conformance.Caps{
			Ordered:          false,
			ConsumerGroups:   true,
			Persistent:       true,
			Redelivers:       true,
			ContiguousCommit: false,
			FollowsCredit:    true,
		},
		Subscription: func(t *testing.T, _ int) conformance.Subscription {
			q := testenv.UniqueName(t, "src")
			rabbittest.DeclareQueue(t, url, q, nil)
			return subscription{url: url, queue: q}
		},
	})
}

type subscription struct {
	url, queue string
}

func (s subscription) New(t *testing.T, opts connectors.Options) connectors.Source {
	return newTestSource(t, testSpec(s.url, s.queue), opts)
}

func (s subscription) Publish(t *testing.T, events []cloudevents.Event) {
	rabbittest.PublishEvents(t, s.url, "", s.queue, events)
}
