// Package b2 is benchmark B2: a function whose capacity changes under load
// (K in-flight calls, 429 with Retry-After beyond) and how closely Sluice's
// AIMD limit follows it, against fixed concurrency and an oracle load
// generator that knows K. See BENCHMARKS.md and docs/benchmarks.md.
package b2

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/httpload"
	"github.com/sluicehq/sluice/bench/internal/kafkaload"
	"github.com/sluicehq/sluice/bench/internal/measure"
	"github.com/sluicehq/sluice/bench/internal/procs"
)

// DefaultEvents is the backlog: more than the function can take in the
// whole run (K/service summed over the phases), so it never runs dry.
const DefaultEvents = 500_000

type knobs struct {
	partitions int
	size       int
	phase      time.Duration
	ks         string
	service    time.Duration
	retryAfter time.Duration
	fixed      string
	profile    time.Duration
}

// Scenario is B2.
func Scenario() harness.Scenario {
	return harness.Scenario{
		Name:    "b2",
		Title:   "capacity K=32→16→64 with 429s: goodput, 429 share, AIMD re-convergence, p99 vs fixed concurrency",
		Brokers: []string{"kafka"},
		Flags: func(fs *flag.FlagSet) harness.Run {
			k := &knobs{}
			fs.IntVar(&k.partitions, "b2.partitions", 8, "partitions of the topic")
			fs.IntVar(&k.size, "b2.size", 256, "bytes of data per event")
			fs.DurationVar(&k.phase, "b2.phase", 20*time.Second, "length of each capacity phase")
			fs.StringVar(&k.ks, "b2.k", "32,16,64", "function capacity (in-flight calls) in each phase")
			fs.DurationVar(&k.service, "b2.service", 5*time.Millisecond, "function service time")
			fs.DurationVar(&k.retryAfter, "b2.retry-after", time.Second, "Retry-After of the function's 429s")
			fs.StringVar(&k.fixed, "b2.fixed", "8,256", "fixed concurrencies to compare with (empty: none)")
			fs.DurationVar(&k.profile, "b2.profile", 0, "if set, run Sluice with --pprof and save, from a quarter into the first phase, a CPU profile of this long and an execution trace of 2 s as <run>-cpu.pprof and <run>-trace.out in the run's directory")
			return func(ctx context.Context, env *harness.Env) (*harness.Report, error) {
				return run(ctx, env, *k)
			}
		},
	}
}

// contender is one way of driving the function.
type contender struct {
	name   string
	fixed  int  // 0: Sluice's default AIMD
	oracle bool // the load generator that follows K
}

func run(ctx context.Context, env *harness.Env, k knobs) (*harness.Report, error) {
	ks, err := ints(k.ks)
	if err != nil {
		return nil, fmt.Errorf("-b2.k: %w", err)
	}
	fixed, err := ints(k.fixed)
	if err != nil {
		return nil, fmt.Errorf("-b2.fixed: %w", err)
	}
	contenders := []contender{{name: "sluice AIMD (defaults)"}}
	for _, n := range fixed {
		contenders = append(contenders, contender{name: fmt.Sprintf("sluice fixed %d", n), fixed: n})
	}
	contenders = append(contenders, contender{name: "oracle (raw-http at exactly K)", oracle: true})

	ev := kafkaload.Events{N: env.EventsOr(DefaultEvents), Size: k.size, Keys: 1000}
	topic := env.ID
	if err := kafkaload.CreateTopic(env.KafkaBrokers, topic, k.partitions); err != nil {
		return nil, err
	}
	defer func() {
		if err := kafkaload.DeleteTopic(env.KafkaBrokers, topic); err != nil {
			fmt.Fprintln(env.Log, "warning:", err)
		}
	}()
	if err := kafkaload.Produce(ctx, env.KafkaBrokers, topic, k.partitions, ev, env.Progress); err != nil {
		return nil, err
	}
	sched := schedule{ks: ks, phase: k.phase, service: k.service}
	var runs []map[string]*result
	for r := 1; r <= env.Runs; r++ {
		byName := map[string]*result{}
		for i, c := range contenders {
			label := fmt.Sprintf("r%d %s", r, c.name)
			res, err := measureOne(ctx, env, k, sched, ev, topic, c, label, fmt.Sprintf("r%d-c%d", r, i))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", label, err)
			}
			byName[c.name] = res
		}
		runs = append(runs, byName)
	}
	return report(env, k, sched, ev, contenders, runs), nil
}

// schedule is the function's capacity over time.
type schedule struct {
	ks      []int
	phase   time.Duration
	service time.Duration
}

// flag renders -capacity-schedule.
func (s schedule) flag() string {
	parts := make([]string, len(s.ks))
	for i, k := range s.ks {
		parts[i] = fmt.Sprintf("%v:%d", time.Duration(i)*s.phase, k)
	}
	return strings.Join(parts, ",")
}

// at is K at elapsed time t.
func (s schedule) at(t time.Duration) int {
	i := min(max(int(t/s.phase), 0), len(s.ks)-1)
	return s.ks[i]
}

// total is the run length.
func (s schedule) total() time.Duration { return time.Duration(len(s.ks)) * s.phase }

// capacity is calls per second the function can answer 2xx with K in flight.
func (s schedule) capacity(k int) float64 { return float64(k) / s.service.Seconds() }

// point is one observation, at T since the function started.
type point struct {
	T        time.Duration
	OK       int64 // 200 answers so far
	Refused  int64 // 429 answers so far
	Calls    int64
	Limit    float64 // Sluice's AIMD limit (0 for the oracle)
	InFlight float64 // calls Sluice's limiter let out (0 for the oracle)
	// AtFn is the calls in flight at the function, Held the events Sluice
	// has read and not acknowledged (0 for the oracle).
	AtFn, Held float64
}

// result is one contender's run.
type result struct {
	Points []point `json:"-"`
	First  time.Duration
	// P99Call is the 99th percentile of 2xx call latency, P99Event of
	// read-to-ack time (Sluice only), in seconds.
	P99Call, P99Event float64
	Dropped           float64 // events given up after the retry attempts
	// CPU is CPU-seconds per process over the run ("sluice", "function",
	// "kafka", "bench" — the oracle's load generator), Calls the function
	// calls (any answer) over the same run; a process that could not be
	// read is missing.
	CPU   map[string]float64
	Calls int64
}

// usages reads the CPU time of the processes B2 accounts for.
func usages(fn *procs.Function, kafkaPID int) map[string]float64 {
	out := map[string]float64{}
	for name, pid := range map[string]int{"function": fn.PID(), "kafka": kafkaPID, "bench": 0} {
		if name == "kafka" && pid <= 0 {
			continue
		}
		if u, err := procs.ReadUsage(pid); err == nil {
			out[name] = u.CPUSeconds
		}
	}
	return out
}

// kafkaPID is the pid of the broker scripts/brokers.sh started (its pid
// file), or 0 if there is none to read.
func kafkaPID(root string) int {
	dir := os.Getenv("SLUICE_BROKERS_DIR")
	if dir == "" {
		dir = filepath.Join(root, ".brokers")
	}
	b, err := os.ReadFile(filepath.Join(dir, "kafka", "kafka.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

func measureOne(ctx context.Context, env *harness.Env, k knobs, sched schedule, ev kafkaload.Events,
	topic string, c contender, label, file string) (*result, error) {
	flags := []string{"-latency", k.service.String(), "-capacity-schedule", sched.flag(),
		"-retry-after", k.retryAfter.String()}
	fn, err := procs.StartFunction(ctx, env.Function, flags, filepath.Join(env.WorkDir, file+"-function.log"))
	if err != nil {
		return nil, err
	}
	defer fn.Stop(10 * time.Second)
	until := fn.Started.Add(sched.total())
	kpid := kafkaPID(env.Root)
	st0, err := fn.Stats(ctx)
	if err != nil {
		return nil, err
	}
	u0 := usages(fn, kpid)
	var res *result
	if c.oracle {
		res, err = oracle(ctx, env, sched, ev, fn, until, label)
	} else {
		res, err = sluice(ctx, env, k, sched, topic, c, label, file, fn, until)
	}
	if err != nil {
		return nil, err
	}
	st1, err := fn.Stats(ctx)
	if err != nil {
		return nil, err
	}
	res.Calls = st1.Calls - st0.Calls
	for name, v := range usages(fn, kpid) {
		if v0, ok := u0[name]; ok && (name != "bench" || c.oracle) {
			res.CPU[name] = v - v0
		}
	}
	return res, nil
}

// sluice runs one Sluice contender against the function.
func sluice(ctx context.Context, env *harness.Env, k knobs, sched schedule, topic string, c contender,
	label, file string, fn *procs.Function, until time.Time) (*result, error) {
	pl := measure.Pipeline{Name: "b2", Brokers: env.KafkaBrokers, Topic: topic, Group: env.ID + "-" + file,
		URL: fn.URL, Ordering: "none"}
	if c.fixed > 0 {
		pl = pl.Fixed(c.fixed)
	}
	opts := measure.Opts{Until: until, Label: label}
	if k.profile > 0 {
		opts.Profile = &measure.Profile{After: k.phase / 4, CPU: k.profile, Trace: 2 * time.Second}
	}
	r, err := measure.Sluice(ctx, env.Sluice, env.WorkDir, pl, fn, opts, env.Progress)
	if err != nil {
		return nil, err
	}
	res := &result{First: r.First.Sub(fn.Started), CPU: map[string]float64{"sluice": r.CPUSeconds}}
	for _, s := range r.Samples {
		res.Points = append(res.Points, point{T: s.At.Sub(fn.Started), OK: s.Fn.Status(200), Refused: s.Fn.Status(429),
			Calls: s.Fn.Calls, Limit: s.Limit, InFlight: s.InFlight, AtFn: float64(s.Fn.InFlight), Held: s.Held})
	}
	match := map[string]string{"pipeline": pl.ID()}
	res.P99Event = r.Final.Quantile(0.99, measure.MetricEvtDuration, match)
	res.P99Call = r.Final.Quantile(0.99, measure.MetricFnDuration, map[string]string{"pipeline": pl.ID(), "status": "2xx"})
	res.Dropped = r.Outcome(pl.ID(), "discarded") + r.Outcome(pl.ID(), "dead_lettered")
	return res, nil
}

// oracle drives the function with exactly K(t) calls in flight and samples
// its /stats meanwhile.
func oracle(ctx context.Context, env *harness.Env, sched schedule, ev kafkaload.Events, fn *procs.Function,
	until time.Time, label string) (*result, error) {
	maxK := 0
	for _, k := range sched.ks {
		maxK = max(maxK, k)
	}
	type loadDone struct {
		r   httpload.Result
		err error
	}
	done := make(chan loadDone, 1)
	go func() {
		r, err := httpload.Run(ctx, httpload.Load{URL: fn.URL, Events: ev, Concurrency: maxK,
			Active: sched.at, Origin: fn.Started, Until: until, Label: label}, env.Progress)
		done <- loadDone{r, err}
	}()
	res := &result{CPU: map[string]float64{}}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var sampleErr error
	for sampleErr == nil && time.Now().Before(until) && ctx.Err() == nil {
		st, err := fn.Stats(ctx)
		if err != nil {
			sampleErr = err
			break
		}
		res.Points = append(res.Points, point{T: time.Since(fn.Started), OK: st.Status(200), Refused: st.Status(429), Calls: st.Calls,
			AtFn: float64(st.InFlight)})
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	ld := <-done
	if sampleErr != nil {
		return nil, sampleErr
	}
	if ld.err != nil {
		return nil, ld.err
	}
	res.First = ld.r.First.Sub(fn.Started)
	res.P99Call = ld.r.Quantile(0.99).Seconds()
	res.P99Event = res.P99Call
	return res, nil
}

func ints(s string) ([]int, error) {
	var out []int
	if strings.TrimSpace(s) == "" {
		return nil, nil // e.g. -b2.fixed "": no fixed contenders
	}
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: want positive integers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}
