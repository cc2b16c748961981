package rocketmq

import (
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqtest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
)

// TestConformance runs the shared source suite against the real broker
// with retry: sluice (the default).
func TestConformance(t *testing.T) {
	conformance.RunSource(t, harness(t, pipelines.RocketMQRetrySluice))
}

func harness(t *testing.T, retry string) conformance.SourceHarness {
	ns := []string{testenv.RocketMQNameServer(t)}
	return conformance.SourceHarness{
		Caps: conformance.Caps{
			Ordered:          true,
			ConsumerGroups:   true,
			Persistent:       true,
			Redelivers:       true,
			ContiguousCommit: true,
			FollowsCredit:    true,
		},
		Subscription: func(t *testing.T, lanes int) conformance.Subscription {
			s := &subscription{
				spec: pipelines.RocketMQSource{
					NameServers: ns,
					Topic:       testenv.UniqueName(t, "src"),
					Group:       testenv.UniqueName(t, "grp"),
					Retry:       retry,
				},
				queues: lanes,
			}
			testenv.RocketMQCreateTopic(t, s.spec.Topic, lanes)
			return s
		},
		LeakOptions: leakOptions(),
	}
}

type subscription struct {
	spec   pipelines.RocketMQSource
	queues int
}

func (s *subscription) New(t *testing.T, opts connectors.Options) connectors.Source {
	return newTestSource(t, s.spec, opts)
}

func (s *subscription) Publish(t *testing.T, events []cloudevents.Event) {
	rocketmqtest.PublishEvents(t, s.spec.NameServers, s.spec.Topic, s.queues, events)
}
