package boltstore

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/tasks"
)

// BenchmarkTaskLife measures the store as the invoke API and the
// dispatcher use it: 32 creators (the submissions in flight) and 64
// dispatchers moving each task to running, then succeeded, with a 1 KiB
// event. ns/op is per task (three writes); the p50/p99 of the create are
// reported too. Create waits for the record's commit; CreateDeferred (what
// the invoke API uses) does not.
//
//	go test -run '^$' -bench TaskLife -benchtime 10000x ./runtime/tasks/boltstore/
func BenchmarkTaskLife(b *testing.B) {
	b.Run("Create", func(b *testing.B) {
		benchTaskLife(b, func(s *Store) func(context.Context, *tasks.Task) error { return s.Create })
	})
	b.Run("CreateDeferred", func(b *testing.B) {
		benchTaskLife(b, func(s *Store) func(context.Context, *tasks.Task) error { return s.CreateDeferred })
	})
}

func benchTaskLife(b *testing.B, creator func(*Store) func(context.Context, *tasks.Task) error) {
	s, err := Open(filepath.Join(b.TempDir(), "tasks.db"), tasks.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	create := creator(s)
	ctx := b.Context()
	event := make([]byte, 1024)
	for i := range event {
		event[i] = 'a'
	}
	const creators, dispatchers = 32, 64
	ids := make(chan string, b.N)
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	var created, done sync.WaitGroup
	for c := range creators {
		created.Add(1)
		go func() {
			defer created.Done()
			for i := c; i < b.N; i += creators {
				start := time.Now()
				t := &tasks.Task{Tenant: "bench", Function: "noop", Event: event, Labels: map[string]string{"sluice.dev/instance": "i"}}
				if err := create(ctx, t); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(start)
				ids <- t.ID
			}
		}()
	}
	for range dispatchers {
		done.Add(1)
		go func() {
			defer done.Done()
			for id := range ids {
				for _, to := range []tasks.State{tasks.Running, tasks.Succeeded} {
					if _, err := s.Transition(ctx, "bench", id, to, nil); err != nil {
						b.Error(err)
						return
					}
				}
			}
		}()
	}
	created.Wait()
	close(ids)
	done.Wait()
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "create-p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "create-p99-ms")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}
