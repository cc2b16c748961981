package b7

import (
	"fmt"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/kafkaload"
)

// Bar is B7's bar: Sluice's events/s ÷ the same broker's raw-consume.
const Bar = 0.7

// series collects one figure of one contender across runs.
func series(runs []run, pick func(run) contender, field func(contender) harness.Num) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = float64(field(pick(r)))
	}
	return out
}

func rawConsume(r run) contender { return r.RawConsume }
func rawHTTP(r run) contender    { return r.RawHTTP }
func sluiceOf(r run) contender   { return r.Sluice }

func rate(c contender) harness.Num { return c.Rate }
func cpu(c contender) harness.Num  { return c.CPUPer100k }
func rss(c contender) harness.Num  { return c.PeakRSSMiB }
func fnc(c contender) harness.Num  { return c.FnCPUPer100k }
func brk(c contender) harness.Num  { return c.BrokerCPUPer100k }

// summary is one broker's medians over runs and the per-run ratios they
// come from (each run's Sluice against the baselines of that run).
type summary struct {
	Broker        string        `json:"broker"`
	Rate          harness.Num   `json:"eventsPerSecond"`
	RawConsume    harness.Num   `json:"rawConsumeEventsPerSecond"`
	RawHTTP       harness.Num   `json:"rawHTTPEventsPerSecond"`
	CPUPer100k    harness.Num   `json:"cpuSecondsPer100k"`
	PeakRSSMiB    harness.Num   `json:"peakRSSMiB"`
	RatioToRaw    harness.Num   `json:"ratioToRawConsume"`
	RatioToMin    harness.Num   `json:"ratioToMinRawConsumeRawHTTP"`
	RatiosToRaw   []harness.Num `json:"perRunRatiosToRawConsume"`
	RatiosToMin   []harness.Num `json:"perRunRatiosToMin"`
	FunctionBound int           `json:"runsWhereRawHTTPBelowRawConsume"`
	Runs          int           `json:"runs"`
}

// summarize computes a broker's summary from its runs.
func summarize(broker string, runs []run) summary {
	raw := series(runs, rawConsume, rate)
	http := series(runs, rawHTTP, rate)
	sl := series(runs, sluiceOf, rate)
	toRaw := harness.Ratios(sl, raw)
	toMin := harness.Ratios(sl, harness.Min(raw, http))
	bound := 0
	for i := range runs {
		if http[i] < raw[i] {
			bound++
		}
	}
	return summary{
		Broker: broker, Runs: len(runs),
		Rate: harness.Num(harness.Median(sl)), RawConsume: harness.Num(harness.Median(raw)), RawHTTP: harness.Num(harness.Median(http)),
		CPUPer100k: harness.Num(harness.Median(series(runs, sluiceOf, cpu))),
		PeakRSSMiB: harness.Num(harness.Median(series(runs, sluiceOf, rss))),
		RatioToRaw: harness.Num(harness.Median(toRaw)), RatioToMin: harness.Num(harness.Median(toMin)),
		RatiosToRaw: harness.Nums(toRaw), RatiosToMin: harness.Nums(toMin),
		FunctionBound: bound,
	}
}

// functionBound says whether the function, not the broker, was the lower
// ceiling in most runs (raw-http below raw-consume).
func (s summary) functionBound() bool { return 2*s.FunctionBound > s.Runs }

// bar judges B7's bar for the broker.
func (s summary) bar() harness.Bar {
	r := float64(s.RatioToRaw)
	return harness.Judge("B7 "+s.Broker+": events/s ÷ raw-consume", fmt.Sprintf("≥ %.2f", Bar), harness.F(r, 2), r >= Bar)
}

// note explains what bounds the broker's figures.
func (s summary) note() string {
	if s.functionBound() {
		return fmt.Sprintf("%s: raw-http (%s/s) is below raw-consume (%s/s) in %d of %d runs: the no-op function, not the broker, is the lower ceiling on this machine; Sluice ÷ min(raw-consume, raw-http) = %s",
			s.Broker, harness.Rate(float64(s.RawHTTP)), harness.Rate(float64(s.RawConsume)), s.FunctionBound, s.Runs, harness.F(float64(s.RatioToMin), 2))
	}
	return fmt.Sprintf("%s: raw-consume (%s/s) is below raw-http (%s/s) in %d of %d runs: the broker is the lower ceiling",
		s.Broker, harness.Rate(float64(s.RawConsume)), harness.Rate(float64(s.RawHTTP)), s.Runs-s.FunctionBound, s.Runs)
}

func report(env *harness.Env, k knobs, ev kafkaload.Events, brokers []string, results map[string][]run) *harness.Report {
	rep := &harness.Report{
		Scenario: "b7",
		Title:    "RabbitMQ and RocketMQ → no-op function → ack",
		Params: map[string]any{
			"events": ev.N, "eventBytes": ev.Size, "keys": ev.Keys, "concurrency": k.concurrency, "ordering": "none",
			"rocketmqQueues": k.queues, "runs": env.Runs, "brokers": brokers,
		},
		Runs: results,
	}
	var sums []summary
	for _, b := range brokers {
		runs := results[b]
		s := summarize(b, runs)
		sums = append(sums, s)
		t := harness.Table{
			Title: fmt.Sprintf("B7 %s: %d events of %d B%s, no-op function, ordering none, %d in flight; median of %d runs (range)",
				b, ev.N, ev.Size, shape(b, k), k.concurrency, len(runs)),
			Header: []string{"contender", "events/s", "CPU-s/100k ev", "function CPU-s/100k ev", "broker CPU-s/100k ev", "peak RSS MiB", "÷ raw-consume", "÷ min(raw-consume, raw-http)"},
		}
		for _, c := range []struct {
			name string
			pick func(run) contender
		}{{"raw-consume", rawConsume}, {fmt.Sprintf("raw-http (%d in flight)", k.concurrency), rawHTTP}} {
			t.Rows = append(t.Rows, []string{c.name, harness.Spread(series(runs, c.pick, rate), 0),
				harness.Spread(series(runs, c.pick, cpu), 2) + " (bench)", harness.Spread(series(runs, c.pick, fnc), 2),
				harness.Spread(series(runs, c.pick, brk), 2), "—", "", ""})
		}
		toRaw := make([]float64, len(s.RatiosToRaw))
		toMin := make([]float64, len(s.RatiosToMin))
		for i := range toRaw {
			toRaw[i], toMin[i] = float64(s.RatiosToRaw[i]), float64(s.RatiosToMin[i])
		}
		t.Rows = append(t.Rows, []string{fmt.Sprintf("sluice ordering=none (%d in flight)", k.concurrency),
			harness.Spread(series(runs, sluiceOf, rate), 0), harness.Spread(series(runs, sluiceOf, cpu), 2),
			harness.Spread(series(runs, sluiceOf, fnc), 2), harness.Spread(series(runs, sluiceOf, brk), 2),
			harness.Spread(series(runs, sluiceOf, rss), 0),
			harness.Spread(toRaw, 2), harness.Spread(toMin, 2)})
		rep.Tables = append(rep.Tables, t)
		rep.Bars = append(rep.Bars, s.bar())
		rep.Notes = append(rep.Notes, s.note())
	}
	rep.Summary = sums
	rep.Notes = append(rep.Notes,
		"ratios are per run (each against the baselines measured in the same run), then the median",
		"events/s counts from the first message received (raw-consume), the first request (raw-http) or the function's first call from Sluice to the last event acknowledged",
		"RabbitMQ: every contender of every run gets its own queue, filled just before it runs (consuming empties a queue); RocketMQ: one topic, a fresh consumer group per contender",
		"raw-consume uses Sluice's default window as its prefetch (RabbitMQ basic.qos) and per-queue pull threshold (RocketMQ)",
		"Sluice CPU and peak RSS are of the sluice process (/proc/<pid>/stat, VmHWM); baseline CPU is the bench process, which runs them",
		"function and broker CPU are of their processes (the broker found by its listening port) over each contender's whole measurement, start-up included",
	)
	return rep
}

// shape describes where the backlog sits.
func shape(broker string, k knobs) string {
	if broker == RocketMQ {
		return fmt.Sprintf(", %d queues", k.queues)
	}
	return ", 1 queue"
}
