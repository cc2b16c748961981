package queue_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/queue/queuetest"
)

// TestQueueSuite runs the behaviour shared with the Kafka queue against the
// embedded JetStream queue.
func TestQueueSuite(t *testing.T) {
	queuetest.Run(t, queuetest.Harness{
		Open: func(t *testing.T) queue.Queue {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			q, err := queue.OpenEmbedded(ctx, queue.EmbeddedConfig{DataDir: t.TempDir()}, nil)
			if err != nil {
				t.Fatalf("OpenEmbedded: %v", err)
			}
			return q
		},
		Moves: true,
	})
}

// BenchmarkPublish is queuetest.BenchPublish (B6 inputs) on the embedded
// queue, with and without an fsync per write.
func BenchmarkPublish(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run("SyncAlways="+strconv.FormatBool(sync), func(b *testing.B) {
			q, err := queue.OpenEmbedded(context.Background(), queue.EmbeddedConfig{DataDir: b.TempDir(), SyncAlways: sync}, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				_ = q.Close(ctx)
			})
			queuetest.BenchPublish(b, q)
		})
	}
}
