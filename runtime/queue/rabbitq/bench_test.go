package rabbitq

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/queue/queuetest"
)

// BenchmarkPublish is queuetest.BenchPublish (B6 inputs) on RabbitMQ, on a
// quorum and on a classic queue.
//
//	go test -run '^$' -bench . -benchtime 5000x ./runtime/queue/rabbitq/
func BenchmarkPublish(b *testing.B) {
	for _, typ := range []string{pipelines.RabbitQueueQuorum, pipelines.RabbitQueueClassic} {
		b.Run(typ, func(b *testing.B) {
			q := open(b, Config{QueueType: typ})
			b.Cleanup(func() { _ = q.Close(context.Background()) })
			queuetest.BenchPublish(b, q)
		})
	}
}
