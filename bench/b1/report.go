package b1

import (
	"fmt"

	"github.com/sluicehq/sluice/bench/internal/harness"
)

// series collects one figure of one contender across runs.
func series(runs []b1Run, pick func(b1Run) contender, field func(contender) harness.Num) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = float64(field(pick(r)))
	}
	return out
}

func rate(c contender) harness.Num { return c.Rate }
func cpu(c contender) harness.Num  { return c.CPUPer100k }
func rss(c contender) harness.Num  { return c.PeakRSSMiB }
func fnc(c contender) harness.Num  { return c.FnCPUPer100k }

// summaryRow is one contender's medians in the JSON summary.
type summaryRow struct {
	Contender     string        `json:"contender"`
	Rate          harness.Num   `json:"eventsPerSecond"`
	CPUPer100k    harness.Num   `json:"cpuSecondsPer100k"`
	PeakRSSMiB    harness.Num   `json:"peakRSSMiB"`
	RatioToMinRaw harness.Num   `json:"ratioToMinRawConsumeRawHTTP,omitempty"`
	RatioToNaive  harness.Num   `json:"ratioToNaiveBridge,omitempty"`
	RatiosMinRaw  []harness.Num `json:"perRunRatiosToMinRaw,omitempty"`
	RatiosToNaive []harness.Num `json:"perRunRatiosToNaive,omitempty"`
}

func b1Report(env *harness.Env, k knobs, s *setup, orderings []string, runs []b1Run) *harness.Report {
	rep := &harness.Report{
		Scenario: "b1",
		Title:    "Kafka → no-op function → ack",
		Params: map[string]any{
			"events": s.ev.N, "eventBytes": s.ev.Size, "keys": s.ev.Keys, "partitions": k.partitions,
			"concurrency": k.concurrency, "runs": env.Runs, "orderings": orderings, "functionLatency": k.latency.String(),
		},
		Runs: runs,
	}
	raw := series(runs, func(r b1Run) contender { return r.RawConsume }, rate)
	http := series(runs, func(r b1Run) contender { return r.RawHTTP }, rate)
	naive := series(runs, func(r b1Run) contender { return r.NaiveBridge }, rate)
	minRaw := harness.Min(raw, http)

	t := harness.Table{
		Title: fmt.Sprintf("B1: %d events of %d B, %d partitions, %d keys, %s function; median of %d runs (range)",
			s.ev.N, s.ev.Size, k.partitions, s.ev.Keys, fnKind(k), env.Runs),
		Header: []string{"contender", "events/s", "CPU-s/100k ev", "function CPU-s/100k ev", "peak RSS MiB", "÷ min(raw-consume, raw-http)", "÷ naive-bridge"},
	}
	var summary []summaryRow
	addBaseline := func(name string, pick func(b1Run) contender) {
		rs := series(runs, pick, rate)
		cs := series(runs, pick, cpu)
		t.Rows = append(t.Rows, []string{name, harness.Spread(rs, 0), harness.Spread(cs, 2) + " (bench)",
			harness.Spread(series(runs, pick, fnc), 2), "—", "", ""})
		summary = append(summary, summaryRow{Contender: name, Rate: harness.Num(harness.Median(rs)),
			CPUPer100k: harness.Num(harness.Median(cs)), PeakRSSMiB: harness.Num(harness.Median(nil))})
	}
	addBaseline("raw-consume", func(r b1Run) contender { return r.RawConsume })
	addBaseline(fmt.Sprintf("raw-http (%d in flight)", k.concurrency), func(r b1Run) contender { return r.RawHTTP })
	addBaseline(fmt.Sprintf("naive-bridge (%d partitions)", k.partitions), func(r b1Run) contender { return r.NaiveBridge })
	for _, o := range orderings {
		pick := func(r b1Run) contender { return r.Sluice[o] }
		rs := series(runs, pick, rate)
		cs := series(runs, pick, cpu)
		ms := series(runs, pick, rss)
		rMin := harness.Ratios(rs, minRaw)
		rNaive := harness.Ratios(rs, naive)
		name := fmt.Sprintf("sluice ordering=%s (%d in flight)", o, k.concurrency)
		t.Rows = append(t.Rows, []string{name, harness.Spread(rs, 0), harness.Spread(cs, 2),
			harness.Spread(series(runs, pick, fnc), 2), harness.Spread(ms, 0),
			harness.Spread(rMin, 2), harness.Spread(rNaive, 2)})
		summary = append(summary, summaryRow{Contender: name, Rate: harness.Num(harness.Median(rs)),
			CPUPer100k: harness.Num(harness.Median(cs)), PeakRSSMiB: harness.Num(harness.Median(ms)),
			RatioToMinRaw: harness.Num(harness.Median(rMin)), RatioToNaive: harness.Num(harness.Median(rNaive)),
			RatiosMinRaw: harness.Nums(rMin), RatiosToNaive: harness.Nums(rNaive)})
		mMin, mNaive := harness.Median(rMin), harness.Median(rNaive)
		rep.Bars = append(rep.Bars,
			harness.Judge("B1 "+o+": events/s ÷ min(raw-consume, raw-http)", "≥ 0.70", harness.F(mMin, 2), mMin >= 0.7),
			harness.Judge("B1 "+o+": events/s ÷ naive-bridge", "≥ 2.00", harness.F(mNaive, 2), mNaive >= 2))
	}
	rep.Tables = []harness.Table{t}
	rep.Summary = summary
	rep.Notes = []string{
		"ratios are per run (each against the baselines measured in the same run), then the median",
		"events/s counts from the first event received (baselines) or the first function call (Sluice) to the last event acknowledged; group join is left out of every contender",
		"Sluice CPU and peak RSS are of the sluice process (/proc/<pid>/stat, VmHWM); baseline CPU is the bench process, which runs them",
	}
	return rep
}

func fnKind(k knobs) string {
	if k.latency > 0 {
		return k.latency.String()
	}
	return "no-op"
}
