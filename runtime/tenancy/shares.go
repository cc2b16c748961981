package tenancy

import "sync"

// Shares divides a worker budget (invocations in flight across the runtime)
// among tenants in proportion to their weights, counting only tenants that
// want workers now: those with tasks waiting or in flight. It is work
// conserving — a tenant alone may use the whole budget — and it is what
// bounds a noisy tenant's hold on the workers: DRR orders dispatches fairly,
// but a tenant whose tasks take 2 s holds a worker 200 times longer than one
// whose tasks take 10 ms, so equal dispatch rates alone would let it
// occupy nearly every worker.
//
// A tenant's share is max(1, ⌊budget × weight ÷ active weight⌋). When a
// tenant becomes active, the others' shares shrink at once but their running
// invocations are not pre-empted: the newcomer gets workers as those finish.
//
// Safe for concurrent use.
type Shares struct {
	mu       sync.Mutex
	budget   int
	weights  map[string]int
	inFlight map[string]int
	waiting  map[string]bool
	total    int
	// activeWeight is the sum of the weights of tenants waiting or in
	// flight, kept up to date so Share is O(1).
	activeWeight int
	onFree       func(string)
}

// NewShares divides budget (≥ 1) among tenants (their Weight). Tenants not in
// the list have weight 1. onFree, if set, is called without locks for each
// tenant that may be able to acquire again — after one of its own releases,
// and for every active tenant when another tenant goes idle (their shares
// grew) — so the dispatcher can resume its DRR flow.
func NewShares(budget int, tenants []Tenant, onFree func(tenant string)) *Shares {
	s := &Shares{budget: max(1, budget), weights: map[string]int{}, inFlight: map[string]int{}, waiting: map[string]bool{}, onFree: onFree}
	for _, t := range tenants {
		s.weights[t.Name] = t.weight()
	}
	return s
}

func (s *Shares) weight(tenant string) int {
	if w, ok := s.weights[tenant]; ok {
		return w
	}
	return 1
}

func (s *Shares) active(tenant string) bool { return s.waiting[tenant] || s.inFlight[tenant] > 0 }

// update applies change to tenant's state, keeps activeWeight up to date,
// and returns the tenants to notify through onFree if tenant went idle.
func (s *Shares) update(tenant string, change func()) (grown []string) {
	was := s.active(tenant)
	change()
	switch now := s.active(tenant); {
	case now && !was:
		s.activeWeight += s.weight(tenant)
	case was && !now:
		s.activeWeight -= s.weight(tenant)
		if s.onFree != nil {
			for t := range s.inFlight {
				grown = append(grown, t)
			}
			for t := range s.waiting {
				if s.inFlight[t] == 0 {
					grown = append(grown, t)
				}
			}
		}
	}
	return grown
}

func (s *Shares) notify(tenants []string) {
	for _, t := range tenants {
		s.onFree(t)
	}
}

// SetWaiting records whether tenant has tasks waiting for a worker. The
// dispatcher sets it when a tenant's DRR flow gains its first item and
// clears it when the flow empties.
func (s *Shares) SetWaiting(tenant string, waiting bool) {
	s.mu.Lock()
	grown := s.update(tenant, func() {
		if waiting {
			s.waiting[tenant] = true
		} else {
			delete(s.waiting, tenant)
		}
	})
	s.mu.Unlock()
	s.notify(grown)
}

// Share is tenant's current share of the budget, as if it were active.
func (s *Shares) Share(tenant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.share(tenant)
}

func (s *Shares) share(tenant string) int {
	w := s.activeWeight
	if !s.active(tenant) {
		w += s.weight(tenant)
	}
	return max(1, s.budget*s.weight(tenant)/w)
}

// TryAcquire takes a worker for tenant if the budget has room and tenant is
// below its share. release must be called once when the invocation ends
// (further calls do nothing).
func (s *Shares) TryAcquire(tenant string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= s.budget || s.inFlight[tenant] >= s.share(tenant) {
		return nil, false
	}
	// Acquiring makes tenant active, which never grows another's share.
	_ = s.update(tenant, func() { s.inFlight[tenant]++ })
	s.total++
	var once sync.Once
	return func() { once.Do(func() { s.release(tenant) }) }, true
}

func (s *Shares) release(tenant string) {
	s.mu.Lock()
	grown := s.update(tenant, func() {
		if s.inFlight[tenant]--; s.inFlight[tenant] == 0 {
			delete(s.inFlight, tenant)
		}
	})
	s.total--
	s.mu.Unlock()
	if s.onFree != nil {
		s.onFree(tenant)
		s.notify(grown)
	}
}

// Full reports whether every worker of the budget is acquired, so that no
// TryAcquire can succeed until a release (whatever the tenant).
func (s *Shares) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total >= s.budget
}

// InFlight is tenant's number of acquired workers.
func (s *Shares) InFlight(tenant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight[tenant]
}
