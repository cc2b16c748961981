package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Publish and accept benchmarks for B6 (docs/queues.md records results;
// BenchmarkPublish is in suite_test.go):
//
//	go test -run '^$' -bench . -benchtime 20000x ./runtime/queue/
//
// Each reports the 99th percentile latency of one operation as p99-ms.

// benchParallelism × GOMAXPROCS goroutines send at once, like concurrent
// invoke API requests (as queuetest.BenchPublish).
const benchParallelism = 16

// BenchmarkAccept compares an HTTP handler that answers 202 without doing
// anything (B6's baseline) with one that first publishes the body durably.
func BenchmarkAccept(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 1024)
	cases := []struct {
		name string
		sync bool
		pub  bool
	}{
		{"plain-202", false, false},
		{"publish-202", false, true},
		{"publish-202-SyncAlways", true, true},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			var q Queue
			if tc.pub {
				q = benchQueue(b, tc.sync)
			}
			var seq atomic.Int64
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				id := "t-" + strconv.FormatInt(seq.Add(1), 10)
				if q != nil {
					if _, err := q.Publish(r.Context(), "accept", id, body, map[string]string{"content-type": "application/json"}); err != nil {
						http.Error(w, err.Error(), http.StatusServiceUnavailable)
						return
					}
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusAccepted)
				fmt.Fprintf(w, `{"taskId":%q}`, id)
			})
			srv := httptest.NewServer(h)
			defer srv.Close()
			tr := &http.Transport{MaxIdleConnsPerHost: 1024}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			lat := newLatencies()
			b.SetBytes(int64(len(payload)))
			b.SetParallelism(benchParallelism)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					start := time.Now()
					resp, err := client.Post(srv.URL, "application/json", bytes.NewReader(payload))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
					mine = append(mine, time.Since(start))
				}
				lat.add(mine)
			})
			b.StopTimer()
			lat.report(b)
		})
	}
}

func benchQueue(b *testing.B, sync bool) Queue {
	b.Helper()
	q, err := OpenEmbedded(context.Background(), EmbeddedConfig{DataDir: b.TempDir(), SyncAlways: sync}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = q.Close(ctx)
	})
	return q
}

type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func newLatencies() *latencies { return &latencies{} }

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d...)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B) {
	if len(l.all) == 0 {
		return
	}
	slices.Sort(l.all)
	p := func(q float64) float64 {
		return float64(l.all[int(q*float64(len(l.all)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(p(0.5), "p50-ms")
	b.ReportMetric(p(0.99), "p99-ms")
}
