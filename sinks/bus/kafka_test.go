package bus

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/testenv"
)

// kafkaIDs follows a topic from the start and collects the ce_id of every
// record.
type kafkaIDs struct {
	mu  sync.Mutex
	ids map[string]int
}

func followTopic(t *testing.T, brokers []string, topic string) *kafkaIDs {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	c, err := sarama.NewConsumer(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := c.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	k := &kafkaIDs{ids: map[string]int{}}
	var wg sync.WaitGroup
	var pcs []sarama.PartitionConsumer
	for _, p := range parts {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		pcs = append(pcs, pc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range pc.Messages() {
				for _, h := range m.Headers {
					if string(h.Key) == "ce_id" {
						k.mu.Lock()
						k.ids[string(h.Value)]++
						k.mu.Unlock()
					}
				}
			}
		}()
	}
	t.Cleanup(func() {
		for _, pc := range pcs {
			pc.AsyncClose()
		}
		wg.Wait()
		_ = c.Close()
	})
	return k
}

func (k *kafkaIDs) has(ids []string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, id := range ids {
		if k.ids[id] == 0 {
			return false
		}
	}
	return true
}

func createTopic(t *testing.T, brokers []string, topic string, partitions int32) {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	adm, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if err := adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false); err != nil {
		t.Fatal(err)
	}
}

// TestKafkaStorage: a bus stored in a Kafka topic (created by the bus),
// each target a consumer group of its own: a pattern rule to a webhook, a
// catch-all rule to a Kafka sink target and a webhook that is down at
// first. Restarted, every target resumes after what it had taken (the
// down one from the start), and a target added meanwhile starts with the
// new events.
func TestKafkaStorage(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	storage, group, out := testenv.UniqueName(t, "bus"), testenv.UniqueName(t, "bus-group"), testenv.UniqueName(t, "bus-out")
	createTopic(t, brokers, out, 3)
	big, late := newEndpoint(t), newEndpoint(t)
	late.down.Store(true)
	yaml := fmt.Sprintf(`
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: shared, tenant: acme}
spec:
  storage:
    kafka: {brokers: [%q], topic: %s, group: %s}
  rules:
  - name: big
    pattern: {data: {amount: [{numeric: [">=", 10]}]}}
    targets:
    - sink: {webhook: {url: %q}}
  - name: all
    targets:
    - sink: {kafka: {brokers: [%q], topic: %s}}
    - sink: {webhook: {url: %q}}
      retry: {attempts: 100000, delay: 10ms, maxDelay: 100ms}
`, brokers[0], storage, group, big.URL(), brokers[0], out, late.URL())
	dir := t.TempDir()
	h := start(t, dir, yaml)
	outIDs := followTopic(t, brokers, out)

	first := numbered("k1", "com.acme.order", 30, func(i int) any { return map[string]int{"amount": i} })
	h.mustPost("shared", first...)
	var bigOnes []string
	for i, ev := range first {
		if i >= 10 {
			bigOnes = append(bigOnes, ev.ID())
		}
	}
	eventually(t, "the Kafka sink target", func() bool { return outIDs.has(idsOf(first)) })
	eventually(t, "the pattern rule's target", func() bool { return big.has(bigOnes) })
	if got := big.ids(); !slices.Equal(got, bigOnes) {
		t.Fatalf("the pattern rule's target got %v, want %v", got, bigOnes)
	}
	if len(late.ids()) != 0 {
		t.Fatal("the down target took events")
	}
	h.stop()

	// Restarted with one more target: it starts with the events put from
	// now on, not with the topic's history.
	late.down.Store(false)
	fresh := newEndpoint(t)
	h2 := start(t, dir, yaml+fmt.Sprintf("    - sink: {webhook: {url: %q}}\n", fresh.URL()))
	second := numbered("k2", "com.acme.order", 10, func(i int) any { return map[string]int{"amount": 100 + i} })
	h2.mustPost("shared", second...)
	all := idsOf(slices.Concat(first, second))
	eventually(t, "every target to have everything it matches", func() bool {
		return late.has(all) && outIDs.has(all) && big.has(idsOf(second)) && fresh.has(idsOf(second))
	})
	if got := fresh.ids(); !slices.Equal(got, idsOf(second)) {
		t.Errorf("the added target got %v, want only the events put after it was added", got)
	}
	// The pattern rule's target had committed the first events: it does
	// not get them again after the restart.
	for _, id := range bigOnes {
		if n := big.count(id); n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
}
