// Package b5 is benchmark B5: Sluice's memory with a large backlog and a
// function slower than the inflow — peak RSS with 100k and with 1M events
// waiting, which must be the same (the broker holds the backlog, Sluice
// reads ahead a bounded amount). See BENCHMARKS.md and docs/benchmarks.md.
package b5

import (
	"context"
	"flag"
	"fmt"
	"math"
	"path/filepath"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/kafkaload"
	"github.com/sluicehq/sluice/bench/internal/measure"
	"github.com/sluicehq/sluice/bench/internal/procs"
)

// DefaultEvents is the large backlog; the small one is a tenth of it.
const DefaultEvents = 1_000_000

// Bars.
const (
	maxRSSMiB     = 256
	flatTolerance = 0.10 // growth allowed from the small to the large backlog…
	flatFloorMiB  = 8.0  // …or this much, whichever is larger (GC noise)
)

type knobs struct {
	partitions int
	size       int
	latency    time.Duration
	duration   time.Duration
	ordering   string
	profile    bool
	maxBatch   int
}

// Scenario is B5.
func Scenario() harness.Scenario {
	return harness.Scenario{
		Name:    "b5",
		Title:   "100k vs 1M backlog, function slower than the inflow: Sluice peak RSS",
		Brokers: []string{"kafka"},
		Flags: func(fs *flag.FlagSet) harness.Run {
			k := &knobs{}
			fs.IntVar(&k.partitions, "b5.partitions", 8, "partitions of the topics")
			fs.IntVar(&k.size, "b5.size", 1024, "bytes of data per event")
			fs.DurationVar(&k.latency, "b5.latency", 100*time.Millisecond, "function service time (slow: the backlog never drains)")
			fs.DurationVar(&k.duration, "b5.duration", 20*time.Second, "how long Sluice works on each backlog")
			fs.StringVar(&k.ordering, "b5.ordering", "none", "ordering mode (none reads ahead the most)")
			fs.IntVar(&k.maxBatch, "b5.max-batch", 128<<10, "bytes per record batch when producing the topics (sarama Producer.MaxMessageBytes; 0: sarama's 1 MiB, batches then follow the broker's pace): a fetch holds at least one batch per partition, so both topics get the same bound")
			fs.BoolVar(&k.profile, "b5.profile", false, "run Sluice with --pprof and save, per backlog in the run's directory, heap profiles a quarter into the backlog and at its end (<run>-heap-after.pprof, <run>-heap-end.pprof), the goroutines at the end and every sample's memory figures (<run>-mem.tsv: VmRSS, VmHWM, Go heap in use/idle/released, stacks, GC target, goroutines)")
			return func(ctx context.Context, env *harness.Env) (*harness.Report, error) {
				return run(ctx, env, *k)
			}
		},
	}
}

type backlogRun struct {
	Backlog    int         `json:"backlog"`
	PeakRSSMiB harness.Num `json:"peakRSSMiB"`
	EndRSSMiB  harness.Num `json:"endRSSMiB"`
	Processed  harness.Num `json:"processed"`
	Rate       harness.Num `json:"eventsPerSecond"`
	MaxLimit   harness.Num `json:"maxLimit"`
}

func run(ctx context.Context, env *harness.Env, k knobs) (*harness.Report, error) {
	large := env.EventsOr(DefaultEvents)
	backlogs := []int{large / 10, large}
	topics := make([]string, len(backlogs))
	for i, n := range backlogs {
		topics[i] = fmt.Sprintf("%s-%d", env.ID, n)
		if err := kafkaload.CreateTopic(env.KafkaBrokers, topics[i], k.partitions); err != nil {
			return nil, err
		}
		defer func() {
			if err := kafkaload.DeleteTopic(env.KafkaBrokers, topics[i]); err != nil {
				fmt.Fprintln(env.Log, "warning:", err)
			}
		}()
		ev := kafkaload.Events{N: n, Size: k.size, Keys: 1000, MaxBatchBytes: k.maxBatch}
		if err := kafkaload.Produce(ctx, env.KafkaBrokers, topics[i], k.partitions, ev, env.Progress); err != nil {
			return nil, err
		}
	}
	var runs [][]backlogRun
	for r := 1; r <= env.Runs; r++ {
		var pair []backlogRun
		for i, n := range backlogs {
			label := fmt.Sprintf("r%d backlog %d", r, n)
			br, err := measureBacklog(ctx, env, k, topics[i], n, label, fmt.Sprintf("r%d-%d", r, n))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", label, err)
			}
			pair = append(pair, br)
		}
		runs = append(runs, pair)
	}
	return report(env, k, backlogs, runs), nil
}

func measureBacklog(ctx context.Context, env *harness.Env, k knobs, topic string, n int, label, file string) (backlogRun, error) {
	fn, err := procs.StartFunction(ctx, env.Function, []string{"-latency", k.latency.String()},
		filepath.Join(env.WorkDir, file+"-function.log"))
	if err != nil {
		return backlogRun{}, err
	}
	defer fn.Stop(10 * time.Second)
	pl := measure.Pipeline{Name: "b5", Brokers: env.KafkaBrokers, Topic: topic, Group: env.ID + "-" + file,
		URL: fn.URL, Ordering: k.ordering}
	opts := measure.Opts{MaxDuration: k.duration, Label: label, Every: 250 * time.Millisecond}
	if k.profile {
		opts.Profile = &measure.Profile{After: k.duration / 4, Memory: true}
	}
	r, err := measure.Sluice(ctx, env.Sluice, env.WorkDir, pl, fn, opts, env.Progress)
	if err != nil {
		return backlogRun{}, err
	}
	br := backlogRun{Backlog: n, PeakRSSMiB: harness.Num(float64(r.PeakRSS) / (1 << 20)),
		Processed: harness.Num(r.Processed), Rate: harness.Num(r.Rate()), MaxLimit: harness.Num(math.NaN())}
	if len(r.Samples) > 0 {
		last := r.Samples[len(r.Samples)-1]
		br.EndRSSMiB = harness.Num(float64(last.Sluice.RSSBytes) / (1 << 20))
		maxL := 0.0
		for _, s := range r.Samples {
			maxL = max(maxL, s.Limit)
		}
		br.MaxLimit = harness.Num(maxL)
	}
	if r.Processed >= float64(n) {
		fmt.Fprintf(env.Log, "warning: %s: the backlog ran dry; lower -b5.duration or raise -b5.latency\n", label)
	}
	return br, nil
}

func report(env *harness.Env, k knobs, backlogs []int, runs [][]backlogRun) *harness.Report {
	col := func(i int, get func(backlogRun) harness.Num) []float64 {
		out := make([]float64, len(runs))
		for j, r := range runs {
			out[j] = float64(get(r[i]))
		}
		return out
	}
	t := harness.Table{
		Title: fmt.Sprintf("B5: %d partitions, events of %d B, function %v, ordering %s, Sluice default concurrency, %v per backlog; median of %d runs (range)",
			k.partitions, k.size, k.latency, k.ordering, k.duration, env.Runs),
		Header: []string{"backlog", "peak RSS MiB", "RSS at end MiB", "processed", "events/s", "max AIMD limit"},
	}
	for i, n := range backlogs {
		t.Rows = append(t.Rows, []string{fmt.Sprint(n),
			harness.Spread(col(i, func(b backlogRun) harness.Num { return b.PeakRSSMiB }), 1),
			harness.Spread(col(i, func(b backlogRun) harness.Num { return b.EndRSSMiB }), 1),
			harness.Spread(col(i, func(b backlogRun) harness.Num { return b.Processed }), 0),
			harness.Spread(col(i, func(b backlogRun) harness.Num { return b.Rate }), 0),
			harness.Spread(col(i, func(b backlogRun) harness.Num { return b.MaxLimit }), 0)})
	}
	small := col(0, func(b backlogRun) harness.Num { return b.PeakRSSMiB })
	large := col(len(backlogs)-1, func(b backlogRun) harness.Num { return b.PeakRSSMiB })
	growth := make([]float64, len(runs))
	peak := make([]float64, len(runs))
	for i := range runs {
		growth[i] = large[i] - small[i]
		peak[i] = max(large[i], small[i])
	}
	g, s, p := harness.Median(growth), harness.Median(small), harness.Median(peak)
	allowed := max(flatTolerance*s, flatFloorMiB)
	t2 := harness.Table{Title: "B5: growth", Header: []string{"figure", "median (range)"}, Rows: [][]string{
		{fmt.Sprintf("peak RSS growth %d → %d backlog, MiB", backlogs[0], backlogs[len(backlogs)-1]), harness.Spread(growth, 1)},
		{"growth ÷ peak RSS at the small backlog", harness.Spread(harness.Ratios(growth, small), 3)},
	}}
	return &harness.Report{
		Scenario: "b5", Title: "memory with a large backlog",
		Params: map[string]any{"backlogs": backlogs, "partitions": k.partitions, "eventBytes": k.size,
			"latency": k.latency.String(), "duration": k.duration.String(), "ordering": k.ordering, "runs": env.Runs,
			"maxBatchBytes": k.maxBatch},
		Tables: []harness.Table{t, t2},
		Bars: []harness.Bar{
			harness.Judge("B5: Sluice peak RSS", fmt.Sprintf("≤ %d MiB", maxRSSMiB), harness.F(p, 1)+" MiB", p <= maxRSSMiB),
			harness.Judge("B5: peak RSS growth from the small to the large backlog (flat)",
				fmt.Sprintf("≤ %.0f %% or %.0f MiB", 100*flatTolerance, flatFloorMiB), harness.F(g, 1)+" MiB", g <= allowed),
		},
		Summary: map[string]any{"peakRSSMiB": harness.Num(p), "growthMiB": harness.Num(g), "smallPeakRSSMiB": harness.Num(s)},
		Runs:    runs,
		Notes: []string{
			"peak RSS is the sluice process's VmHWM after working on the backlog for the whole duration (startup included)",
			fmt.Sprintf("'flat' allows %.0f %% of the small-backlog figure or %.0f MiB, whichever is larger: Go's heap target moves by a few MiB between runs", 100*flatTolerance, flatFloorMiB),
		},
	}
}
