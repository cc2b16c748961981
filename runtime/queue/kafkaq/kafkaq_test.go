package kafkaq

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/internal/cetest"
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

// TestCloseDuringRetryDelay: a reader closed while it holds a message for
// its retry delay gives it back at once (Close does not wait out the delay
// or its own deadline), and the next reader of the group gets it.
func TestCloseDuringRetryDelay(t *testing.T) {
	q := open(t)
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	name := testenv.UniqueName(t, "hold")
	if err := q.CreateQueue(ctx, name); err != nil {
		t.Fatalf("CreateQueue: %v", err)
	}
	data, headers, err := queue.EncodeEvent(cetest.New(t, "held", map[string]any{"n": 1}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Publish(ctx, name, "held-1", data, headers); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	first := q.Source(name, connectors.Options{Window: 4, Name: "first"})
	if err := first.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	_, ack, err := first.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if err := ack(ctx, queue.RetryAfter(errors.New("paused"), time.Hour)); err != nil {
		t.Fatalf("ack with RetryAfter: %v", err)
	}
	// A generous bound: were the held message not given back, Close would
	// wait all of it and then report it unacknowledged.
	closeCtx, closeCancel := context.WithTimeout(ctx, time.Minute)
	defer closeCancel()
	if err := first.Close(closeCtx); err != nil {
		t.Fatalf("Close while holding a message for its retry delay: %v", err)
	}
	second := q.Source(name, connectors.Options{Window: 4, Name: "second"})
	if err := second.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer func() { _ = second.Close(context.Background()) }()
	msg, ack, err := second.Read(ctx)
	if err != nil {
		t.Fatalf("Read after the first reader closed: %v", err)
	}
	if msg.Coordinates.ID != "held-1" {
		t.Fatalf("read msgID %q, want held-1", msg.Coordinates.ID)
	}
	if err := ack(ctx, nil); err != nil {
		t.Fatalf("ack: %v", err)
	}
}
