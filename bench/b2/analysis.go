package b2

import (
	"math"
	"time"
)

// valueAt interpolates a counter or gauge of ps linearly at t (clamped to
// the first and last points).
func valueAt(ps []point, t time.Duration, f func(point) float64) float64 {
	if len(ps) == 0 {
		return math.NaN()
	}
	if t <= ps[0].T {
		return f(ps[0])
	}
	for i := 1; i < len(ps); i++ {
		if ps[i].T >= t {
			a, b := ps[i-1], ps[i]
			if b.T == a.T {
				return f(b)
			}
			frac := float64(t-a.T) / float64(b.T-a.T)
			return f(a) + frac*(f(b)-f(a))
		}
	}
	return f(ps[len(ps)-1])
}

func okCount(p point) float64      { return float64(p.OK) }
func refusedCount(p point) float64 { return float64(p.Refused) }
func callCount(p point) float64    { return float64(p.Calls) }

// phaseFig is what happened during one capacity phase.
type phaseFig struct {
	K        int
	Goodput  float64 // 2xx per second
	Capacity float64 // K / service time
	// Ratio is Goodput / Capacity, over the phase from its start (or the
	// first call, for the first phase) to its end.
	Ratio float64
	// MeanLimit is Sluice's mean AIMD limit over the second half of the
	// phase (NaN for the oracle).
	MeanLimit float64
	// MeanSlots (calls Sluice's limiter let out), MeanAtFn (calls in flight
	// at the function) and MeanHeld (events Sluice read and did not
	// acknowledge yet) are means over the same half; only MeanAtFn is
	// measured for the oracle (NaN otherwise).
	MeanSlots, MeanAtFn, MeanHeld float64
	// seconds is the measured length of the phase.
	seconds float64
}

// window is the part of phase i that was measured.
func window(res *result, s schedule, i int) (from, to time.Duration) {
	from = max(time.Duration(i)*s.phase, res.First)
	to = time.Duration(i+1) * s.phase
	if n := len(res.Points); n > 0 {
		to = min(to, res.Points[n-1].T)
	}
	return from, to
}

func phases(res *result, s schedule, sluice bool) []phaseFig {
	out := make([]phaseFig, len(s.ks))
	for i, k := range s.ks {
		f := phaseFig{K: k, Capacity: s.capacity(k), Ratio: math.NaN(), Goodput: math.NaN(), MeanLimit: math.NaN(),
			MeanSlots: math.NaN(), MeanHeld: math.NaN()}
		from, to := window(res, s, i)
		if to > from {
			f.seconds = (to - from).Seconds()
			f.Goodput = (valueAt(res.Points, to, okCount) - valueAt(res.Points, from, okCount)) / f.seconds
			f.Ratio = f.Goodput / f.Capacity
		}
		half, end := time.Duration(i)*s.phase+s.phase/2, time.Duration(i+1)*s.phase
		f.MeanAtFn = meanOf(res.Points, half, end, func(p point) float64 { return p.AtFn })
		if sluice {
			f.MeanLimit = meanLimit(res.Points, half, end)
			f.MeanSlots = meanOf(res.Points, half, end, func(p point) float64 { return p.InFlight })
			f.MeanHeld = meanOf(res.Points, half, end, func(p point) float64 { return p.Held })
		}
		out[i] = f
	}
	return out
}

// overall is total goodput over total capacity across the measured phases.
func overall(fs []phaseFig) float64 {
	var good, capa float64
	for _, f := range fs {
		if f.seconds > 0 {
			good += f.Goodput * f.seconds
			capa += f.Capacity * f.seconds
		}
	}
	if capa == 0 {
		return math.NaN()
	}
	return good / capa
}

// refusedShare is the share of calls answered 429 over the measured run.
func refusedShare(res *result) float64 {
	ps := res.Points
	if len(ps) < 2 {
		return math.NaN()
	}
	calls := callCount(ps[len(ps)-1]) - callCount(ps[0])
	if calls <= 0 {
		return math.NaN()
	}
	return (refusedCount(ps[len(ps)-1]) - refusedCount(ps[0])) / calls
}

// meanLimit averages the sampled limit over [from, to).
func meanLimit(ps []point, from, to time.Duration) float64 {
	return meanOf(ps, from, to, func(p point) float64 { return p.Limit })
}

// meanOf averages f of the points sampled in [from, to).
func meanOf(ps []point, from, to time.Duration, f func(point) float64) float64 {
	var sum float64
	n := 0
	for _, p := range ps {
		if p.T >= from && p.T < to {
			sum += f(p)
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// reconvergeWindow is how long the limit is averaged over to judge
// convergence: the AIMD limit is a sawtooth (it probes K+1, is cut to
// about 0.9·K, grows back; cut by Backoff while an overload persists), so
// single samples swing around its mean.
const reconvergeWindow = time.Second

// reconverge is the time from the i-th capacity change until the limit's
// mean over the preceding reconvergeWindow (all of it after the change)
// is within ±20 % of the new K; NaN if that does not happen before the
// next change or the end.
func reconverge(res *result, s schedule, i int) float64 {
	change := time.Duration(i) * s.phase
	end := change + s.phase
	k := float64(s.ks[i])
	for _, p := range res.Points {
		if p.T < change+reconvergeWindow || p.T >= end {
			continue
		}
		m := meanLimit(res.Points, p.T-reconvergeWindow+1, p.T+1)
		if math.Abs(m-k) <= 0.2*k {
			return (p.T - change).Seconds()
		}
	}
	return math.NaN()
}
