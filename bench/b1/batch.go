package b1

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/measure"
	"github.com/sluicehq/sluice/bench/internal/procs"
)

// BatchScenario is B1b: B1's pipeline in batch mode, against B1 (binary
// mode, ordering none) measured in the same run.
func BatchScenario() harness.Scenario {
	return harness.Scenario{
		Name:    "b1b",
		Title:   "B1 with batch delivery (application/cloudevents-batch+json): events/s vs B1",
		Brokers: []string{"kafka"},
		Flags: func(fs *flag.FlagSet) harness.Run {
			k := &knobs{}
			k.register(fs, "b1b")
			fs.IntVar(&k.batchMax, "b1b.max-events", 100, "function.batch.maxEvents")
			return func(ctx context.Context, env *harness.Env) (*harness.Report, error) {
				return runB1b(ctx, env, *k)
			}
		},
	}
}

// unavailableError says Sluice refused the batch configuration.
type unavailableError struct{ reason string }

func (e *unavailableError) Error() string { return "batch mode not available: " + e.reason }

type b1bRun struct {
	Binary contender `json:"binary"`
	Batch  contender `json:"batch"`
}

func runB1b(ctx context.Context, env *harness.Env, k knobs) (*harness.Report, error) {
	batch := measure.Pipeline{Name: "b1b-batch", Mode: "batch", BatchMax: k.batchMax, Ordering: "none"}.Fixed(k.concurrency)
	binary := measure.Pipeline{Name: "b1b-binary", Ordering: "none"}.Fixed(k.concurrency)
	s, cleanup, err := prepare(ctx, env, k, func(topic, fnURL string) error {
		// Ask Sluice first, before producing the backlog: a refused
		// configuration makes the rest pointless.
		return probe(ctx, env, batch, topic, fnURL)
	})
	var un *unavailableError
	if errors.As(err, &un) {
		return unavailableReport(env, k, un.reason), nil
	}
	if err != nil {
		return nil, err
	}
	defer cleanup()
	runs := make([]b1bRun, 0, env.Runs)
	for r := 1; r <= env.Runs; r++ {
		tag := fmt.Sprintf("r%d", r)
		var run b1bRun
		if run.Binary, err = sluiceRun(ctx, env, s, binary, tag+" sluice binary"); err != nil {
			return nil, err
		}
		if run.Batch, err = sluiceRun(ctx, env, s, batch, tag+" sluice batch"); err != nil {
			return nil, err
		}
		runs = append(runs, run)
	}
	return b1bReport(env, k, s, runs), nil
}

// probe starts Sluice on the batch pipeline and reports whether it gets
// ready.
func probe(ctx context.Context, env *harness.Env, pl measure.Pipeline, topic, url string) error {
	pl.Brokers, pl.Topic, pl.URL, pl.Group = env.KafkaBrokers, topic, url, env.ID+"-probe"
	path, err := pl.Write(env.WorkDir, "probe.yaml")
	if err != nil {
		return err
	}
	s, err := procs.StartSluice(env.Sluice, path, filepath.Join(env.WorkDir, "probe.log"), time.Second)
	if err != nil {
		return err
	}
	readyErr := s.WaitReady(ctx, 60*time.Second)
	stopErr := s.Stop(15 * time.Second)
	if tail, ok := measure.Rejected(readyErr); ok {
		return &unavailableError{reason: lastLine(tail)}
	}
	if readyErr != nil {
		return readyErr
	}
	if tail, ok := measure.Rejected(stopErr); ok {
		return &unavailableError{reason: lastLine(tail)}
	}
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func unavailableReport(env *harness.Env, k knobs, reason string) *harness.Report {
	return &harness.Report{
		Scenario: "b1b",
		Title:    "B1 with batch delivery",
		Params:   map[string]any{"maxEvents": k.batchMax, "partitions": k.partitions, "concurrency": k.concurrency},
		Tables: []harness.Table{{
			Title:  "B1b: not measured",
			Header: []string{"contender", "events/s"},
			Rows:   [][]string{{"sluice mode=batch", "not available"}},
		}},
		Bars:  []harness.Bar{harness.Unavailable("B1b: events/s ÷ B1", "≥ 5.00", "Sluice refused mode: batch: "+reason)},
		Notes: []string{"sluice run refused the batch pipeline: " + reason},
	}
}

func b1bReport(env *harness.Env, k knobs, s *setup, runs []b1bRun) *harness.Report {
	bin := make([]float64, len(runs))
	bat := make([]float64, len(runs))
	binCPU := make([]float64, len(runs))
	batCPU := make([]float64, len(runs))
	for i, r := range runs {
		bin[i], bat[i] = float64(r.Binary.Rate), float64(r.Batch.Rate)
		binCPU[i], batCPU[i] = float64(r.Binary.CPUPer100k), float64(r.Batch.CPUPer100k)
	}
	ratio := harness.Ratios(bat, bin)
	m := harness.Median(ratio)
	return &harness.Report{
		Scenario: "b1b",
		Title:    "B1 with batch delivery",
		Params: map[string]any{"events": s.ev.N, "eventBytes": s.ev.Size, "partitions": k.partitions,
			"concurrency": k.concurrency, "maxEvents": k.batchMax, "runs": env.Runs},
		Tables: []harness.Table{{
			Title: fmt.Sprintf("B1b: %d events, ordering none, %d in flight, %s function; median of %d runs (range)",
				s.ev.N, k.concurrency, fnKind(k), env.Runs),
			Header: []string{"contender", "events/s", "CPU-s/100k ev", "÷ B1"},
			Rows: [][]string{
				{"B1 (mode binary)", harness.Spread(bin, 0), harness.Spread(binCPU, 2), ""},
				{fmt.Sprintf("B1b (mode batch, ≤ %d events)", k.batchMax), harness.Spread(bat, 0), harness.Spread(batCPU, 2), harness.Spread(ratio, 2)},
			},
		}},
		Bars:    []harness.Bar{harness.Judge("B1b: events/s ÷ B1", "≥ 5.00", harness.F(m, 2), m >= 5)},
		Summary: map[string]any{"binaryEventsPerSecond": harness.Num(harness.Median(bin)), "batchEventsPerSecond": harness.Num(harness.Median(bat)), "ratio": harness.Num(m), "perRunRatios": harness.Nums(ratio)},
		Runs:    runs,
	}
}
