package rocketq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/queue/queuetest"
)

// TestMain ignores the RocketMQ client library's own goroutines, as the
// connector's tests do (connectors/rocketmq/helpers_test.go): they outlive
// Shutdown (pull requests wait out their RPC timeout, the expired-message
// cleaner sleeps its consume timeout first), and one started at the
// client's init lives as long as the process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/primitive.WithRecover"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/consumer.(*pushConsumer).pullMessage"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/consumer.(*pushConsumer).Start.func1"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/internal.(*rmqClient).RebalanceImmediately"),
		goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"),
	)
}

// open connects a queue with a prefix of its own, so that the tests'
// topics stay apart from everything else on the broker.
func open(t testing.TB, cfg Config) *Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg.NameServers = []string{testenv.RocketMQNameServer(t)}
	if cfg.Prefix == "" {
		// Short: topics are limited to 120 characters, and the suite's
		// queue names take up to 100.
		var b [4]byte
		_, _ = rand.Read(b[:])
		cfg.Prefix = "sq" + hex.EncodeToString(b[:])
	}
	q, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return q
}

// TestQueueSuite runs the behaviour shared with the JetStream and Kafka
// queues.
func TestQueueSuite(t *testing.T) {
	queuetest.Run(t, queuetest.Harness{
		Open:  func(t *testing.T) queue.Queue { return open(t, Config{}) },
		Moves: false,
		// RetryAfter: held by the reader, then re-published (queue.HeldRetries).
		HoldsRetries: true,
	})
}

// TestDuplicatePublishStoresTwice: RocketMQ does not deduplicate; a
// repeated msgID is stored again, no Receipt says Duplicate, and a reader
// gets both (the task store makes the second delivery a no-op).
func TestDuplicatePublishStoresTwice(t *testing.T) {
	q := open(t, Config{Queues: 1})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	name := testenv.UniqueName(t, "dup")
	ev := cetest.New(t, "same", map[string]any{"n": 1})
	data, headers, err := queue.EncodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for range 2 {
		r, err := q.Publish(ctx, name, "same-id", data, headers)
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if r.Duplicate {
			t.Fatalf("Receipt %+v reports a duplicate", r)
		}
		seqs = append(seqs, r.Seq)
	}
	if seqs[0] == seqs[1] {
		t.Errorf("both publishes got Seq %d; one queue, want two offsets", seqs[0])
	}
	if n, err := q.Depth(ctx, name); err != nil || n != 2 {
		t.Fatalf("Depth = %d, %v; want 2", n, err)
	}
	src := q.Source(name, connectors.Options{Window: 4, Name: "dup"})
	if err := src.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer func() { _ = src.Close(context.Background()) }()
	for i := range 2 {
		msg, ack, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("Read %d: %v", i+1, err)
		}
		if msg.Coordinates.ID != "same-id" || msg.Event.ID() != ev.ID() {
			t.Errorf("read %s (msgID %q), want %s with msgID same-id", msg.Event.ID(), msg.Coordinates.ID, ev.ID())
		}
		if err := ack(ctx, nil); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
}

// TestTooLarge: a body over MaxMessageBytes fails with ErrTooLarge, and so
// do headers over RocketMQ's property limit; nothing is stored.
func TestTooLarge(t *testing.T) {
	q := open(t, Config{MaxMessageBytes: 1024})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name := testenv.UniqueName(t, "big")
	if _, err := q.Publish(ctx, name, "", make([]byte, 4096), nil); !errors.Is(err, queue.ErrTooLarge) {
		t.Fatalf("Publish of 4 KiB with a 1 KiB limit: %v, want ErrTooLarge", err)
	}
	huge := map[string]string{"ce-big": string(make([]byte, 40000))}
	if _, err := q.Publish(ctx, name, "", []byte("x"), huge); !errors.Is(err, queue.ErrTooLarge) {
		t.Fatalf("Publish with 40 kB of headers: %v, want ErrTooLarge", err)
	}
	if n, err := q.Depth(ctx, name); err != nil || n != 0 {
		t.Fatalf("Depth = %d, %v; want 0", n, err)
	}
}

// TestEventWithoutData: an event without data (which RocketMQ could not
// store as an empty body) comes back as it was, with its msgID although
// that holds a space (KEYS' separator).
func TestEventWithoutData(t *testing.T) {
	q := open(t, Config{Queues: 1})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	name := testenv.UniqueName(t, "empty")
	ev := cetest.New(t, "nodata", nil)
	ev.SetExtension("tenant", "acme")
	data, headers, err := queue.EncodeEvent(ev)
	if err != nil || len(data) != 0 {
		t.Fatalf("EncodeEvent = %d bytes, %v; want no data", len(data), err)
	}
	if _, err := q.Publish(ctx, name, "m 1", data, headers); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	src := q.Source(name, connectors.Options{Window: 4, Name: "empty"})
	if err := src.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer func() { _ = src.Close(context.Background()) }()
	msg, ack, err := src.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	cetest.Equal(t, ev, msg.Event)
	if msg.Coordinates.ID != "m 1" {
		t.Errorf("Coordinates.ID = %q, want %q", msg.Coordinates.ID, "m 1")
	}
	if err := ack(ctx, nil); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

// TestTopicNames: dots map to '|' and back; other prefixes' topics and
// names too long for RocketMQ are refused.
func TestTopicNames(t *testing.T) {
	q := &Queue{cfg: Config{Prefix: "p"}}
	if got := q.Topic("acme.fn-1_x"); got != "p_acme|fn-1_x" {
		t.Errorf("Topic = %q, want p_acme|fn-1_x", got)
	}
	for topic, want := range map[string]string{"p_acme|fn": "acme.fn", "p_a": "a", "p2_a": "", "p_": "", "p_a||b": "", "%RETRY%p_a": ""} {
		got, ok := q.queueName(topic)
		if ok != (want != "") || (ok && got != want) {
			t.Errorf("queueName(%q) = %q, %v; want %q", topic, got, ok, want)
		}
	}
	long := string(slices.Repeat([]byte("a"), maxTopicLen))
	if err := q.validName(long); !errors.Is(err, queue.ErrInvalidName) {
		t.Errorf("validName of a %d-byte name: %v, want ErrInvalidName", len(long), err)
	}
}
