package rabbitq

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/queue/queuetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open connects a queue with a prefix of its own, so that the tests'
// queues stay apart from everything else on the broker.
func open(t testing.TB, cfg Config) *Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg.URL = testenv.RabbitURL(t)
	cfg.Prefix = testenv.UniqueName(t, "sluice")
	q, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return q
}

// TestQueueSuite runs the behaviour shared with the other queues, on
// quorum queues (the default) and on classic ones.
func TestQueueSuite(t *testing.T) {
	for _, typ := range []string{pipelines.RabbitQueueQuorum, pipelines.RabbitQueueClassic} {
		t.Run(typ, func(t *testing.T) {
			queuetest.Run(t, queuetest.Harness{
				Open:  func(t *testing.T) queue.Queue { return open(t, Config{QueueType: typ}) },
				Moves: true,
			})
		})
	}
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestDuplicatePublishStoresTwice: RabbitMQ does not deduplicate; a
// repeated msgID is stored again and no Receipt says Duplicate.
func TestDuplicatePublishStoresTwice(t *testing.T) {
	q := open(t, Config{})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	name := testenv.UniqueName(t, "dup")
	for range 2 {
		r, err := q.Publish(ctxOf(t), name, "same-id", []byte("x"), nil)
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if r.Duplicate {
			t.Fatalf("Receipt %+v reports a duplicate", r)
		}
	}
	if n, err := q.Depth(ctxOf(t), name); err != nil || n != 2 {
		t.Fatalf("Depth = %d, %v; want 2", n, err)
	}
}

// TestTooLarge: a message over MaxMessageBytes fails with ErrTooLarge.
func TestTooLarge(t *testing.T) {
	q := open(t, Config{MaxMessageBytes: 1024})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	_, err := q.Publish(ctxOf(t), "big", "", make([]byte, 4096), nil)
	if !errors.Is(err, queue.ErrTooLarge) {
		t.Fatalf("Publish of 4 KiB with a 1 KiB limit: %v, want ErrTooLarge", err)
	}
}
