package tenancy

import (
	"strings"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu  sync.Mutex
	got []Decision
}

func (r *recorder) Placed(d Decision) {
	r.mu.Lock()
	r.got = append(r.got, d)
	r.mu.Unlock()
}

// placementFixture drives a Placement with a manual clock and the default
// thresholds: window 1m, 20 samples, p99 > 5s slow, 20% errors, lag ≥ 10,
// promote after 30s, reclaim after 10m idle, cooldown 10m.
type placementFixture struct {
	t    *testing.T
	c    *clock
	p    *Placement
	rec  *recorder
	sent map[string]int // tasks observed per function, to spread failures evenly
}

func newPlacementFixture(t *testing.T, tenants []Tenant, cfg PlacementConfig) *placementFixture {
	c := newClock()
	rec := &recorder{}
	cfg.Now, cfg.Recorder = c.Now, rec
	if tenants == nil {
		tenants = []Tenant{{Name: "acme"}}
	}
	return &placementFixture{t: t, c: c, p: NewPlacement(tenants, cfg), rec: rec, sent: map[string]int{}}
}

// traffic simulates d of traffic in 1s steps: per step n tasks of each
// function with the given health, and the shared queue's depth growing by
// grow per step from depth.
func (f *placementFixture) traffic(d time.Duration, tenant string, fns map[string]health, queue string, depth, grow int) []Decision {
	f.t.Helper()
	var out []Decision
	for s := time.Duration(0); s < d; s += time.Second {
		f.c.Advance(time.Second)
		for fn, h := range fns {
			for range 2 {
				o := Succeeded
				if float64(f.sent[fn]%10) < h.errorRate*10 {
					o = Failed
				}
				f.sent[fn]++
				f.p.Observe(tenant, fn, o, h.latency)
			}
		}
		if queue != "" {
			f.p.ObserveDepth(queue, depth)
			depth += grow
		}
		out = append(out, f.p.Decisions()...)
	}
	return out
}

type health struct {
	latency   time.Duration
	errorRate float64
}

var (
	healthy = health{latency: 10 * time.Millisecond}
	noisy   = health{latency: 8 * time.Second, errorRate: 0.5}
)

func TestPlacementPromotesNoisyFunction(t *testing.T) {
	f := newPlacementFixture(t, nil, PlacementConfig{})
	fns := map[string]health{"resize": noisy, "thumb": healthy}

	// Judged from MinSamples (20 tasks: 10s at 2/s); the harm must then last
	// PromoteAfter (30s) before anything changes.
	if got := f.traffic(38*time.Second, "acme", fns, "t.acme", 20, 5); len(got) != 0 {
		t.Fatalf("decisions before PromoteAfter: %+v", got)
	}
	if q := f.p.Route("acme", "resize"); q != "t.acme" {
		t.Fatalf("Route before promotion = %q", q)
	}
	got := f.traffic(5*time.Second, "acme", fns, "t.acme", 300, 5)
	if len(got) != 1 {
		t.Fatalf("decisions = %+v, want one promotion", got)
	}
	d := got[0]
	if d.Kind != Promote || d.Tenant != "acme" || d.Function != "resize" || d.From != "t.acme" || d.To != "f.acme.resize" {
		t.Fatalf("decision = %+v", d)
	}
	if !strings.Contains(d.Reason, "error rate") || !strings.Contains(d.Reason, "latency") || !strings.Contains(d.Reason, "backlog") {
		t.Errorf("reason %q does not explain the promotion", d.Reason)
	}
	if q := f.p.Route("acme", "resize"); q != "f.acme.resize" {
		t.Fatalf("Route after promotion = %q, want the dedicated queue", q)
	}
	if q := f.p.Route("acme", "thumb"); q != "t.acme" {
		t.Fatalf("neighbour's Route = %q, want the shared queue", q)
	}
	if len(f.rec.got) != 1 || f.rec.got[0] != d {
		t.Fatalf("recorder got %+v", f.rec.got)
	}

	// Busy dedicated queue: no reclaim however long it runs.
	if got := f.traffic(15*time.Minute, "acme", fns, "f.acme.resize", 50, 0); len(got) != 0 {
		t.Fatalf("decisions while the dedicated queue is busy: %+v", got)
	}

	// Idle (nothing routed or finished, nothing stored) for ReclaimAfter:
	// reclaimed, and the function routes back.
	f.p.ObserveDepth("f.acme.resize", 0)
	if got := f.traffic(9*time.Minute+58*time.Second, "acme", map[string]health{"thumb": healthy}, "", 0, 0); len(got) != 0 {
		t.Fatalf("reclaimed before ReclaimAfter: %+v", got)
	}
	got = f.traffic(5*time.Second, "acme", map[string]health{"thumb": healthy}, "", 0, 0)
	if len(got) != 1 || got[0].Kind != Reclaim || got[0].From != "f.acme.resize" || got[0].To != "t.acme" {
		t.Fatalf("decisions = %+v, want the reclaim", got)
	}
	if q := f.p.Route("acme", "resize"); q != "t.acme" {
		t.Fatalf("Route after reclaim = %q", q)
	}
}

func TestPlacementStoredBacklogDelaysReclaim(t *testing.T) {
	f := newPlacementFixture(t, nil, PlacementConfig{})
	if !f.p.Adopt("f.acme.resize") {
		t.Fatal("Adopt refused a dedicated queue name")
	}
	// Tasks stored, nobody finishing them; the dispatcher samples rarely.
	f.p.ObserveDepth("f.acme.resize", 3)
	if got := f.traffic(20*time.Minute, "acme", nil, "", 0, 0); len(got) != 0 {
		t.Fatalf("reclaimed a queue holding tasks: %+v", got)
	}
	f.p.ObserveDepth("f.acme.resize", 0)
	if got := f.p.Decisions(); len(got) != 1 || got[0].Kind != Reclaim {
		t.Fatalf("decisions = %+v, want the reclaim once empty", got)
	}
}

func TestPlacementRouteKeepsDedicatedQueueAlive(t *testing.T) {
	f := newPlacementFixture(t, nil, PlacementConfig{})
	f.p.Adopt("f.acme.resize")
	for range 30 {
		f.c.Advance(time.Minute)
		if q := f.p.Route("acme", "resize"); q != "f.acme.resize" {
			t.Fatalf("Route = %q", q)
		}
		if got := f.p.Decisions(); len(got) != 0 {
			t.Fatalf("reclaimed while submissions keep arriving: %+v", got)
		}
	}
}

func TestPlacementHysteresis(t *testing.T) {
	f := newPlacementFixture(t, nil, PlacementConfig{})
	fns := map[string]health{"resize": noisy, "thumb": healthy}
	calm := map[string]health{"resize": healthy, "thumb": healthy}

	// The queue backs up for 20s at a time, then recovers: the harm never
	// lasts PromoteAfter, so the noisy function stays put.
	for range 10 {
		if got := f.traffic(20*time.Second, "acme", fns, "t.acme", 50, 1); len(got) != 0 {
			t.Fatalf("promoted on a harm shorter than PromoteAfter: %+v", got)
		}
		if got := f.traffic(70*time.Second, "acme", calm, "t.acme", 5, 0); len(got) != 0 {
			t.Fatalf("decisions while the queue is short: %+v", got)
		}
	}

	// Promote, go idle, get reclaimed.
	if got := f.traffic(40*time.Second, "acme", fns, "t.acme", 50, 1); len(got) != 1 || got[0].Kind != Promote {
		t.Fatalf("want a promotion, got %+v", got)
	}
	f.p.ObserveDepth("f.acme.resize", 0)
	if got := f.traffic(11*time.Minute, "acme", nil, "", 0, 0); len(got) != 1 || got[0].Kind != Reclaim {
		t.Fatalf("want a reclaim, got %+v", got)
	}
	// Noisy again at once: Cooldown (10m from the reclaim, a minute ago)
	// holds it in the shared queue.
	if got := f.traffic(8*time.Minute+50*time.Second, "acme", fns, "t.acme", 50, 1); len(got) != 0 {
		t.Fatalf("re-promoted during the cooldown: %+v", got)
	}
	got := f.traffic(20*time.Second, "acme", fns, "t.acme", 600, 1)
	if len(got) != 1 || got[0].Kind != Promote {
		t.Fatalf("want a promotion after the cooldown, got %+v", got)
	}
	// It was harmful throughout the cooldown, so it moves the moment the
	// cooldown ends.
	if want := f.rec.got[1].At.Add(10 * time.Minute); !got[0].At.Equal(want) {
		t.Fatalf("promoted at %v, want %v (end of the cooldown)", got[0].At, want)
	}
}

func TestPlacementNeedsHarm(t *testing.T) {
	tests := []struct {
		name         string
		fns          map[string]health
		depth, grow  int
		wantPromoted bool
	}{
		{"noisy with a neighbour in a growing queue", map[string]health{"x": noisy, "y": healthy}, 20, 3, true},
		{"noisy with a neighbour in a steady backlog", map[string]health{"x": noisy, "y": healthy}, 500, 0, true},
		{"slow only", map[string]health{"x": {latency: 6 * time.Second}, "y": healthy}, 20, 3, true},
		{"failing only", map[string]health{"x": {latency: time.Millisecond, errorRate: 0.3}, "y": healthy}, 20, 3, true},
		{"alone in its queue", map[string]health{"x": noisy}, 20, 3, false},
		{"queue draining", map[string]health{"x": noisy, "y": healthy}, 500, -5, false},
		{"queue short", map[string]health{"x": noisy, "y": healthy}, 5, 0, false},
		{"healthy in a congested queue", map[string]health{"x": healthy, "y": healthy}, 500, 10, false},
		{"errors below the threshold", map[string]health{"x": {latency: time.Millisecond, errorRate: 0.1}, "y": healthy}, 20, 3, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newPlacementFixture(t, nil, PlacementConfig{})
			got := f.traffic(2*time.Minute, "acme", tc.fns, "t.acme", tc.depth, tc.grow)
			promoted := len(got) == 1 && got[0].Kind == Promote && got[0].Function == "x"
			if promoted != tc.wantPromoted || (!tc.wantPromoted && len(got) != 0) {
				t.Fatalf("decisions = %+v, want promoted=%v", got, tc.wantPromoted)
			}
		})
	}
}

func TestPlacementMinSamples(t *testing.T) {
	f := newPlacementFixture(t, nil, PlacementConfig{MinSamples: 1000})
	fns := map[string]health{"x": noisy, "y": healthy}
	if got := f.traffic(2*time.Minute, "acme", fns, "t.acme", 20, 3); len(got) != 0 {
		t.Fatalf("judged on too few samples: %+v", got)
	}
}

func TestPlacementPoolsAndCap(t *testing.T) {
	tenants := []Tenant{{Name: "small1", Pool: "tiny"}, {Name: "small2", Pool: "tiny"}, {Name: "big"}}
	f := newPlacementFixture(t, tenants, PlacementConfig{MaxDedicated: 1})
	if q := f.p.Route("small1", "fn"); q != "p.tiny" {
		t.Fatalf("pooled tenant routes to %q", q)
	}
	if q := f.p.SharedQueue("big"); q != "t.big" {
		t.Fatalf("SharedQueue(big) = %q", q)
	}
	// Neighbours across tenants of one pool count.
	var got []Decision
	for range 60 {
		f.c.Advance(time.Second)
		for range 2 {
			f.p.Observe("small1", "noisy", Failed, 9*time.Second)
			f.p.Observe("small2", "calm", Succeeded, time.Millisecond)
			f.p.Observe("big", "a", Failed, 9*time.Second)
			f.p.Observe("big", "b", Failed, 9*time.Second)
		}
		f.p.ObserveDepth("p.tiny", 100)
		f.p.ObserveDepth("t.big", 100)
		got = append(got, f.p.Decisions()...)
	}
	// big.a, big.b and small1.noisy all qualify; MaxDedicated 1 lets only
	// the first in (tenant, function) order through.
	if len(got) != 1 || got[0].Tenant != "big" || got[0].Function != "a" {
		t.Fatalf("decisions = %+v, want only big/a promoted (cap 1)", got)
	}
	if q := f.p.Route("small1", "noisy"); q != "p.tiny" {
		t.Fatalf("capped function routes to %q", q)
	}
	// Reload: small2 leaves the pool.
	f.p.Update([]Tenant{{Name: "small1", Pool: "tiny"}, {Name: "small2"}, {Name: "big"}})
	if q := f.p.Route("small2", "calm"); q != "t.small2" {
		t.Fatalf("after reload Route = %q", q)
	}
}

func TestPlacementForgetsQuietFunctions(t *testing.T) {
	f := newPlacementFixture(t, nil, PlacementConfig{})
	for i := range 100 {
		f.p.Observe("acme", strings.Repeat("f", i+1), Succeeded, time.Millisecond)
	}
	f.p.ObserveDepth("t.acme", 1)
	f.c.Advance(3 * time.Minute)
	f.p.Decisions()
	f.p.mu.Lock()
	n, q := len(f.p.functions), len(f.p.queues)
	f.p.mu.Unlock()
	if n != 0 || q != 0 {
		t.Fatalf("%d functions and %d queues remembered after going quiet, want 0", n, q)
	}
}

func TestDedicatedQueueNames(t *testing.T) {
	tests := []struct {
		function string
		queue    string
	}{
		{"resize", "f.acme.resize"},
		{"Resize-2", "f.acme.Resize-2"},
		{"a.b", "f.acme.a_2eb"},
		{"a_b", "f.acme.a_5fb"},
		{"héllo world", "f.acme.h_c3_a9llo_20world"},
	}
	f := newPlacementFixture(t, nil, PlacementConfig{})
	for _, tc := range tests {
		q := DedicatedQueue("acme", tc.function)
		if q != tc.queue {
			t.Errorf("DedicatedQueue(%q) = %q, want %q", tc.function, q, tc.queue)
		}
		if !f.p.Adopt(q) {
			t.Errorf("Adopt(%q) = false", q)
		}
		if r := f.p.Route("acme", tc.function); r != q {
			t.Errorf("after Adopt, Route(%q) = %q", tc.function, r)
		}
	}
	long := DedicatedQueue("acme", strings.Repeat("x", 300))
	if len(long) > 200 || !strings.HasPrefix(long, "f.acme._h") {
		t.Errorf("long function name gives %q", long)
	}
	empty := DedicatedQueue("acme", "")
	for _, bad := range []string{"t.acme", "p.pool", "f.acme", "f.Bad.x", "f.acme._zz", "f.acme.x_2", long, empty, "other"} {
		if f.p.Adopt(bad) {
			t.Errorf("Adopt(%q) = true", bad)
		}
	}
}
