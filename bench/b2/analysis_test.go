package b2

import (
	"math"
	"testing"
	"time"
)

func sec(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

var sched = schedule{ks: []int{32, 16, 64}, phase: 20 * time.Second, service: 5 * time.Millisecond}

func TestSchedule(t *testing.T) {
	if got, want := sched.flag(), "0s:32,20s:16,40s:64"; got != want {
		t.Errorf("flag = %q, want %q", got, want)
	}
	for _, tt := range []struct {
		t    time.Duration
		want int
	}{{0, 32}, {sec(19.9), 32}, {sec(20), 16}, {sec(45), 64}, {sec(99), 64}, {-time.Second, 32}} {
		if got := sched.at(tt.t); got != tt.want {
			t.Errorf("at(%v) = %d, want %d", tt.t, got, tt.want)
		}
	}
	if got := sched.capacity(32); got != 6400 {
		t.Errorf("capacity(32) = %v, want 6400", got)
	}
}

func TestValueAt(t *testing.T) {
	ps := []point{{T: sec(1), OK: 100}, {T: sec(2), OK: 300}}
	for _, tt := range []struct {
		t    time.Duration
		want float64
	}{{0, 100}, {sec(1.5), 200}, {sec(3), 300}} {
		if got := valueAt(ps, tt.t, okCount); got != tt.want {
			t.Errorf("valueAt(%v) = %v, want %v", tt.t, got, tt.want)
		}
	}
}

// synth builds a result sampled every 100 ms whose 2xx count grows at
// goodput(t) per second and whose limit is limit(t).
func synth(first time.Duration, goodput func(time.Duration) float64, limit func(time.Duration) float64) *result {
	r := &result{First: first}
	var ok float64
	for t := first; t <= sched.total(); t += 100 * time.Millisecond {
		r.Points = append(r.Points, point{T: t, OK: int64(ok), Calls: int64(ok * 1.01), Refused: int64(ok * 0.01), Limit: limit(t)})
		ok += goodput(t) * 0.1
	}
	return r
}

func TestPhasesAndOverall(t *testing.T) {
	// Exactly 90 % of capacity in every phase.
	r := synth(sec(3), func(t time.Duration) float64 { return 0.9 * sched.capacity(sched.at(t)) },
		func(t time.Duration) float64 { return float64(sched.at(t)) })
	fs := phases(r, sched, true)
	for i, f := range fs {
		if math.Abs(f.Ratio-0.9) > 0.01 {
			t.Errorf("phase %d ratio = %v, want 0.9", i, f.Ratio)
		}
		if f.MeanLimit != float64(sched.ks[i]) {
			t.Errorf("phase %d mean limit = %v, want %d", i, f.MeanLimit, sched.ks[i])
		}
	}
	if fs[0].seconds < 16.8 || fs[0].seconds > 17.1 {
		t.Errorf("first phase measured over %v s, want 17 (from the first call)", fs[0].seconds)
	}
	if got := overall(fs); math.Abs(got-0.9) > 0.01 {
		t.Errorf("overall = %v, want 0.9", got)
	}
	if got := refusedShare(r); math.Abs(got-0.0099) > 0.001 {
		t.Errorf("refused share = %v, want ≈ 1 %%", got)
	}
}

func TestReconverge(t *testing.T) {
	tests := []struct {
		name  string
		limit func(time.Duration) float64
		want  []float64 // per change; NaN = never
	}{
		{"instant", func(t time.Duration) float64 { return float64(sched.at(t)) }, []float64{1, 1}},
		{"three seconds late", func(t time.Duration) float64 {
			return float64(sched.at(t - 3*time.Second))
		}, []float64{3.8, 3.7}},
		{"sawtooth around K counts as converged", func(t time.Duration) float64 {
			k := float64(sched.at(t))
			if (t/(100*time.Millisecond))%2 == 0 {
				return 0.72 * k
			}
			return 1.05 * k
		}, []float64{1, 1}},
		{"stuck at 32", func(time.Duration) float64 { return 32 }, []float64{math.NaN(), math.NaN()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := synth(sec(2), func(time.Duration) float64 { return 1000 }, tt.limit)
			for i, want := range tt.want {
				got := reconverge(r, sched, i+1)
				if math.IsNaN(want) != math.IsNaN(got) || (!math.IsNaN(want) && math.Abs(got-want) > 0.15) {
					t.Errorf("change %d: reconverge = %v, want %v", i+1, got, want)
				}
			}
		})
	}
}

func TestMedianWithNaN(t *testing.T) {
	if got := medianWithNaN([]float64{1, math.NaN(), math.NaN()}); !math.IsNaN(got) {
		t.Errorf("two of three never converged: median = %v, want NaN", got)
	}
	if got := medianWithNaN([]float64{1, 2, math.NaN()}); got != 2 {
		t.Errorf("median = %v, want 2", got)
	}
}
