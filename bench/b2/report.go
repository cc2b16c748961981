package b2

import (
	"fmt"
	"math"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/kafkaload"
)

// figures are one contender's numbers in one run.
type figures struct {
	PhaseRatio   []harness.Num `json:"goodputOverCapacityPerPhase"`
	PhaseGoodput []harness.Num `json:"goodputPerPhase"`
	MeanLimit    []harness.Num `json:"meanLimitSecondHalfPerPhase,omitempty"`
	MeanSlots    []harness.Num `json:"meanSlotsSecondHalfPerPhase,omitempty"`
	MeanHeld     []harness.Num `json:"meanHeldSecondHalfPerPhase,omitempty"`
	MeanAtFn     []harness.Num `json:"meanAtFunctionSecondHalfPerPhase"`
	// CPUPer100k is CPU-seconds per 100k function calls, per process.
	CPUPer100k map[string]harness.Num `json:"cpuSecondsPer100kCalls"`
	Overall    harness.Num            `json:"goodputOverCapacity"`
	VsOracle   harness.Num            `json:"goodputOverOracle"`
	Refused    harness.Num            `json:"share429"`
	Reconverge []harness.Num          `json:"reconvergeSeconds,omitempty"` // after each change
	P99CallMs  harness.Num            `json:"p99CallMs"`
	P99EventMs harness.Num            `json:"p99EventMs"`
	Dropped    harness.Num            `json:"dropped"`
}

func figuresOf(res *result, s schedule, sluice bool) (figures, float64) {
	ps := phases(res, s, sluice)
	f := figures{Overall: harness.Num(overall(ps)), Refused: harness.Num(refusedShare(res)),
		P99CallMs: harness.Num(res.P99Call * 1000), P99EventMs: harness.Num(res.P99Event * 1000), Dropped: harness.Num(res.Dropped),
		CPUPer100k: map[string]harness.Num{}}
	for name, cpu := range res.CPU {
		f.CPUPer100k[name] = harness.Num(math.NaN())
		if res.Calls > 0 {
			f.CPUPer100k[name] = harness.Num(cpu / float64(res.Calls) * 1e5)
		}
	}
	for i, p := range ps {
		f.PhaseRatio = append(f.PhaseRatio, harness.Num(p.Ratio))
		f.PhaseGoodput = append(f.PhaseGoodput, harness.Num(p.Goodput))
		f.MeanAtFn = append(f.MeanAtFn, harness.Num(p.MeanAtFn))
		if sluice {
			f.MeanLimit = append(f.MeanLimit, harness.Num(p.MeanLimit))
			f.MeanSlots = append(f.MeanSlots, harness.Num(p.MeanSlots))
			f.MeanHeld = append(f.MeanHeld, harness.Num(p.MeanHeld))
			if i > 0 {
				f.Reconverge = append(f.Reconverge, harness.Num(reconverge(res, s, i)))
			}
		}
	}
	return f, overall(ps)
}

func report(env *harness.Env, k knobs, s schedule, ev kafkaload.Events, cs []contender, runs []map[string]*result) *harness.Report {
	// figs[contender][run]
	figs := map[string][]figures{}
	for _, run := range runs {
		var oracleOverall float64 = math.NaN()
		for _, c := range cs {
			if c.oracle {
				_, oracleOverall = figuresOf(run[c.name], s, false)
			}
		}
		for _, c := range cs {
			f, ov := figuresOf(run[c.name], s, !c.oracle)
			f.VsOracle = harness.Num(ov / oracleOverall)
			figs[c.name] = append(figs[c.name], f)
		}
	}
	col := func(name string, get func(figures) harness.Num) []float64 {
		var out []float64
		for _, f := range figs[name] {
			out = append(out, float64(get(f)))
		}
		return out
	}
	idx := func(xs []harness.Num, i int) harness.Num {
		if i < len(xs) {
			return xs[i]
		}
		return harness.Num(math.NaN())
	}

	header := []string{"contender"}
	for i, kk := range s.ks {
		header = append(header, fmt.Sprintf("goodput÷cap K=%d (%.0f/s) [%v–%v]", kk, s.capacity(kk), i*int(s.phase.Seconds()), (i+1)*int(s.phase.Seconds())))
	}
	header = append(header, "goodput÷cap all", "÷ oracle", "429 share %")
	for i := 1; i < len(s.ks); i++ {
		header = append(header, fmt.Sprintf("re-converge K→%d s", s.ks[i]))
	}
	header = append(header, "p99 call ms", "p99 event ms", "dropped")
	t := harness.Table{
		Title: fmt.Sprintf("B2: capacity schedule %s, service %v, Retry-After %v, %d partitions; median of %d runs (range)",
			s.flag(), k.service, k.retryAfter, k.partitions, env.Runs),
		Header: header,
	}
	limits := harness.Table{Title: "B2: means over the second half of each phase (median of runs): Sluice's AIMD limit / calls its limiter let out / calls in flight at the function / events Sluice holds (read, not acknowledged)",
		Header: []string{"contender"}}
	for _, kk := range s.ks {
		limits.Header = append(limits.Header, fmt.Sprintf("K=%d", kk))
	}
	procNames := []string{"sluice", "function", "kafka", "bench"}
	cpu := harness.Table{Title: "B2: CPU-seconds per 100k function calls, per process (median of runs; bench = the oracle's load generator)",
		Header: append([]string{"contender"}, procNames...)}
	summary := map[string]any{}
	var rep harness.Report
	for _, c := range cs {
		name := c.name
		row := []string{name}
		for i := range s.ks {
			row = append(row, harness.Spread(col(name, func(f figures) harness.Num { return idx(f.PhaseRatio, i) }), 2))
		}
		ovr := col(name, func(f figures) harness.Num { return f.Overall })
		ref := col(name, func(f figures) harness.Num { return f.Refused })
		refPct := make([]float64, len(ref))
		for i, x := range ref {
			refPct[i] = 100 * x
		}
		row = append(row, harness.Spread(ovr, 2), harness.Spread(col(name, func(f figures) harness.Num { return f.VsOracle }), 2), harness.Spread(refPct, 1))
		worst := make([]float64, len(figs[name]))
		if c.oracle || c.fixed > 0 {
			for i := range worst {
				worst[i] = math.NaN() // a fixed limit does not converge
			}
		}
		for i := 1; i < len(s.ks); i++ {
			rc := col(name, func(f figures) harness.Num { return idx(f.Reconverge, i-1) })
			if c.oracle || c.fixed > 0 {
				row = append(row, "n/a")
				continue
			}
			row = append(row, harness.Spread(rc, 1))
			for j, x := range rc {
				if math.IsNaN(x) || math.IsNaN(worst[j]) {
					worst[j] = math.NaN() // never converged: the worst case
				} else {
					worst[j] = max(worst[j], x)
				}
			}
		}
		row = append(row, harness.Spread(col(name, func(f figures) harness.Num { return f.P99CallMs }), 1),
			harness.Spread(col(name, func(f figures) harness.Num { return f.P99EventMs }), 0),
			harness.Spread(col(name, func(f figures) harness.Num { return f.Dropped }), 0))
		t.Rows = append(t.Rows, row)
		lrow := []string{name}
		for i := range s.ks {
			mean := func(xs func(figures) []harness.Num) string {
				return harness.F(harness.Median(col(name, func(f figures) harness.Num { return idx(xs(f), i) })), 1)
			}
			lrow = append(lrow, mean(func(f figures) []harness.Num { return f.MeanLimit })+" / "+
				mean(func(f figures) []harness.Num { return f.MeanSlots })+" / "+
				mean(func(f figures) []harness.Num { return f.MeanAtFn })+" / "+
				mean(func(f figures) []harness.Num { return f.MeanHeld }))
		}
		limits.Rows = append(limits.Rows, lrow)
		crow := []string{name}
		for _, pn := range procNames {
			crow = append(crow, harness.Spread(col(name, func(f figures) harness.Num {
				if v, ok := f.CPUPer100k[pn]; ok {
					return v
				}
				return harness.Num(math.NaN())
			}), 2))
		}
		cpu.Rows = append(cpu.Rows, crow)
		summary[name] = map[string]any{"goodputOverCapacity": harness.Num(harness.Median(ovr)), "share429": harness.Num(harness.Median(ref)),
			"worstReconvergeSeconds": harness.Num(medianWithNaN(worst))}
		if c.fixed == 0 && !c.oracle {
			g, r, w := harness.Median(ovr), harness.Median(ref), medianWithNaN(worst)
			rep.Bars = append(rep.Bars,
				harness.Judge("B2 AIMD: goodput ÷ capacity (whole run)", "≥ 0.90", harness.F(g, 2), g >= 0.9),
				harness.Judge("B2 AIMD: share of calls answered 429", "≤ 5 %", harness.F(100*r, 1)+" %", r <= 0.05),
				harness.Judge("B2 AIMD: re-converge after each change (worst)", "≤ 5 s", harness.F(w, 1)+" s", w <= 5))
		}
	}
	rep.Scenario = "b2"
	rep.Title = "capacity K changes under load"
	rep.Params = map[string]any{"backlog": ev.N, "eventBytes": ev.Size, "partitions": k.partitions, "schedule": s.flag(),
		"serviceTime": k.service.String(), "retryAfter": k.retryAfter.String(), "runs": env.Runs}
	rep.Tables = []harness.Table{t, limits, cpu}
	rep.Summary = summary
	rep.Runs = figs
	rep.Notes = []string{
		"goodput = 2xx answers per second at the function (its /stats, sampled every 100 ms); capacity = K ÷ service time",
		"the first phase is measured from Sluice's first call (Sluice starts after the function, whose clock drives the schedule)",
		fmt.Sprintf("re-converged = the first moment the AIMD limit's mean over the preceding %v (all after the change) is within ±20 %% of K; '—' = never within the phase", reconvergeWindow),
		"÷ oracle compares with a load generator holding exactly K calls in flight: the machine's own ceiling for this schedule",
		"p99 call = 2xx invocation latency (Sluice's sluice_function_duration_seconds); p99 event = read-to-ack (sluice_event_duration_seconds), which includes Retry-After waits",
		"dropped = events given up after the default 5 attempts (no onFailure route: discarded)",
	}
	return &rep
}

// medianWithNaN treats NaN (never converged) as worse than any number.
func medianWithNaN(xs []float64) float64 {
	ys := make([]float64, len(xs))
	for i, x := range xs {
		ys[i] = x
		if math.IsNaN(x) {
			ys[i] = math.Inf(1)
		}
	}
	m := harness.Median(ys)
	if math.IsInf(m, 1) {
		return math.NaN()
	}
	return m
}
