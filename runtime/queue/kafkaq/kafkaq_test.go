package kafkaq

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/queue/queuetest"
)

// TestMain ignores the metrics ticker of sarama's go-metrics dependency, a
// process-wide goroutine that is never stopped.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
}

// open connects a queue with a prefix of its own, so that the tests'
// topics stay apart from everything else on the broker.
func open(t testing.TB) *Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q, err := Open(ctx, Config{Brokers: testenv.KafkaBrokers(t), Prefix: testenv.UniqueName(t, "sluice")}, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return q
}

// TestQueueSuite runs the behaviour shared with the JetStream queue.
func TestQueueSuite(t *testing.T) {
	queuetest.Run(t, queuetest.Harness{
		Open:  func(t *testing.T) queue.Queue { return open(t) },
		Moves: false,
		// RetryAfter: held by the reader, then re-published (queue.HeldRetries).
		HoldsRetries: true,
	})
}

// TestDuplicatePublishStoresTwice: Kafka does not deduplicate; a repeated
// msgID is stored again and no Receipt says Duplicate (the task store makes
// the second delivery a no-op, see runtime/async's Kafka test).
func TestDuplicatePublishStoresTwice(t *testing.T) {
	q := open(t)
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name := testenv.UniqueName(t, "dup")
	for range 2 {
		r, err := q.Publish(ctx, name, "same-id", []byte("x"), nil)
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if r.Duplicate {
			t.Fatalf("Receipt %+v reports a duplicate", r)
		}
	}
	if n, err := q.Depth(ctx, name); err != nil || n != 2 {
		t.Fatalf("Depth = %d, %v; want 2", n, err)
	}
}

// TestTooLarge: a message over MaxMessageBytes fails with ErrTooLarge.
func TestTooLarge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q, err := Open(ctx, Config{Brokers: testenv.KafkaBrokers(t), Prefix: testenv.UniqueName(t, "sluice"), MaxMessageBytes: 1024}, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	_, err = q.Publish(ctx, "big", "", make([]byte, 4096), nil)
	if !errors.Is(err, queue.ErrTooLarge) {
		t.Fatalf("Publish of 4 KiB with a 1 KiB limit: %v, want ErrTooLarge", err)
	}
}
