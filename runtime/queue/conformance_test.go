package queue

import (
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestConformance runs the shared source suite against the embedded queue.
// A queue has a single lane (itself), so "lanes" of the suite map to one
// queue; ConsumerGroups means several Sources sharing one queue.
func TestConformance(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{})
	conformance.RunSource(t, conformance.SourceHarness{
		Caps: conformance.Caps{
			Ordered:        true,
			ConsumerGroups: true,
			Persistent:     true,
			Redelivers:     true,
		},
		Subscription: func(t *testing.T, _ int) conformance.Subscription {
			name := testenv.UniqueName(t, "conf")
			createQueue(t, q, name)
			return subscription{q: q, name: name}
		},
	})
}

type subscription struct {
	q    Queue
	name string
}

func (s subscription) New(_ *testing.T, opts connectors.Options) connectors.Source {
	return s.q.Source(s.name, opts)
}

func (s subscription) Publish(t *testing.T, events []cloudevents.Event) {
	publishEvents(t, s.q, s.name, events...)
}
