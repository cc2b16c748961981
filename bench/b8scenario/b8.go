// Package b8scenario runs B8 (the event bus matcher at 1, 100 and 10,000
// rules) as a `make bench` scenario. The measurement itself is the
// standalone program bench/b8, which pins GOMAXPROCS and counts CPU time in
// its own process; this wrapper runs it and turns its JSON into a report.
package b8scenario

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
)

// Scenario returns B8.
func Scenario() harness.Scenario {
	return harness.Scenario{
		Name:  "b8",
		Title: "event bus matcher: 1, 100 and 10,000 rules vs testing every rule in turn",
		Flags: func(fs *flag.FlagSet) harness.Run {
			rules := fs.String("b8.rules", "1,100,10000", "rule counts to measure")
			duration := fs.Duration("b8.duration", 2*time.Second, "time per measurement")
			return func(ctx context.Context, env *harness.Env) (*harness.Report, error) {
				return run(ctx, env, *rules, *duration)
			}
		},
	}
}

// output is the part of bench/b8's JSON the report uses.
type output struct {
	Params  map[string]any `json:"params"`
	Results []struct {
		Rules   int     `json:"rules"`
		Matcher figure  `json:"matcherEventsPerCPUSecond"`
		Loop    figure  `json:"loopEventsPerCPUSecond"`
		SpeedUp float64 `json:"speedUpOverLoop"`
		Matched float64 `json:"rulesMatchedPerEvent"`
	} `json:"results"`
	Bars map[string]struct {
		Value float64 `json:"value"`
		Bar   float64 `json:"bar"`
		Pass  bool    `json:"pass"`
	} `json:"bars"`
}

type figure struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func run(ctx context.Context, env *harness.Env, rules string, duration time.Duration) (*harness.Report, error) {
	out := filepath.Join(env.WorkDir, "b8")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	env.Progress.Printf("b8: measuring the matcher and the loop (%s per figure, %d runs)", duration, env.Runs)
	cmd := exec.CommandContext(ctx, "go", "run", "./bench/b8", "-rules", rules, "-runs", fmt.Sprint(env.Runs),
		"-duration", duration.String(), "-out", out)
	cmd.Dir = env.Root
	cmd.Stdout, cmd.Stderr = env.Log, env.Log
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("bench/b8: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(out, "b8-*.json"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("bench/b8 wrote no results in %s", out)
	}
	b, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		return nil, err
	}
	var o output
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("bench/b8 results: %w", err)
	}
	return report(o), nil
}

func report(o output) *harness.Report {
	r := &harness.Report{Scenario: "b8", Title: "Event bus matcher", Params: o.Params, Summary: o.Bars, Runs: o.Results}
	t := harness.Table{
		Title:  "B8: events of ~1 KiB, one goroutine, GOMAXPROCS=1; events per CPU-second, median (range)",
		Header: []string{"rules", "matcher", "loop over every rule", "speed-up", "rules matched per event"},
	}
	for _, res := range o.Results {
		t.Rows = append(t.Rows, []string{
			fmt.Sprint(res.Rules), span(res.Matcher), span(res.Loop),
			fmt.Sprintf("%.0f×", res.SpeedUp), fmt.Sprintf("%.3f", res.Matched),
		})
	}
	r.Tables = []harness.Table{t}
	for _, name := range slices.Sorted(maps.Keys(o.Bars)) {
		b := o.Bars[name]
		r.Bars = append(r.Bars, harness.Judge("B8: "+name, fmt.Sprintf("≥ %g", b.Bar), fmt.Sprintf("%.2f", b.Value), b.Pass))
	}
	return r
}

func span(f figure) string { return fmt.Sprintf("%.0f (%.0f–%.0f)", f.Median, f.Min, f.Max) }
