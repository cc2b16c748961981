package queue_test

import (
	"context"
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
