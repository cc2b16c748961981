package b3

import (
	"math"
	"slices"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/measure"
)

// traceEvery is how often a B3 run samples Sluice. Each sample is one
// /metrics scrape (about a millisecond of Sluice's CPU), so 50 ms costs
// it a few per cent of a core.
const traceEvery = 50 * time.Millisecond

// trace is one mode's run sampled every traceEvery from Sluice's /metrics
// and the function's /stats, kept in the JSON results so that what held
// the calls in flight can be read afterwards.
type trace struct {
	// T is seconds since the first function call.
	T []float64 `json:"t"`
	// Limit is the AIMD limit (sluice_flow_limit), InFlight the calls
	// holding a slot (sluice_flow_in_flight), Waiting the calls waiting
	// for one (sluice_flow_waiting).
	Limit    []float64 `json:"limit"`
	InFlight []float64 `json:"inFlight"`
	Waiting  []float64 `json:"waiting"`
	// Held is events read and not yet finished (sluice_events_in_flight):
	// in flight and waiting, plus those ready for a worker, parked behind a
	// busy key, or before or after their call.
	Held []float64 `json:"held"`
	// FnInFlight is the calls the function was serving (its /stats).
	FnInFlight []float64 `json:"fnInFlight"`
	// Processed is the events finished so far.
	Processed []float64 `json:"processed"`
}

func newTrace(samples []measure.Sample, first time.Time) trace {
	var tr trace
	for _, s := range samples {
		tr.T = append(tr.T, math.Round(s.At.Sub(first).Seconds()*1000)/1000)
		tr.Limit = append(tr.Limit, s.Limit)
		tr.InFlight = append(tr.InFlight, s.InFlight)
		tr.Waiting = append(tr.Waiting, s.Waiting)
		tr.Held = append(tr.Held, s.Held)
		tr.FnInFlight = append(tr.FnInFlight, float64(s.Fn.InFlight))
		tr.Processed = append(tr.Processed, s.Processed)
	}
	return tr
}

// Why a sample's calls in flight were what they were.
const (
	// boundLimit: the limit held calls back (in flight at the limit, or
	// within atLimitMargin of it, or callers waiting for a slot).
	boundLimit = "limit"
	// boundQueued: below the limit with events read but not in a call —
	// ready for a worker, parked behind a busy key, or in the work before
	// and after the call: Sluice itself did not keep the limit busy.
	// Ready events wait in the scheduler while every worker is busy, so
	// this is also workers away from the function (retry delays, result
	// writes).
	boundQueued = "queued in Sluice"
	// boundSource: below the limit with nothing else read: the source
	// delivered no more, because its read-ahead (the uncommitted offsets
	// of the partition, at most the credit of 2 × limit) was used up or
	// the fetch did not keep up.
	boundSource = "source"
)

// queuedMargin is how many read events outside a call, as a share of the
// limit, count as queued rather than passing through: every event spends
// a moment before and after its call.
const queuedMargin = 0.1

// atLimitMargin is how far below the limit in flight still counts as at
// the limit, as a share of it: a worker between two calls (acknowledging
// one event, popping the next) leaves its slot empty for a moment, and the
// engine's pool has about a limit's worth of workers.
const atLimitMargin = 0.05

// bound classifies one sample (see the bound* constants).
func bound(limit, inFlight, waiting, held float64) string {
	if waiting > 0 || inFlight >= limit-max(1, atLimitMargin*limit) {
		return boundLimit
	}
	if held-inFlight-waiting >= max(1, queuedMargin*limit) {
		return boundQueued
	}
	return boundSource
}

// traceSummary condenses a trace.
type traceSummary struct {
	LimitP50     harness.Num `json:"limitP50"`
	LimitMax     harness.Num `json:"limitMax"`
	InFlightP50  harness.Num `json:"inFlightP50"`
	InFlightMean harness.Num `json:"inFlightMean"`
	HeldMean     harness.Num `json:"heldMean"`
	// Bounds is the share of samples per bound* class.
	Bounds map[string]harness.Num `json:"bounds"`
}

func (tr trace) summary() traceSummary {
	nan := harness.Num(math.NaN())
	s := traceSummary{LimitP50: nan, LimitMax: nan, InFlightP50: nan, InFlightMean: nan, HeldMean: nan,
		Bounds: map[string]harness.Num{}}
	n := len(tr.T)
	if n == 0 {
		return s
	}
	s.LimitP50, s.LimitMax = harness.Num(harness.Median(tr.Limit)), harness.Num(slices.Max(tr.Limit))
	s.InFlightP50, s.InFlightMean = harness.Num(harness.Median(tr.InFlight)), harness.Num(mean(tr.InFlight))
	s.HeldMean = harness.Num(mean(tr.Held))
	counts := map[string]int{}
	for i := range n {
		counts[bound(tr.Limit[i], tr.InFlight[i], tr.Waiting[i], tr.Held[i])]++
	}
	for _, b := range []string{boundLimit, boundQueued, boundSource} {
		s.Bounds[b] = harness.Num(float64(counts[b]) / float64(n))
	}
	return s
}

func mean(xs []float64) float64 {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}
