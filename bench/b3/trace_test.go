package b3

import (
	"math"
	"testing"
	"time"

	"github.com/sluicehq/sluice/bench/internal/measure"
)

func TestBound(t *testing.T) {
	for _, tt := range []struct {
		limit, inFlight, waiting, held float64
		want                           string
	}{
		{limit: 80, inFlight: 80, waiting: 80, held: 160, want: boundLimit},
		{limit: 80, inFlight: 79, waiting: 3, held: 82, want: boundLimit}, // a slot changing hands
		{limit: 80, inFlight: 80, waiting: 0, held: 80, want: boundLimit},
		{limit: 80, inFlight: 76, waiting: 0, held: 160, want: boundLimit}, // workers between calls
		{limit: 80, inFlight: 75, waiting: 0, held: 160, want: boundQueued},
		{limit: 80, inFlight: 40, waiting: 0, held: 60, want: boundQueued},
		{limit: 80, inFlight: 40, waiting: 0, held: 47, want: boundSource}, // under a tenth of the limit outside calls
		{limit: 80, inFlight: 0, waiting: 0, held: 0, want: boundSource},
		{limit: 4, inFlight: 3, waiting: 0, held: 6, want: boundLimit},
		{limit: 4, inFlight: 2, waiting: 0, held: 3, want: boundQueued},
	} {
		if got := bound(tt.limit, tt.inFlight, tt.waiting, tt.held); got != tt.want {
			t.Errorf("bound(limit %v, in flight %v, waiting %v, held %v) = %q, want %q",
				tt.limit, tt.inFlight, tt.waiting, tt.held, got, tt.want)
		}
	}
}

func TestTraceSummary(t *testing.T) {
	first := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var samples []measure.Sample
	add := func(limit, inFlight, waiting, held float64) {
		samples = append(samples, measure.Sample{At: first.Add(time.Duration(len(samples)) * traceEvery),
			Limit: limit, InFlight: inFlight, Waiting: waiting, Held: held})
	}
	add(10, 10, 10, 20)
	add(20, 20, 5, 25)
	add(30, 0, 0, 0)
	add(40, 10, 0, 30) // queued
	tr := newTrace(samples, first)
	if len(tr.T) != 4 || tr.T[3] != 0.15 {
		t.Fatalf("trace times = %v", tr.T)
	}
	s := tr.summary()
	if s.LimitP50 != 25 || s.LimitMax != 40 || s.InFlightP50 != 10 || s.InFlightMean != 10 || s.HeldMean != 18.75 {
		t.Errorf("summary = %+v", s)
	}
	if s.Bounds[boundLimit] != 0.5 || s.Bounds[boundQueued] != 0.25 || s.Bounds[boundSource] != 0.25 {
		t.Errorf("bounds = %v", s.Bounds)
	}
	if empty := (trace{}).summary(); empty.Bounds[boundLimit] != 0 || !math.IsNaN(float64(empty.LimitMax)) {
		t.Errorf("summary of no samples = %+v, want NaN figures", empty)
	}
}
