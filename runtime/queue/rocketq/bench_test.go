package rocketq

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/runtime/queue/queuetest"
)

// BenchmarkPublish is queuetest.BenchPublish (B6 inputs) on RocketMQ.
//
//	go test -run '^$' -bench . -benchtime 5000x ./runtime/queue/rocketq/
func BenchmarkPublish(b *testing.B) {
	q := open(b, Config{})
	b.Cleanup(func() { _ = q.Close(context.Background()) })
	queuetest.BenchPublish(b, q)
}
