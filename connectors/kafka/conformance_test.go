package kafka

import (
	"testing"

	"github.com/IBM/sarama"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/conformance"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestConformance runs the shared source suite against the real broker with
// the default (eager) rebalance protocol.
func TestConformance(t *testing.T) {
	conformance.RunSource(t, harness(t, fastGroup))
}

// TestConformanceCooperativeSticky runs the suite with the cooperative-sticky
// assignor (incremental rebalances), which WithSaramaConfig can select.
func TestConformanceCooperativeSticky(t *testing.T) {
	conformance.RunSource(t, harness(t, func(c *sarama.Config) {
		fastGroup(c)
		c.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyCooperativeSticky()}
	}))
}

func harness(t *testing.T, tune func(*sarama.Config)) conformance.SourceHarness {
	brokers := testenv.KafkaBrokers(t)
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
				brokers:    brokers,
				topic:      testenv.UniqueName(t, "src"),
				group:      testenv.UniqueName(t, "grp"),
				partitions: lanes,
				tune:       tune,
			}
			kafkatest.CreateTopic(t, brokers, s.topic, lanes)
			return s
		},
		LeakOptions: leakOptions(),
	}
}

type subscription struct {
	brokers      []string
	topic, group string
	partitions   int
	tune         func(*sarama.Config)
}

func (s *subscription) New(t *testing.T, opts connectors.Options) connectors.Source {
	return newTestSource(t, s.brokers, s.topic, s.group, opts, WithSaramaConfig(s.tune))
}

func (s *subscription) Publish(t *testing.T, events []cloudevents.Event) {
	kafkatest.ProduceEvents(t, s.brokers, s.topic, s.partitions, events)
}
