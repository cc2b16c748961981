// Package b1 is benchmark B1 (Kafka → no-op function → ack, against the
// raw-consume, raw-http and naive-bridge baselines) and B1b (the same in
// batch mode, against B1). See BENCHMARKS.md and docs/benchmarks.md.
package b1

import (
	"context"
	"flag"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/httpload"
	"github.com/sluicehq/sluice/bench/internal/kafkaload"
	"github.com/sluicehq/sluice/bench/internal/measure"
	"github.com/sluicehq/sluice/bench/internal/procs"
)

// DefaultEvents is B1's backlog (scaled by -events).
const DefaultEvents = 200_000

// knobs are B1's flags.
type knobs struct {
	partitions  int
	size        int
	keys        int
	concurrency int
	orderings   string
	batchMax    int
	latency     time.Duration
}

func (k *knobs) register(fs *flag.FlagSet, prefix string) {
	fs.IntVar(&k.partitions, prefix+".partitions", 8, "partitions of the topic")
	fs.IntVar(&k.size, prefix+".size", 1024, "bytes of data per event")
	fs.IntVar(&k.keys, prefix+".keys", 1000, "distinct partition keys")
	fs.IntVar(&k.concurrency, prefix+".concurrency", 32,
		"in-flight calls: Sluice's fixed concurrency and raw-http's workers (the naive bridge has one per partition)")
	fs.DurationVar(&k.latency, prefix+".latency", 0,
		"function service time; 0 runs it with -noop (the scenario as specified), more shows where per-partition sequencing bites")
}

// Scenario is B1.
func Scenario() harness.Scenario {
	return harness.Scenario{
		Name:    "b1",
		Title:   "Kafka → no-op function → ack: events/s, CPU, RSS vs raw-consume, raw-http, naive-bridge",
		Brokers: []string{"kafka"},
		Flags: func(fs *flag.FlagSet) harness.Run {
			k := &knobs{}
			k.register(fs, "b1")
			fs.StringVar(&k.orderings, "b1.orderings", "none,key", "Sluice ordering modes to measure")
			return func(ctx context.Context, env *harness.Env) (*harness.Report, error) {
				return runB1(ctx, env, *k)
			}
		},
	}
}

// contender is one measured configuration in one run.
type contender struct {
	Rate       harness.Num `json:"eventsPerSecond"`
	CPUPer100k harness.Num `json:"cpuSecondsPer100k"`
	PeakRSSMiB harness.Num `json:"peakRSSMiB,omitempty"`
	Seconds    harness.Num `json:"seconds"`
	// FnCPUPer100k is the function process's CPU time per 100k events
	// (NaN where the function is not called): on a small machine the
	// function competes with the contender for the same cores.
	FnCPUPer100k harness.Num `json:"functionCpuSecondsPer100k"`
}

// fnCPU measures the function's CPU time around f, per 100k events.
func fnCPU(fn *procs.Function, events int, f func() (contender, error)) (contender, error) {
	u0, err := fn.Usage()
	if err != nil {
		return contender{}, err
	}
	c, err := f()
	if err != nil {
		return c, err
	}
	u1, err := fn.Usage()
	if err != nil {
		return c, err
	}
	c.FnCPUPer100k = harness.Num((u1.CPUSeconds - u0.CPUSeconds) / float64(events) * 100_000)
	return c, nil
}

// setup is the topic and function every run of B1 and B1b shares.
type setup struct {
	ev    kafkaload.Events
	topic string
	fn    *procs.Function
}

// prepare creates and fills the topic and starts the no-op function. The
// returned cleanup stops the function and deletes the topic.
func prepare(ctx context.Context, env *harness.Env, k knobs, withTopic func(topic, fnURL string) error) (*setup, func(), error) {
	n := env.EventsOr(DefaultEvents)
	s := &setup{ev: kafkaload.Events{N: n, Size: k.size, Keys: k.keys}, topic: env.ID}
	if err := kafkaload.CreateTopic(env.KafkaBrokers, s.topic, k.partitions); err != nil {
		return nil, nil, err
	}
	cleanup := func() {
		if s.fn != nil {
			_ = s.fn.Stop(10 * time.Second)
		}
		if err := kafkaload.DeleteTopic(env.KafkaBrokers, s.topic); err != nil {
			fmt.Fprintln(env.Log, "warning:", err)
		}
	}
	var err error
	flags := []string{"-noop"}
	if k.latency > 0 {
		flags = []string{"-latency", k.latency.String()}
	}
	s.fn, err = procs.StartFunction(ctx, env.Function, flags, filepath.Join(env.WorkDir, "function.log"))
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	if withTopic != nil {
		if err := withTopic(s.topic, s.fn.URL); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	if err := kafkaload.Produce(ctx, env.KafkaBrokers, s.topic, k.partitions, s.ev, env.Progress); err != nil {
		cleanup()
		return nil, nil, err
	}
	return s, cleanup, nil
}

// sluiceRun measures Sluice over the shared topic with a fresh group.
func sluiceRun(ctx context.Context, env *harness.Env, s *setup, pl measure.Pipeline, label string) (contender, error) {
	pl.Brokers, pl.Topic, pl.URL = env.KafkaBrokers, s.topic, s.fn.URL
	pl.Group = env.ID + "-" + strings.ReplaceAll(label, " ", "-")
	r, err := measure.Sluice(ctx, env.Sluice, env.WorkDir, pl, s.fn, measure.Opts{Target: int64(s.ev.N), Label: label}, env.Progress)
	if err != nil {
		return contender{}, fmt.Errorf("%s: %w", label, err)
	}
	if ok := r.Outcome(pl.ID(), "succeeded"); ok < float64(s.ev.N) {
		fmt.Fprintf(env.Log, "warning: %s: only %.0f of %d events succeeded\n", label, ok, s.ev.N)
	}
	return contender{
		Rate:       harness.Num(r.Rate()),
		CPUPer100k: harness.Num(r.CPUSeconds / r.Processed * 100_000),
		PeakRSSMiB: harness.Num(float64(r.PeakRSS) / (1 << 20)),
		Seconds:    harness.Num(r.End.Sub(r.First).Seconds()),
	}, nil
}

// b1Run is one run of B1.
type b1Run struct {
	RawConsume  contender            `json:"rawConsume"`
	RawHTTP     contender            `json:"rawHTTP"`
	NaiveBridge contender            `json:"naiveBridge"`
	Sluice      map[string]contender `json:"sluice"` // by ordering
}

func runB1(ctx context.Context, env *harness.Env, k knobs) (*harness.Report, error) {
	orderings := splitList(k.orderings)
	s, cleanup, err := prepare(ctx, env, k, nil)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	n := int64(s.ev.N)
	runs := make([]b1Run, 0, env.Runs)
	for r := 1; r <= env.Runs; r++ {
		tag := fmt.Sprintf("r%d", r)
		run := b1Run{Sluice: map[string]contender{}}
		rc, err := kafkaload.RawConsume(ctx, env.KafkaBrokers, s.topic, env.ID+"-"+tag+"-raw", n, tag+" raw-consume", env.Progress)
		if err != nil {
			return nil, err
		}
		run.RawConsume = baseline(rc.Rate(), rc.CPUSeconds, rc.Events, rc.Last.Sub(rc.First).Seconds())
		if run.RawHTTP, err = fnCPU(s.fn, s.ev.N, func() (contender, error) {
			rh, err := httpload.Run(ctx, httpload.Load{URL: s.fn.URL, Events: s.ev, Concurrency: k.concurrency, Label: tag + " raw-http"}, env.Progress)
			return baseline(rh.Rate(), rh.CPUSeconds, rh.Events, rh.Last.Sub(rh.First).Seconds()), err
		}); err != nil {
			return nil, err
		}
		if run.NaiveBridge, err = fnCPU(s.fn, s.ev.N, func() (contender, error) {
			nb, err := kafkaload.NaiveBridge(ctx, env.KafkaBrokers, s.topic, env.ID+"-"+tag+"-naive", s.fn.URL, n, tag+" naive-bridge", env.Progress)
			return baseline(nb.Rate(), nb.CPUSeconds, nb.Events, nb.Last.Sub(nb.First).Seconds()), err
		}); err != nil {
			return nil, err
		}
		for _, o := range orderings {
			pl := measure.Pipeline{Name: "b1-" + o, Ordering: o}.Fixed(k.concurrency)
			c, err := fnCPU(s.fn, s.ev.N, func() (contender, error) { return sluiceRun(ctx, env, s, pl, tag+" sluice "+o) })
			if err != nil {
				return nil, err
			}
			run.Sluice[o] = c
		}
		runs = append(runs, run)
	}
	return b1Report(env, k, s, orderings, runs), nil
}

func baseline(rate, cpu float64, events int64, seconds float64) contender {
	return contender{Rate: harness.Num(rate), CPUPer100k: harness.Num(cpu / float64(events) * 100_000),
		PeakRSSMiB: harness.Num(math.NaN()), Seconds: harness.Num(seconds), FnCPUPer100k: harness.Num(math.NaN())}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
