// Package b3 is benchmark B3: one partition, many keys, a 10 ms function;
// events/s in ordering partition, key and none, the speed-up of key over
// partition, and per-key order violations seen by the function. See
// BENCHMARKS.md and docs/benchmarks.md.
package b3

import (
	"context"
	"flag"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/kafkaload"
	"github.com/sluicehq/sluice/bench/internal/measure"
	"github.com/sluicehq/sluice/bench/internal/procs"
)

// DefaultEvents is B3's event count (scaled by -events).
const DefaultEvents = 50_000

type knobs struct {
	keys      int
	size      int
	latency   time.Duration
	cap       time.Duration
	orderings string
	max       int
	profile   time.Duration
}

// Scenario is B3.
func Scenario() harness.Scenario {
	return harness.Scenario{
		Name:    "b3",
		Title:   "1 partition, 1,000 keys, 10 ms function: ordering partition vs key vs none, order violations",
		Brokers: []string{"kafka"},
		Flags: func(fs *flag.FlagSet) harness.Run {
			k := &knobs{}
			fs.IntVar(&k.keys, "b3.keys", 1000, "distinct keys")
			fs.IntVar(&k.size, "b3.size", 1024, "bytes of data per event")
			fs.DurationVar(&k.latency, "b3.latency", 10*time.Millisecond, "function service time")
			fs.DurationVar(&k.cap, "b3.cap", 30*time.Second,
				"longest measurement per mode (ordering partition needs events × latency to finish: its rate is measured over this window)")
			fs.StringVar(&k.orderings, "b3.orderings", "partition,key,none", "ordering modes to measure")
			fs.IntVar(&k.max, "b3.max", 0, "concurrency max of the pipeline (0: Sluice's default AIMD bounds)")
			fs.DurationVar(&k.profile, "b3.profile", 0, "if set, run Sluice with --pprof in key mode and save, from 2 s after its first call, a CPU profile of this long and an execution trace of 2 s as <run>-cpu.pprof and <run>-trace.out in the run's directory")
			return func(ctx context.Context, env *harness.Env) (*harness.Report, error) {
				return run(ctx, env, *k)
			}
		},
	}
}

// modeRun is one ordering mode in one run.
type modeRun struct {
	Rate       harness.Num `json:"eventsPerSecond"`
	Processed  harness.Num `json:"processed"`
	Capped     bool        `json:"capped"`
	Violations int64       `json:"violations"`
	Duplicates int64       `json:"duplicates"`
	Gaps       int64       `json:"gaps"`
	MaxLimit   harness.Num `json:"maxLimit"`
	MeanInFlt  harness.Num `json:"meanInFlight"`
	// Summary condenses Trace: the limit and in-flight, and what bounded
	// in-flight sample by sample.
	Summary traceSummary `json:"traceSummary"`
	Trace   trace        `json:"trace"`
}

func run(ctx context.Context, env *harness.Env, k knobs) (*harness.Report, error) {
	modes := strings.Split(k.orderings, ",")
	ev := kafkaload.Events{N: env.EventsOr(DefaultEvents), Size: k.size, Keys: k.keys}
	topic := env.ID
	if err := kafkaload.CreateTopic(env.KafkaBrokers, topic, 1); err != nil {
		return nil, err
	}
	defer func() {
		if err := kafkaload.DeleteTopic(env.KafkaBrokers, topic); err != nil {
			fmt.Fprintln(env.Log, "warning:", err)
		}
	}()
	if err := kafkaload.Produce(ctx, env.KafkaBrokers, topic, 1, ev, env.Progress); err != nil {
		return nil, err
	}
	var runs []map[string]modeRun
	for r := 1; r <= env.Runs; r++ {
		byMode := map[string]modeRun{}
		for _, m := range modes {
			m = strings.TrimSpace(m)
			label := fmt.Sprintf("r%d sluice %s", r, m)
			mr, err := measureMode(ctx, env, k, ev, topic, m, label, fmt.Sprintf("r%d-%s", r, m))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", label, err)
			}
			byMode[m] = mr
		}
		runs = append(runs, byMode)
	}
	return report(env, k, ev, modes, runs), nil
}

func measureMode(ctx context.Context, env *harness.Env, k knobs, ev kafkaload.Events, topic, mode, label, file string) (modeRun, error) {
	// A fresh function per mode: its per-key order state starts empty.
	fn, err := procs.StartFunction(ctx, env.Function, []string{"-latency", k.latency.String(), "-check-order"},
		filepath.Join(env.WorkDir, file+"-function.log"))
	if err != nil {
		return modeRun{}, err
	}
	defer fn.Stop(10 * time.Second)
	pl := measure.Pipeline{Name: "b3-" + mode, Brokers: env.KafkaBrokers, Topic: topic, Group: env.ID + "-" + file,
		URL: fn.URL, Ordering: mode}
	if k.max > 0 {
		pl.Initial, pl.Min, pl.Max = min(8, k.max), 1, k.max
	}
	opts := measure.Opts{Target: int64(ev.N), MaxDuration: k.cap, Every: traceEvery, Label: label}
	if k.profile > 0 && mode == "key" {
		// Past slow start, while the backlog lasts (~6 s at ~8,000 events/s).
		opts.Profile = &measure.Profile{After: 2 * time.Second, CPU: k.profile, Trace: 2 * time.Second}
	}
	r, err := measure.Sluice(ctx, env.Sluice, env.WorkDir, pl, fn, opts, env.Progress)
	if err != nil {
		return modeRun{}, err
	}
	// The function's view after Sluice stopped: every call it answered.
	st, err := fn.Stats(ctx)
	if err != nil {
		return modeRun{}, err
	}
	mr := modeRun{Rate: harness.Num(r.Rate()), Processed: harness.Num(r.Processed), Capped: r.Capped}
	if st.Order != nil {
		mr.Violations, mr.Duplicates, mr.Gaps = st.Order.Violations, st.Order.Duplicates, st.Order.Gaps
	}
	mr.Trace = newTrace(r.Samples, r.First)
	mr.Summary = mr.Trace.summary()
	mr.MaxLimit, mr.MeanInFlt = mr.Summary.LimitMax, mr.Summary.InFlightMean
	b := mr.Summary.Bounds
	env.Progress.Printf("%s: limit p50 %s max %s; in flight p50 %s mean %s; held %s; bound by limit %s%%, queued in Sluice %s%%, source %s%% of samples",
		label, harness.F(float64(mr.Summary.LimitP50), 0), harness.F(float64(mr.Summary.LimitMax), 0),
		harness.F(float64(mr.Summary.InFlightP50), 0), harness.F(float64(mr.Summary.InFlightMean), 1),
		harness.F(float64(mr.Summary.HeldMean), 1), harness.F(100*float64(b[boundLimit]), 0),
		harness.F(100*float64(b[boundQueued]), 0), harness.F(100*float64(b[boundSource]), 0))
	return mr, nil
}

func report(env *harness.Env, k knobs, ev kafkaload.Events, modes []string, runs []map[string]modeRun) *harness.Report {
	col := func(mode string, get func(modeRun) float64) []float64 {
		var out []float64
		for _, r := range runs {
			if mr, ok := r[mode]; ok {
				out = append(out, get(mr))
			} else {
				out = append(out, math.NaN())
			}
		}
		return out
	}
	t := harness.Table{
		Title: fmt.Sprintf("B3: 1 partition, %d events of %d B, %d keys, function %v; median of %d runs (range)",
			ev.N, ev.Size, ev.Keys, k.latency, env.Runs),
		Header: []string{"ordering", "events/s", "processed", "max AIMD limit", "mean in flight", "order violations", "duplicates"},
	}
	rep := &harness.Report{Scenario: "b3", Title: "ordering modes on one partition with many keys",
		Params: map[string]any{"events": ev.N, "eventBytes": ev.Size, "keys": ev.Keys, "latency": k.latency.String(),
			"capPerMode": k.cap.String(), "concurrencyMax": k.max, "runs": env.Runs}, Runs: runs}
	for _, m := range modes {
		rates := col(m, func(r modeRun) float64 { return float64(r.Rate) })
		processed := harness.Spread(col(m, func(r modeRun) float64 { return float64(r.Processed) }), 0)
		if capped := col(m, func(r modeRun) float64 { return b2f(r.Capped) }); harness.Median(capped) > 0 {
			processed += fmt.Sprintf(" (stopped at %v)", k.cap)
		}
		viol := col(m, func(r modeRun) float64 { return float64(r.Violations) })
		t.Rows = append(t.Rows, []string{m, harness.Spread(rates, 0), processed,
			harness.Spread(col(m, func(r modeRun) float64 { return float64(r.MaxLimit) }), 0),
			harness.Spread(col(m, func(r modeRun) float64 { return float64(r.MeanInFlt) }), 1),
			harness.Spread(viol, 0),
			harness.Spread(col(m, func(r modeRun) float64 { return float64(r.Duplicates) }), 0)})
		if m == "key" || m == "partition" {
			worst := slices.Max(viol)
			rep.Bars = append(rep.Bars, harness.Judge("B3 "+m+": per-key order violations (all runs)", "0", harness.F(worst, 0), worst == 0))
		}
	}
	t3 := harness.Table{
		Title: fmt.Sprintf("B3: what bounded the calls in flight (samples every %v; median of runs; shares of samples)", traceEvery),
		Header: []string{"ordering", "limit p50", "limit max", "in flight p50", "in flight mean", "held mean",
			"at the limit", "queued in Sluice", "source"},
	}
	for _, m := range modes {
		sum := func(get func(traceSummary) harness.Num, decimals int) string {
			return harness.Spread(col(m, func(r modeRun) float64 { return float64(get(r.Summary)) }), decimals)
		}
		share := func(b string) string {
			return harness.F(100*harness.Median(col(m, func(r modeRun) float64 { return float64(r.Summary.Bounds[b]) })), 0) + " %"
		}
		t3.Rows = append(t3.Rows, []string{m,
			sum(func(s traceSummary) harness.Num { return s.LimitP50 }, 0),
			sum(func(s traceSummary) harness.Num { return s.LimitMax }, 0),
			sum(func(s traceSummary) harness.Num { return s.InFlightP50 }, 0),
			sum(func(s traceSummary) harness.Num { return s.InFlightMean }, 1),
			sum(func(s traceSummary) harness.Num { return s.HeldMean }, 1),
			share(boundLimit), share(boundQueued), share(boundSource)})
	}
	if slices.Contains(modes, "key") && slices.Contains(modes, "partition") {
		key := col("key", func(r modeRun) float64 { return float64(r.Rate) })
		part := col("partition", func(r modeRun) float64 { return float64(r.Rate) })
		limit := col("key", func(r modeRun) float64 { return float64(r.MaxLimit) })
		inflight := col("key", func(r modeRun) float64 { return float64(r.MeanInFlt) })
		speedup := harness.Ratios(key, part)
		// The bar per run: speed-up over 0.8 × the limit reached.
		score := harness.Ratios(speedup, limit)
		m, l := harness.Median(speedup), harness.Median(limit)
		t2 := harness.Table{Title: "B3: key over partition", Header: []string{"figure", "median (range)"},
			Rows: [][]string{
				{"speed-up of key over partition", harness.Spread(speedup, 1)},
				{"AIMD limit reached in key mode", harness.Spread(limit, 0)},
				{"mean in flight in key mode", harness.Spread(inflight, 1)},
				{"speed-up ÷ limit reached", harness.Spread(score, 2)},
				{"speed-up ÷ mean in flight", harness.Spread(harness.Ratios(speedup, inflight), 2)},
			}}
		rep.Tables = append(rep.Tables, t, t2, t3)
		rep.Bars = append(rep.Bars, harness.Judge("B3: speed-up of key over partition ÷ AIMD limit reached", "≥ 0.80",
			fmt.Sprintf("%s (%s× at limit %s)", harness.F(harness.Median(score), 2), harness.F(m, 1), harness.F(l, 0)), harness.Median(score) >= 0.8))
		rep.Summary = map[string]any{"speedup": harness.Num(m), "limitReached": harness.Num(l),
			"speedupOverLimit": harness.Num(harness.Median(score)), "perRunSpeedup": harness.Nums(speedup)}
	} else {
		rep.Tables = append(rep.Tables, t, t3)
	}
	rep.Notes = []string{
		fmt.Sprintf("ordering partition runs one call at a time (≈ 1/%v), so it is measured over at most %v rather than all events", k.latency, k.cap),
		"order violations, duplicates: the function's -check-order counters (a seq lower than, or equal to, the highest seen for its key); ordering none promises no order, so violations there are allowed (few appear: a key's events lie 1,000 offsets apart)",
		"events/s counts from the first function call to the last acknowledgement (or the cap)",
		"traces (JSON: runs[].<mode>.trace): limit, in flight and waiting from sluice_flow_*, held from sluice_events_in_flight; a sample is bound by the limit when calls wait for a slot or in flight is within 5 % of it, queued in Sluice when read events outside a call exceed a tenth of the limit, else by the source (nothing more read: in one partition, the source's read-ahead or its fetch)",
	}
	return rep
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
