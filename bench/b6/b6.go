// Package b6 is benchmark B6: the asynchronous invoke API on its embedded
// defaults (NATS JetStream queue, bbolt task store) — submissions from a
// load generator, tasks executed by a no-op function — against a plain
// HTTP handler answering at once (the example function in -noop mode) with
// the same load. See BENCHMARKS.md and docs/benchmarks.md.
package b6

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/bench/internal/asyncload"
	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/procs"
)

// DefaultSubmissions per run.
const DefaultSubmissions = 20000

// Bars.
const (
	minRatio  = 0.5
	maxP99Acc = 20 * time.Millisecond
)

const apiKey = "bench-b6-key-0123456789"

type knobs struct {
	concurrency int
	size        int
	syncAlways  bool
	profile     time.Duration
}

// Scenario is B6.
func Scenario() harness.Scenario {
	return harness.Scenario{
		Name:  "b6",
		Title: "async invoke API (embedded queue and store): accepted/s, p99 accept latency, executed/s vs a plain 202 handler",
		Flags: func(fs *flag.FlagSet) harness.Run {
			k := &knobs{}
			fs.IntVar(&k.concurrency, "b6.concurrency", 32, "submissions in flight (keep-alive connections)")
			fs.IntVar(&k.size, "b6.size", 1024, "bytes of each invocation body")
			fs.BoolVar(&k.syncAlways, "b6.sync-always", false, "run Sluice with --queue-sync-always")
			fs.DurationVar(&k.profile, "b6.profile", 0, "if set, run Sluice with --pprof and save a CPU profile of this long, taken from the start of the submissions, as rN-cpu.pprof in the run's directory")
			return func(ctx context.Context, env *harness.Env) (*harness.Report, error) {
				return run(ctx, env, *k)
			}
		},
	}
}

type oneRun struct {
	PlainRate    harness.Num `json:"plainPerSecond"`
	PlainP99ms   harness.Num `json:"plainP99ms"`
	AcceptRate   harness.Num `json:"acceptedPerSecond"`
	AcceptP50ms  harness.Num `json:"acceptP50ms"`
	AcceptP99ms  harness.Num `json:"acceptP99ms"`
	ExecRate     harness.Num `json:"executedPerSecond"`
	Refused      int64       `json:"refused"`
	SluiceCPUSec harness.Num `json:"sluiceCPUSeconds"`
	PeakRSSMiB   harness.Num `json:"peakRSSMiB"`
}

func config(fnURL string) string {
	return fmt.Sprintf(`apiVersion: sluice.dev/v1
kind: Tenant
metadata: {name: bench}
spec: {apiKeys: [%q]}
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: noop, tenant: bench}
spec:
  url: %s
  delivery:
    concurrency: {initial: 32, max: 512}
`, apiKey, fnURL)
}

func run(ctx context.Context, env *harness.Env, k knobs) (*harness.Report, error) {
	n := env.EventsOr(DefaultSubmissions)
	body := asyncload.Body(k.size)
	var runs []oneRun
	for r := 1; r <= env.Runs; r++ {
		or, err := measure(ctx, env, k, n, body, r)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", r, err)
		}
		runs = append(runs, or)
	}
	return report(env, k, n, runs), nil
}

func measure(ctx context.Context, env *harness.Env, k knobs, n int, body []byte, r int) (oneRun, error) {
	fn, err := procs.StartFunction(ctx, env.Function, []string{"-noop"}, filepath.Join(env.WorkDir, fmt.Sprintf("r%d-function.log", r)))
	if err != nil {
		return oneRun{}, err
	}
	defer fn.Stop(10 * time.Second)

	// The baseline: the same load against a handler that answers at once.
	var count atomic.Int64
	plainClient := asyncload.NewClient(fn.URL[:len(fn.URL)-1], "", k.concurrency)
	stop := env.Progress.Track(fmt.Sprintf("r%d plain handler", r), int64(n), count.Load)
	plain := asyncload.Submit(ctx, plainClient, "/", body, n, k.concurrency, 0, &count)
	stop()
	plainClient.Close()
	if ctx.Err() != nil {
		return oneRun{}, ctx.Err()
	}

	cfg := filepath.Join(env.WorkDir, fmt.Sprintf("r%d-b6.yaml", r))
	if err := os.WriteFile(cfg, []byte(config(fn.URL)), 0o600); err != nil {
		return oneRun{}, err
	}
	var extra []string
	if k.syncAlways {
		extra = append(extra, "--queue-sync-always")
	}
	if k.profile > 0 {
		extra = append(extra, "--pprof")
	}
	sl, err := asyncload.StartSluice(ctx, env.Sluice, cfg, filepath.Join(env.WorkDir, fmt.Sprintf("r%d-data", r)),
		filepath.Join(env.WorkDir, fmt.Sprintf("r%d-sluice.log", r)), extra...)
	if err != nil {
		return oneRun{}, err
	}
	defer sl.Stop(30 * time.Second)
	before, _ := sl.Usage()
	client := asyncload.NewClient("http://"+sl.Addr, apiKey, k.concurrency)
	defer client.Close()
	count.Store(0)
	profiled := make(chan error, 1)
	if k.profile > 0 {
		go func() {
			profiled <- saveProfile(ctx, "http://"+sl.Addr, k.profile, filepath.Join(env.WorkDir, fmt.Sprintf("r%d-cpu.pprof", r)))
		}()
	} else {
		profiled <- nil
	}
	stop = env.Progress.Track(fmt.Sprintf("r%d submissions", r), int64(n), count.Load)
	acc := asyncload.Submit(ctx, client, "/v1/functions/noop/invocations", body, n, k.concurrency, 0, &count)
	stop()
	if err := <-profiled; err != nil {
		env.Progress.Printf("r%d: CPU profile not saved: %v", r, err)
	}

	// Executed: every accepted task succeeded (the engine counts them).
	var executed atomic.Int64
	stop = env.Progress.Track(fmt.Sprintf("r%d executions", r), acc.Accepted, executed.Load)
	var done time.Time
	for deadline := time.Now().Add(10 * time.Minute); ; {
		m, err := sl.Metrics(ctx)
		if err == nil {
			executed.Store(int64(m.Sum("sluice_events_processed_total", map[string]string{"pipeline": "bench/function/noop", "outcome": "succeeded"})))
		}
		if executed.Load() >= acc.Accepted {
			done = time.Now()
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			stop()
			return oneRun{}, fmt.Errorf("%d of %d tasks executed", executed.Load(), acc.Accepted)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	after, _ := sl.Usage()
	ms := func(d time.Duration) harness.Num { return harness.Num(float64(d) / float64(time.Millisecond)) }
	return oneRun{
		PlainRate: harness.Num(plain.Rate()), PlainP99ms: ms(plain.Quantile(0.99)),
		AcceptRate: harness.Num(acc.Rate()), AcceptP50ms: ms(acc.Quantile(0.5)), AcceptP99ms: ms(acc.Quantile(0.99)),
		ExecRate: harness.Num(float64(acc.Accepted) / done.Sub(acc.First).Seconds()), Refused: acc.Refused,
		SluiceCPUSec: harness.Num(after.CPUSeconds - before.CPUSeconds), PeakRSSMiB: harness.Num(float64(after.HWMBytes) / (1 << 20)),
	}, nil
}

func report(env *harness.Env, k knobs, n int, runs []oneRun) *harness.Report {
	col := func(get func(oneRun) harness.Num) []float64 {
		out := make([]float64, len(runs))
		for i, r := range runs {
			out[i] = float64(get(r))
		}
		return out
	}
	plain, accepted := col(func(r oneRun) harness.Num { return r.PlainRate }), col(func(r oneRun) harness.Num { return r.AcceptRate })
	ratios := harness.Ratios(accepted, plain)
	p99 := col(func(r oneRun) harness.Num { return r.AcceptP99ms })
	var refused int64
	for _, r := range runs {
		refused += r.Refused
	}
	t := harness.Table{
		Title: fmt.Sprintf("B6: %d submissions of %d B per run, %d in flight, embedded queue (sync-always %v) and task store, no-op function; median of %d runs (range)",
			n, k.size, k.concurrency, k.syncAlways, env.Runs),
		Header: []string{"", "per second", "p50 ms", "p99 ms", "ratio to plain"},
		Rows: [][]string{
			{"plain 2xx handler", harness.Spread(plain, 0), "", harness.Spread(col(func(r oneRun) harness.Num { return r.PlainP99ms }), 2), "1"},
			{"accepted (202)", harness.Spread(accepted, 0), harness.Spread(col(func(r oneRun) harness.Num { return r.AcceptP50ms }), 2), harness.Spread(p99, 2), harness.Spread(ratios, 2)},
			{"executed", harness.Spread(col(func(r oneRun) harness.Num { return r.ExecRate }), 0), "", "", ""},
		},
	}
	cost := harness.Table{
		Title:  "Sluice process during submission and execution",
		Header: []string{"CPU seconds", "peak RSS MiB"},
		Rows: [][]string{{harness.Spread(col(func(r oneRun) harness.Num { return r.SluiceCPUSec }), 1),
			harness.Spread(col(func(r oneRun) harness.Num { return r.PeakRSSMiB }), 0)}},
	}
	ratio, p99m := harness.Median(ratios), harness.Median(p99)
	rep := &harness.Report{
		Scenario: "b6",
		Title:    "async invoke API vs a plain 202 handler",
		Params:   map[string]any{"submissions": n, "size": k.size, "concurrency": k.concurrency, "syncAlways": k.syncAlways},
		Tables:   []harness.Table{t, cost},
		Bars: []harness.Bar{
			harness.Judge("accepted/s ÷ plain handler", fmt.Sprintf("≥ %.1f", minRatio), harness.F(ratio, 2), ratio >= minRatio),
			harness.Judge("p99 accept latency", fmt.Sprintf("≤ %v", maxP99Acc), harness.F(p99m, 1)+" ms", p99m <= float64(maxP99Acc)/float64(time.Millisecond)),
		},
		Summary: map[string]any{"ratio": harness.Num(ratio), "acceptP99ms": harness.Num(p99m),
			"acceptedPerSecond": harness.Num(harness.Median(accepted)), "plainPerSecond": harness.Num(harness.Median(plain))},
		Runs: runs,
		Notes: []string{
			"A submission is accepted once the task is admitted in the task store's memory (bbolt writes and fsyncs the record in its next group commit, after the answer) and its message is in the queue (JetStream file store); executing a task writes the store twice more (running, succeeded).",
		},
	}
	if refused > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d submissions were refused (non-2xx) across the runs", refused))
	}
	return rep
}

// saveProfile fetches a CPU profile of d from a Sluice run with --pprof
// and writes it to path.
func saveProfile(ctx context.Context, base string, d time.Duration, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, int(d.Seconds())), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
