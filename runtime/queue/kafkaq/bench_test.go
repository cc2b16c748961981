package kafkaq

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/runtime/queue/queuetest"
)

// BenchmarkPublish is queuetest.BenchPublish (B6 inputs) on Kafka.
//
//	go test -run '^$' -bench . -benchtime 5000x ./runtime/queue/kafkaq/
func BenchmarkPublish(b *testing.B) {
	q := open(b)
	b.Cleanup(func() { _ = q.Close(context.Background()) })
	queuetest.BenchPublish(b, q)
}
