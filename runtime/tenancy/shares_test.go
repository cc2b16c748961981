package tenancy

import (
	"slices"
	"sync"
	"testing"
)

func TestSharesWeightsAndWorkConservation(t *testing.T) {
	s := NewShares(8, []Tenant{{Name: "a", Weight: 1}, {Name: "b", Weight: 3}}, nil)
	s.SetWaiting("a", true) // a always has a backlog in this test
	// Alone, a tenant may use the whole budget.
	var relA []func()
	for range 8 {
		r, ok := s.TryAcquire("a")
		if !ok {
			t.Fatalf("a alone refused at %d in flight", s.InFlight("a"))
		}
		relA = append(relA, r)
	}
	if _, ok := s.TryAcquire("a"); ok {
		t.Fatalf("budget exceeded")
	}
	// b arrives: shares become 2 and 6. a keeps its 8 running (no
	// pre-emption) but cannot start more until it is below 2.
	s.SetWaiting("b", true)
	if a, b := s.Share("a"), s.Share("b"); a != 2 || b != 6 {
		t.Fatalf("shares = %d, %d; want 2, 6", a, b)
	}
	relA[0]()
	if _, ok := s.TryAcquire("a"); ok {
		t.Fatalf("a above its share acquired")
	}
	var relB []func()
	r, ok := s.TryAcquire("b")
	if !ok {
		t.Fatalf("b refused with a free worker and below its share")
	}
	relB = append(relB, r)
	for _, r := range relA[1:] {
		r()
	}
	for range 5 {
		r, ok := s.TryAcquire("b")
		if !ok {
			t.Fatalf("b refused below its share (%d in flight)", s.InFlight("b"))
		}
		relB = append(relB, r)
	}
	if _, ok := s.TryAcquire("b"); ok {
		t.Fatalf("b above its share acquired")
	}
	for range 2 {
		if _, ok := s.TryAcquire("a"); !ok {
			t.Fatalf("a refused within its share")
		}
	}
	if _, ok := s.TryAcquire("a"); ok {
		t.Fatalf("a above its share acquired")
	}
	// An unknown tenant has weight 1; the smallest share is 1.
	if got := s.Share("other"); got != 1 {
		t.Fatalf("Share(other) = %d, want 1", got)
	}
	relB[0]()
	relB[0]() // second call does nothing
	if got := s.InFlight("b"); got != 5 {
		t.Fatalf("InFlight(b) = %d, want 5", got)
	}
}

func TestSharesNotifyWhenSharesGrow(t *testing.T) {
	var mu sync.Mutex
	var notified []string
	s := NewShares(4, nil, func(tenant string) { mu.Lock(); notified = append(notified, tenant); mu.Unlock() })
	s.SetWaiting("a", true)
	s.SetWaiting("b", true)
	ra, _ := s.TryAcquire("a")
	rb, _ := s.TryAcquire("b")
	if s.Share("a") != 2 {
		t.Fatalf("Share(a) = %d, want 2", s.Share("a"))
	}
	s.SetWaiting("c", true)
	s.SetWaiting("c", false) // c leaves: a's and b's shares grow back
	mu.Lock()
	got := slices.Clone(notified)
	notified = nil
	mu.Unlock()
	slices.Sort(got)
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("notified %v when c went idle, want [a b]", got)
	}
	ra()
	mu.Lock()
	if !slices.Contains(notified, "a") {
		t.Fatalf("release of a did not notify a: %v", notified)
	}
	mu.Unlock()
	rb()
}

// TestSharesProtectQuickTenant simulates B4 in discrete time: tenant A's
// tasks take 200 ticks, B's take 1; both always have work. Once A's running
// tasks have drained to its share, B always gets a worker at once.
func TestSharesProtectQuickTenant(t *testing.T) {
	const budget = 10
	s := NewShares(budget, []Tenant{{Name: "a"}, {Name: "b"}}, nil)
	type task struct {
		tenant string
		ends   int
		rel    func()
	}
	var running []task
	s.SetWaiting("a", true)
	// A alone fills every worker first.
	for range budget {
		r, ok := s.TryAcquire("a")
		if !ok {
			t.Fatal("a alone refused")
		}
		running = append(running, task{"a", 200, r})
	}
	s.SetWaiting("b", true)
	firstB := -1
	for tick := 1; tick < 2000; tick++ {
		kept := running[:0]
		for _, tk := range running {
			if tk.ends <= tick {
				tk.rel()
				continue
			}
			kept = append(kept, tk)
		}
		running = kept
		// Dispatch: alternate between tenants, like the DRR, while
		// admitted.
		for progress := true; progress; {
			progress = false
			for _, tn := range []string{"a", "b"} {
				if r, ok := s.TryAcquire(tn); ok {
					d := 200
					if tn == "b" {
						d = 1
						if firstB < 0 {
							firstB = tick
						}
					}
					running = append(running, task{tn, tick + d, r})
					progress = true
				}
			}
		}
		if tick > 200 {
			if a, b := s.InFlight("a"), s.InFlight("b"); a > budget/2 || b != budget/2 {
				t.Fatalf("tick %d: in flight a=%d b=%d, want a ≤ %d and b = %d", tick, a, b, budget/2, budget/2)
			}
		}
	}
	if firstB != 200 {
		t.Fatalf("b first ran at tick %d, want 200 (when a's first tasks ended)", firstB)
	}
}

// TestSharesFull: Full reports a used-up budget, whichever tenants hold it.
func TestSharesFull(t *testing.T) {
	s := NewShares(2, []Tenant{{Name: "a"}, {Name: "b"}}, nil)
	relA, ok := s.TryAcquire("a")
	if !ok || s.Full() {
		t.Fatalf("one of two workers taken: ok %v, Full %v", ok, s.Full())
	}
	relB, ok := s.TryAcquire("b")
	if !ok || !s.Full() {
		t.Fatalf("both workers taken: ok %v, Full %v", ok, s.Full())
	}
	relA()
	if s.Full() {
		t.Fatal("Full after a release")
	}
	relB()
}
