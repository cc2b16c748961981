// Package b4 is benchmark B4: two tenants share one Sluice; tenant A's
// function turns slow (2 s) and fails half its calls while tenant B's
// answers in 10 ms. B's end-to-end task latency (received → finished, as
// the task store stamps it) with A noisy is compared with B alone, in the
// same Sluice process. See BENCHMARKS.md and docs/benchmarks.md.
package b4

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/bench/internal/asyncload"
	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/procs"
)

// Bar: B's latency with A noisy ÷ B alone.
const maxRatio = 1.25

const (
	keyA = "bench-b4-tenant-a-key-01"
	keyB = "bench-b4-tenant-b-key-01"
)

type knobs struct {
	rateA, rateB float64
	duration     time.Duration
	slow, quick  time.Duration
	failRate     float64
	workers      int
}

// Scenario is B4.
func Scenario() harness.Scenario {
	return harness.Scenario{
		Name:  "b4",
		Title: "noisy neighbour: tenant B's task latency while tenant A's function is slow (2 s) and fails half its calls, vs B alone",
		Flags: func(fs *flag.FlagSet) harness.Run {
			k := &knobs{}
			fs.Float64Var(&k.rateA, "b4.rate-a", 200, "tenant A's submissions per second (more than its slow function can take)")
			fs.Float64Var(&k.rateB, "b4.rate-b", 50, "tenant B's submissions per second")
			fs.DurationVar(&k.duration, "b4.duration", 20*time.Second, "length of each phase")
			fs.DurationVar(&k.slow, "b4.slow", 2*time.Second, "service time of A's function")
			fs.DurationVar(&k.quick, "b4.quick", 10*time.Millisecond, "service time of B's function")
			fs.Float64Var(&k.failRate, "b4.fail-rate", 0.5, "share of A's calls answered 503")
			fs.IntVar(&k.workers, "b4.workers", 256, "Sluice's --workers")
			return func(ctx context.Context, env *harness.Env) (*harness.Report, error) {
				return run(ctx, env, *k)
			}
		},
	}
}

type phase struct {
	P50ms      harness.Num `json:"p50ms"`
	P99ms      harness.Num `json:"p99ms"`
	Tasks      int         `json:"tasks"`
	Unfinished int         `json:"unfinished"`
}

type oneRun struct {
	Alone    phase       `json:"alone"`
	Noisy    phase       `json:"noisy"`
	ADone    int         `json:"aFinishedDuringNoisyPhase"`
	AInFlow  int64       `json:"aAccepted"`
	CPUNoisy harness.Num `json:"sluiceCPUSecondsNoisyPhase"`
}

func config(urlA, urlB string) string {
	return fmt.Sprintf(`apiVersion: sluice.dev/v1
kind: Tenant
metadata: {name: a}
spec: {apiKeys: [%q]}
---
apiVersion: sluice.dev/v1
kind: Tenant
metadata: {name: b}
spec: {apiKeys: [%q]}
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: slow, tenant: a}
spec:
  url: %s
  timeout: 30s
  delivery:
    concurrency: {initial: 64, max: 512}
    retry: {attempts: 3, delay: 200ms, maxDelay: 2s}
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: quick, tenant: b}
spec:
  url: %s
  delivery:
    concurrency: {initial: 16, max: 256}
`, keyA, keyB, urlA, urlB)
}

func run(ctx context.Context, env *harness.Env, k knobs) (*harness.Report, error) {
	var runs []oneRun
	for r := 1; r <= env.Runs; r++ {
		or, err := measure(ctx, env, k, r)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", r, err)
		}
		runs = append(runs, or)
	}
	return report(env, k, runs), nil
}

func measure(ctx context.Context, env *harness.Env, k knobs, r int) (oneRun, error) {
	logf := func(name string) string { return filepath.Join(env.WorkDir, fmt.Sprintf("r%d-%s.log", r, name)) }
	fnA, err := procs.StartFunction(ctx, env.Function, []string{"-latency", k.slow.String(), "-fail-rate", fmt.Sprint(k.failRate), "-retry-after", "0"}, logf("function-a"))
	if err != nil {
		return oneRun{}, err
	}
	defer fnA.Stop(10 * time.Second)
	fnB, err := procs.StartFunction(ctx, env.Function, []string{"-latency", k.quick.String()}, logf("function-b"))
	if err != nil {
		return oneRun{}, err
	}
	defer fnB.Stop(10 * time.Second)
	cfg := filepath.Join(env.WorkDir, fmt.Sprintf("r%d-b4.yaml", r))
	if err := os.WriteFile(cfg, []byte(config(fnA.URL, fnB.URL)), 0o600); err != nil {
		return oneRun{}, err
	}
	sl, err := asyncload.StartSluice(ctx, env.Sluice, cfg, filepath.Join(env.WorkDir, fmt.Sprintf("r%d-data", r)), logf("sluice"),
		"--workers", fmt.Sprint(k.workers), "--drain-timeout", "1s")
	if err != nil {
		return oneRun{}, err
	}
	defer sl.Stop(30 * time.Second)
	base := "http://" + sl.Addr
	clientA, clientB := asyncload.NewClient(base, keyA, 16), asyncload.NewClient(base, keyB, 8)
	defer clientA.Close()
	defer clientB.Close()

	var out oneRun
	if out.Alone, err = phaseB(ctx, env, k, clientB, fmt.Sprintf("r%d B alone", r)); err != nil {
		return oneRun{}, err
	}

	// A floods its slow, failing function for the whole of B's phase.
	aCtx, stopA := context.WithCancel(ctx)
	var aRes asyncload.Result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n := int(k.rateA * (k.duration.Seconds() + 5))
		aRes = asyncload.Submit(aCtx, clientA, "/v1/functions/slow/invocations", asyncload.Body(256), n, 16, time.Duration(float64(time.Second)/k.rateA), nil)
	}()
	time.Sleep(3 * time.Second) // let A occupy its share first
	before, _ := sl.Usage()
	out.Noisy, err = phaseB(ctx, env, k, clientB, fmt.Sprintf("r%d B with A noisy", r))
	after, _ := sl.Usage()
	stopA()
	wg.Wait()
	if err != nil {
		return oneRun{}, err
	}
	out.AInFlow = aRes.Accepted
	out.CPUNoisy = harness.Num(after.CPUSeconds - before.CPUSeconds)
	if m, err := sl.Metrics(ctx); err == nil {
		out.ADone = int(m.Sum("sluice_events_processed_total", map[string]string{"pipeline": "a/function/slow"}))
	}
	return out, nil
}

// phaseB submits B's tasks at its rate for the phase, waits for them to
// finish and returns their latency quantiles.
func phaseB(ctx context.Context, env *harness.Env, k knobs, c *asyncload.Client, label string) (phase, error) {
	n := int(k.rateB * k.duration.Seconds())
	var count atomic.Int64
	stop := env.Progress.Track(label, int64(n), count.Load)
	res := asyncload.Submit(ctx, c, "/v1/functions/quick/invocations", asyncload.Body(256), n, 8, time.Duration(float64(time.Second)/k.rateB), &count)
	stop()
	if ctx.Err() != nil {
		return phase{}, ctx.Err()
	}
	var lat []time.Duration
	unfinished := 0
	deadline := time.Now().Add(2 * time.Minute)
	for _, id := range res.IDs {
		for {
			t, err := c.Get(ctx, id)
			if err == nil && t.Times.Finished != nil {
				lat = append(lat, t.Times.Finished.Sub(t.Times.Received))
				break
			}
			if ctx.Err() != nil {
				return phase{}, ctx.Err()
			}
			if time.Now().After(deadline) {
				unfinished++
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	slices.Sort(lat)
	q := func(p float64) harness.Num {
		if len(lat) == 0 {
			return harness.Num(math.NaN())
		}
		return harness.Num(float64(lat[min(int(p*float64(len(lat))), len(lat)-1)]) / float64(time.Millisecond))
	}
	return phase{P50ms: q(0.5), P99ms: q(0.99), Tasks: len(lat), Unfinished: unfinished + int(res.Refused)}, nil
}

func report(env *harness.Env, k knobs, runs []oneRun) *harness.Report {
	col := func(get func(oneRun) harness.Num) []float64 {
		out := make([]float64, len(runs))
		for i, r := range runs {
			out[i] = float64(get(r))
		}
		return out
	}
	aloneP50, aloneP99 := col(func(r oneRun) harness.Num { return r.Alone.P50ms }), col(func(r oneRun) harness.Num { return r.Alone.P99ms })
	noisyP50, noisyP99 := col(func(r oneRun) harness.Num { return r.Noisy.P50ms }), col(func(r oneRun) harness.Num { return r.Noisy.P99ms })
	r50, r99 := harness.Ratios(noisyP50, aloneP50), harness.Ratios(noisyP99, aloneP99)
	unfinished := 0
	for _, r := range runs {
		unfinished += r.Alone.Unfinished + r.Noisy.Unfinished
	}
	t := harness.Table{
		Title: fmt.Sprintf("B4: tenant B %.0f/s to a %v function for %v; tenant A %.0f/s to a %v function failing %.0f%%; %d workers; median of %d runs (range)",
			k.rateB, k.quick, k.duration, k.rateA, k.slow, 100*k.failRate, k.workers, env.Runs),
		Header: []string{"B's end-to-end latency", "p50 ms", "p99 ms"},
		Rows: [][]string{
			{"B alone", harness.Spread(aloneP50, 1), harness.Spread(aloneP99, 1)},
			{"B with A noisy", harness.Spread(noisyP50, 1), harness.Spread(noisyP99, 1)},
			{"ratio", harness.Spread(r50, 2), harness.Spread(r99, 2)},
		},
	}
	m50, m99 := harness.Median(r50), harness.Median(r99)
	rep := &harness.Report{
		Scenario: "b4",
		Title:    "noisy neighbour",
		Params: map[string]any{"rateA": k.rateA, "rateB": k.rateB, "duration": k.duration.String(), "slow": k.slow.String(),
			"quick": k.quick.String(), "failRate": k.failRate, "workers": k.workers},
		Tables: []harness.Table{t},
		Bars: []harness.Bar{
			harness.Judge("B p50 with A noisy ÷ alone", fmt.Sprintf("≤ %.2f", maxRatio), harness.F(m50, 2), m50 <= maxRatio),
			harness.Judge("B p99 with A noisy ÷ alone", fmt.Sprintf("≤ %.2f", maxRatio), harness.F(m99, 2), m99 <= maxRatio),
		},
		Summary: map[string]any{"p50Ratio": harness.Num(m50), "p99Ratio": harness.Num(m99)},
		Runs:    runs,
		Notes: []string{
			"Latency is the task's finished − received stamps: queueing, dispatch, the call and the task-store writes, without the client's network.",
			"A's backlog keeps growing during its phase: its function takes at most its fair share of the workers (and its AIMD limit cuts on the 503s).",
		},
	}
	if unfinished > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d of B's submissions were refused or did not finish within 2 minutes", unfinished))
	}
	return rep
}
