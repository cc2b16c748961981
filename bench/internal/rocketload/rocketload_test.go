package rocketload

import (
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/bench/internal/kafkaload"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
)

// The client library starts a cache janitor from a package variable at
// init; it lives as long as the process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"))
}

// Sluice's RocketMQ source must read each message as the same CloudEvent
// that B1's Kafka records and raw-http's requests carry.
func TestMessageIsTheBenchEvent(t *testing.T) {
	ev := kafkaload.Events{N: 2000, Size: 1024, Keys: 1000}
	for _, i := range []int{0, 1, 999, 1000, 1999} {
		m := Message("t", ev, i)
		if m.Topic != "t" || m.GetKeys() != ev.Key(i) {
			t.Errorf("event %d: topic %q keys %q", i, m.Topic, m.GetKeys())
		}
		got, ok, err := rocketmqce.Decode(m.GetProperties(), m.GetKeys(), m.Body)
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
		if string(got.Data()) != string(ev.Data(i)) {
			t.Errorf("event %d: data differs from the bench event's", i)
		}
	}
	if a, b := Message("t", ev, 0).GetProperties()["UNIQ_KEY"], Message("t", ev, 0).GetProperties()["UNIQ_KEY"]; a == "" || a == b {
		t.Errorf("UNIQ_KEY %q and %q: want a fresh client message id per message, as a producer sets", a, b)
	}
}

// Every event is sent exactly once, to its key's queue, in index order
// within the queue, in batches no larger than asked.
func TestBatches(t *testing.T) {
	ev := kafkaload.Events{N: 1003, Keys: 10}
	const queues, size = 4, 16
	seen := make([]int, ev.N)
	for q := range queues {
		var order []int
		for _, b := range Batches(ev, q, queues, size) {
			if len(b) == 0 || len(b) > size {
				t.Fatalf("queue %d: batch of %d, want 1..%d", q, len(b), size)
			}
			for _, i := range b {
				if QueueOf(ev, i, queues) != q {
					t.Errorf("event %d (key %s) in queue %d, want %d", i, ev.Key(i), q, QueueOf(ev, i, queues))
				}
				seen[i]++
			}
			order = append(order, b...)
		}
		if !slices.IsSorted(order) {
			t.Errorf("queue %d: events out of index order", q)
		}
	}
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("event %d sent %d times", i, n)
		}
	}
}

// Name servers write the broker id map with unquoted keys.
func TestBrokerAddrPattern(t *testing.T) {
	body := `{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:"127.0.0.1:10911",1:"127.0.0.1:10921"},"brokerName":"broker-a"},` +
		`"broker-b":{"brokerAddrs":{"0":"10.0.0.2:10911"},"brokerName":"broker-b"}},"clusterAddrTable":{}}`
	var got []string
	for _, m := range reBrokerAddr.FindAllStringSubmatch(body, -1) {
		got = append(got, m[1])
	}
	if want := []string{"127.0.0.1:10911", "10.0.0.2:10911"}; !slices.Equal(got, want) {
		t.Errorf("master addresses %v, want %v", got, want)
	}
}
