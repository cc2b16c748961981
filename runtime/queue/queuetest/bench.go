package queuetest

import (
	"bytes"
	"context"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/queue"
)

// BenchPublish is every queue's BenchmarkPublish (B6 inputs) on q: 16 ×
// GOMAXPROCS goroutines publish 1 KiB messages to one queue, like
// concurrent invoke API requests; it reports the median and 99th
// percentile latency of one Publish as p50-ms and p99-ms. The caller owns
// q (and closes it).
func BenchPublish(b *testing.B, q queue.Queue) {
	payload := bytes.Repeat([]byte("x"), 1024)
	if err := q.CreateQueue(context.Background(), "bench"); err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	var mu sync.Mutex
	var all []time.Duration
	b.SetBytes(int64(len(payload)))
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			id := "b-" + strconv.FormatInt(seq.Add(1), 10)
			start := time.Now()
			if _, err := q.Publish(context.Background(), "bench", id, payload, nil); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		all = append(all, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	if len(all) > 0 {
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
}
