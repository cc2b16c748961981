// Package httpload is the raw-http baseline: a load generator posting
// binary-mode CloudEvents straight to a function over keep-alive
// connections, with a fixed concurrency or one that follows a schedule.
package httpload

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/kafkaload"
	"github.com/sluicehq/sluice/bench/internal/procs"
)

// Result is one load run.
type Result struct {
	// Events is how many events were answered 2xx.
	Events int64
	// Refused counts non-2xx answers and transport errors (each retried).
	Refused     int64
	First, Last time.Time
	// CPUSeconds is what the bench process spent generating the load.
	CPUSeconds float64
	// Latencies of the 2xx calls, sorted.
	Latencies []time.Duration
}

// Rate is 2xx events per second.
func (r Result) Rate() float64 {
	d := r.Last.Sub(r.First).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(r.Events) / d
}

// Quantile of the 2xx latencies (0 if none).
func (r Result) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := min(int(q*float64(len(r.Latencies))), len(r.Latencies)-1)
	return r.Latencies[i]
}

// Load describes a run.
type Load struct {
	URL    string
	Events kafkaload.Events
	// Concurrency is the number of workers, each with one call in flight.
	Concurrency int
	// Active, if set, says how many workers may send at elapsed time t
	// since Origin (workers beyond it idle); it lets a load follow a
	// capacity schedule exactly. Nil: all of them.
	Active func(t time.Duration) int
	Origin time.Time
	// Until, if non-zero, ends the run at that time instead of after
	// Events.N events (events are then reused cyclically).
	Until time.Time
	// Label names the run in progress output.
	Label string
}

// Run posts the events and returns when all were answered 2xx (or Until
// passed, or ctx ended: then with ctx's error). A refused event is retried
// by the same worker until it succeeds.
func Run(ctx context.Context, l Load, progress *harness.Progress) (Result, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = l.Concurrency
	tr.MaxConnsPerHost = l.Concurrency
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	var next, ok, refused atomic.Int64
	total := int64(l.Events.N)
	if !l.Until.IsZero() {
		total = 0
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !l.Until.IsZero() {
		var stopAt context.CancelFunc
		runCtx, stopAt = context.WithDeadline(runCtx, l.Until)
		defer stopAt()
	}
	stop := progress.Track(l.Label, total, ok.Load)
	u0, _ := procs.ReadUsage(0)
	first := time.Now()

	lats := make([][]time.Duration, l.Concurrency)
	var wg sync.WaitGroup
	for w := range l.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				if l.Active != nil && w >= l.Active(time.Since(l.Origin)) {
					time.Sleep(time.Millisecond)
					continue
				}
				i := next.Add(1) - 1
				if total > 0 && i >= total {
					return
				}
				idx := int(i % int64(max(l.Events.N, 1)))
				for runCtx.Err() == nil {
					start := time.Now()
					if post(runCtx, client, l.URL, l.Events, idx) {
						lats[w] = append(lats[w], time.Since(start))
						if ok.Add(1) == total {
							cancel()
						}
						break
					}
					if runCtx.Err() == nil {
						refused.Add(1)
					}
					if l.Active != nil && w >= l.Active(time.Since(l.Origin)) {
						break // the event is dropped with the worker; the load is what matters
					}
				}
			}
		}()
	}
	wg.Wait()
	last := time.Now()
	u1, _ := procs.ReadUsage(0)
	stop()
	r := Result{Events: ok.Load(), Refused: refused.Load(), First: first, Last: last, CPUSeconds: u1.CPUSeconds - u0.CPUSeconds}
	for _, ls := range lats {
		r.Latencies = append(r.Latencies, ls...)
	}
	slices.Sort(r.Latencies)
	if total > 0 && r.Events < total {
		return r, ctx.Err()
	}
	return r, nil
}

// post sends event i; true on a 2xx answer.
func post(ctx context.Context, client *http.Client, url string, ev kafkaload.Events, i int) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(ev.Data(i)))
	if err != nil {
		return false
	}
	h := req.Header
	h["Ce-Specversion"] = []string{"1.0"}
	h["Ce-Id"] = []string{ev.ID(i)}
	h["Ce-Source"] = []string{kafkaload.Source}
	h["Ce-Type"] = []string{kafkaload.Type}
	h["Ce-Partitionkey"] = []string{ev.Key(i)}
	h["Content-Type"] = []string{kafkaload.ContentType}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode/100 == 2
}
