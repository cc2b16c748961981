// Command b8 is benchmark B8 (BENCHMARKS.md): the event bus's pattern
// matcher with 1, 100 and 10,000 EventBridge-style rules on events of about
// 1 KiB, against a loop that tests every rule in turn with the reference
// matcher. It reports events matched per CPU-second of one core (one
// goroutine, GOMAXPROCS=1 so that the garbage collector shares that core),
// with wall-clock rates beside them, the median of several runs with the
// range; it prints a table and writes the figures as JSON to
// bench/results/b8-<timestamp>.json.
//
// Bars: throughput flat in the rule count (10,000 rules ≥ 0.5 × 1 rule) and
// ≥ 20 × the loop at 10,000 rules.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/sinks/bus/pattern"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "b8:", err)
		os.Exit(1)
	}
}

type config struct {
	ruleCounts []int
	runs       int
	duration   time.Duration
	events     int
	check      int
	seed       uint64
	procs      int
	out        string
	strict     bool
	cpuprofile string
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("b8", flag.ContinueOnError)
	rules := fs.String("rules", "1,100,10000", "rule counts to measure (comma-separated)")
	fs.IntVar(&c.runs, "runs", 3, "runs per measurement (the median is reported)")
	fs.DurationVar(&c.duration, "duration", 2*time.Second, "time per measurement")
	fs.IntVar(&c.events, "events", 1000, "distinct events, cycled through")
	fs.IntVar(&c.check, "check", 200, "events whose matches are checked against the loop before measuring")
	fs.Uint64Var(&c.seed, "seed", 8, "seed of the events and rules")
	fs.IntVar(&c.procs, "procs", 1, "GOMAXPROCS while measuring (1: one core, the garbage collector included)")
	fs.StringVar(&c.out, "out", filepath.Join("bench", "results"), "directory for the JSON results")
	fs.BoolVar(&c.strict, "strict", false, "exit non-zero when a bar is missed")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the measurements to this file")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	for _, s := range strings.Split(*rules, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return c, fmt.Errorf("-rules: %q is not a positive count", s)
		}
		c.ruleCounts = append(c.ruleCounts, n)
	}
	slices.Sort(c.ruleCounts)
	if c.runs < 1 || c.events < 1 || c.duration <= 0 {
		return c, errors.New("-runs, -events and -duration must be positive")
	}
	return c, nil
}

// ruleSet is one rule count's compiled matcher and the same patterns for
// the loop.
type ruleSet struct {
	n        int
	pats     []*pattern.Pattern
	matcher  *pattern.Matcher
	build    time.Duration
	heapMiB  float64 // heap the matcher holds
	perEvent float64 // rules matched per event, on average
}

// stat is one figure over the runs.
type stat struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Runs   []float64 `json:"runs"`
}

func newStat(xs []float64) stat {
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{Median: m, Min: s[0], Max: s[len(s)-1], Runs: xs}
}

// result is one rule count's figures: events per CPU-second (the bar's
// figure) and, for context, per wall-clock second.
type result struct {
	Rules            int     `json:"rules"`
	Matcher          stat    `json:"matcherEventsPerCPUSecond"`
	MatcherFlattened stat    `json:"matcherPreflattenedEventsPerCPUSecond"`
	Loop             stat    `json:"loopEventsPerCPUSecond"`
	MatcherWall      stat    `json:"matcherEventsPerWallSecond"`
	LoopWall         stat    `json:"loopEventsPerWallSecond"`
	SpeedUp          float64 `json:"speedUpOverLoop"`
	MatchesPerEvent  float64 `json:"rulesMatchedPerEvent"`
	BuildMillis      float64 `json:"buildMillis"`
	MemoryMiB        float64 `json:"matcherHeapMiB"`
}

type bar struct {
	Value float64 `json:"value"`
	Bar   float64 `json:"bar"`
	Pass  bool    `json:"pass"`
}

type report struct {
	Scenario string            `json:"scenario"`
	Title    string            `json:"title"`
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Machine  map[string]string `json:"machine"`
	Params   map[string]any    `json:"params"`
	Results  []result          `json:"results"`
	Bars     map[string]bar    `json:"bars"`
}

func run(args []string, w io.Writer) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	started := time.Now()
	v := newVocab()
	events, err := v.events(cfg.seed, cfg.events)
	if err != nil {
		return err
	}
	var size int
	for _, e := range events {
		n, err := eventSize(e)
		if err != nil {
			return err
		}
		size += n
	}
	srcs, err := v.rules(cfg.seed, cfg.ruleCounts[len(cfg.ruleCounts)-1])
	if err != nil {
		return err
	}
	all := make([]*pattern.Pattern, len(srcs))
	for i, s := range srcs {
		if all[i], err = pattern.Parse(s); err != nil {
			return fmt.Errorf("rule %d %s: %w", i, s, err)
		}
	}
	fmt.Fprintf(w, "b8: %d events of %d B on average, rule sets of %v, %d runs of %v per figure\n",
		len(events), size/len(events), cfg.ruleCounts, cfg.runs, cfg.duration)

	var sets []*ruleSet
	for _, n := range cfg.ruleCounts {
		rs, err := compile(all[:n], events, cfg.check)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "b8: %6d rules: built in %v, checked against the loop on %d events, %.3f rules matched per event\n",
			n, rs.build.Round(time.Microsecond), min(cfg.check, len(events)), rs.perEvent)
		sets = append(sets, rs)
	}

	flat := make([]pattern.Flattened, len(events))
	for i, e := range events {
		if flat[i], err = pattern.Flatten(e); err != nil {
			return err
		}
	}
	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	prev := runtime.GOMAXPROCS(cfg.procs)
	defer runtime.GOMAXPROCS(prev)
	type runs struct{ matcher, flat, loop []rate }
	all2 := make([]runs, len(sets))
	for r := range cfg.runs {
		for i, rs := range sets {
			m, pats, got := rs.matcher, rs.pats, &all2[i]
			got.matcher = append(got.matcher, measure(cfg.duration, len(events), func(j int) { m.Match(events[j]) }))
			got.flat = append(got.flat, measure(cfg.duration, len(events), func(j int) { m.MatchFields(flat[j]) }))
			got.loop = append(got.loop, measure(cfg.duration, len(events), func(j int) {
				obj := pattern.EventObject(events[j])
				for _, p := range pats {
					pattern.ReferenceMatchObject(p, obj)
				}
			}))
			fmt.Fprintf(w, "b8: run %d/%d, %6d rules: matcher %s events/CPU-s (pre-flattened %s), loop %s events/CPU-s\n",
				r+1, cfg.runs, rs.n, human(last(got.matcher).cpu), human(last(got.flat).cpu), human(last(got.loop).cpu))
		}
	}

	rep := report{
		Scenario: "b8",
		Title:    "event bus pattern matching: 1, 100 and 10,000 rules vs testing every rule in turn",
		Started:  started,
		Machine:  machine(),
		Params: map[string]any{
			"events": len(events), "meanEventBytes": size / len(events), "ruleCounts": cfg.ruleCounts,
			"runs": cfg.runs, "durationPerFigure": cfg.duration.String(), "gomaxprocs": cfg.procs, "seed": cfg.seed,
		},
		Bars: map[string]bar{},
	}
	for i, rs := range sets {
		res := result{
			Rules:            rs.n,
			Matcher:          newStat(cpuRates(all2[i].matcher)),
			MatcherFlattened: newStat(cpuRates(all2[i].flat)),
			Loop:             newStat(cpuRates(all2[i].loop)),
			MatcherWall:      newStat(wallRates(all2[i].matcher)),
			LoopWall:         newStat(wallRates(all2[i].loop)),
			MatchesPerEvent:  rs.perEvent,
			BuildMillis:      float64(rs.build.Microseconds()) / 1000,
			MemoryMiB:        rs.heapMiB,
		}
		res.SpeedUp = res.Matcher.Median / res.Loop.Median
		rep.Results = append(rep.Results, res)
	}
	first, lastRes := rep.Results[0], rep.Results[len(rep.Results)-1]
	flatness := lastRes.Matcher.Median / first.Matcher.Median
	rep.Bars[fmt.Sprintf("throughput %d rules / %d rule", lastRes.Rules, first.Rules)] = bar{flatness, 0.5, flatness >= 0.5}
	rep.Bars[fmt.Sprintf("speed-up over the loop at %d rules", lastRes.Rules)] = bar{lastRes.SpeedUp, 20, lastRes.SpeedUp >= 20}
	rep.Finished = time.Now()

	printTable(w, rep)
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	path := filepath.Join(cfg.out, "b8-"+started.UTC().Format("20060102-150405")+".json")
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "b8: results written to %s\n", path)
	if cfg.strict {
		for name, b := range rep.Bars {
			if !b.Pass {
				return fmt.Errorf("bar missed: %s = %.2f (bar %.2f)", name, b.Value, b.Bar)
			}
		}
	}
	return nil
}

// compile builds the matcher for pats and checks it against the loop on
// the first check events, so that the benchmark never times a wrong answer.
func compile(pats []*pattern.Pattern, events []*cloudevents.Event, check int) (*ruleSet, error) {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	b := pattern.NewBuilder()
	for i, p := range pats {
		if err := b.Add(strconv.Itoa(i), p); err != nil {
			return nil, err
		}
	}
	rs := &ruleSet{n: len(pats), pats: pats, matcher: b.Build()}
	rs.build = time.Since(start)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	rs.heapMiB = max(0, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20))
	matched := 0
	for _, e := range events[:min(check, len(events))] {
		got := rs.matcher.Match(e)
		obj := pattern.EventObject(e)
		var want []string
		for i, p := range pats {
			if pattern.ReferenceMatchObject(p, obj) {
				want = append(want, strconv.Itoa(i))
			}
		}
		if !slices.Equal(got, want) {
			return nil, fmt.Errorf("%d rules: matcher found %v, the loop %v on event %s", len(pats), got, want, e.ID())
		}
		matched += len(got)
	}
	for _, e := range events[min(check, len(events)):] {
		matched += len(rs.matcher.Match(e))
	}
	rs.perEvent = float64(matched) / float64(len(events))
	return rs, nil
}

// rate is one measurement: calls per second of process CPU time (with
// GOMAXPROCS=1, one core, the garbage collector included: what "per core"
// means, and steady on a shared machine) and per second of wall time.
type rate struct {
	cpu, wall float64
}

// measure calls fn on events 0, 1, ... (cycling through n) for about d of
// CPU time, after a warm-up of d/10. It reads the clocks once per batch so
// that timing costs nothing next to the work.
func measure(d time.Duration, n int, fn func(i int)) rate {
	i := 0
	spin := func(d time.Duration) (calls int, cpu, wall time.Duration) {
		c0, w0 := cpuTime(), time.Now()
		for {
			for range 16 {
				fn(i)
				i++
				if i == n {
					i = 0
				}
			}
			calls += 16
			if cpu = cpuTime() - c0; cpu >= d {
				return calls, cpu, time.Since(w0)
			}
		}
	}
	spin(d / 10)
	runtime.GC()
	calls, cpu, wall := spin(d)
	return rate{cpu: float64(calls) / cpu.Seconds(), wall: float64(calls) / wall.Seconds()}
}

// cpuTime is the CPU time the process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(fmt.Sprintf("getrusage: %v", err)) // cannot fail with valid arguments
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func last(xs []rate) rate { return xs[len(xs)-1] }

func cpuRates(rs []rate) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = r.cpu
	}
	return out
}

func wallRates(rs []rate) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = r.wall
	}
	return out
}

func printTable(w io.Writer, rep report) {
	fmt.Fprintf(w, "\nB8: %d events of ~%d B, one goroutine, GOMAXPROCS=%d; events per CPU-second, median of %d runs (min-max)\n",
		rep.Params["events"], rep.Params["meanEventBytes"], rep.Params["gomaxprocs"], rep.Params["runs"])
	fmt.Fprintf(w, "%7s  %-22s  %-22s  %-20s  %8s  %-18s  %9s  %9s  %8s\n",
		"rules", "matcher (Match)", "matcher (flattened)", "loop (every rule)", "speed-up", "matcher wall-clock", "matches/ev", "build", "heap")
	for _, r := range rep.Results {
		fmt.Fprintf(w, "%7d  %-22s  %-22s  %-20s  %7.0fx  %-18s  %9.3f  %7.0fms  %5.1fMiB\n",
			r.Rules, statString(r.Matcher), statString(r.MatcherFlattened), statString(r.Loop), r.SpeedUp,
			statString(r.MatcherWall), r.MatchesPerEvent, r.BuildMillis, r.MemoryMiB)
	}
	names := make([]string, 0, len(rep.Bars))
	for name := range rep.Bars {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		b := rep.Bars[name]
		verdict := "PASS"
		if !b.Pass {
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "bar: %s = %.2f (bar >= %g) %s\n", name, b.Value, b.Bar, verdict)
	}
}

func statString(s stat) string {
	return fmt.Sprintf("%s (%s-%s)", human(s.Median), human(s.Min), human(s.Max))
}

func human(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.0fk", x/1e3)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

// machine describes where the figures were taken.
func machine() map[string]string {
	m := map[string]string{
		"cores": strconv.Itoa(runtime.NumCPU()),
		"go":    runtime.Version(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpuModel"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.Atoi(f[1]); err == nil {
					m["memoryMiB"] = strconv.Itoa(kb / 1024)
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m["loadAvg"] = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m["commit"] = strings.TrimSpace(string(out))
	}
	return m
}
