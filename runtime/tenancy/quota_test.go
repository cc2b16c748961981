package tenancy

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// clock is a manual clock for deterministic tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func quotaErr(t *testing.T, err error) *QuotaError {
	t.Helper()
	var qe *QuotaError
	if !errors.As(err, &qe) || !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("error %v is not a *QuotaError matching ErrQuotaExceeded", err)
	}
	return qe
}

func TestAdmitRate(t *testing.T) {
	c := newClock()
	l := NewLimits([]Tenant{
		{Name: "slow", Quotas: Quotas{Rate: 2, Burst: 2}},
		{Name: "free"},
	}, LimitsOptions{Now: c.Now})
	for i := range 2 {
		if err := l.Admit("slow", 0); err != nil {
			t.Fatalf("submission %d within burst: %v", i, err)
		}
	}
	qe := quotaErr(t, l.Admit("slow", 0))
	if qe.Reason != ReasonRate || qe.Tenant != "slow" || qe.Limit != 2 {
		t.Fatalf("refusal = %+v", qe)
	}
	if qe.RetryAfter != 500*time.Millisecond {
		t.Fatalf("RetryAfter = %s, want 500ms (one token at 2/s)", qe.RetryAfter)
	}
	// A refused submission does not use up a token: after RetryAfter,
	// exactly one more is accepted.
	c.Advance(qe.RetryAfter)
	if err := l.Admit("slow", 0); err != nil {
		t.Fatalf("after RetryAfter: %v", err)
	}
	quotaErr(t, l.Admit("slow", 0))

	for range 1000 {
		if err := l.Admit("free", 0); err != nil {
			t.Fatalf("tenant without quotas refused: %v", err)
		}
	}
	if err := l.Admit("nobody", 0); !errors.Is(err, ErrUnknownTenant) {
		t.Fatalf("unknown tenant: %v", err)
	}
}

func TestAdmitDefaultBurst(t *testing.T) {
	c := newClock()
	l := NewLimits([]Tenant{{Name: "a", Quotas: Quotas{Rate: 2.5}}}, LimitsOptions{Now: c.Now})
	n := 0
	for l.Admit("a", 0) == nil {
		n++
	}
	if n != 3 {
		t.Fatalf("accepted %d at once, want burst ceil(2.5) = 3", n)
	}
}

func TestAdmitQueueDepth(t *testing.T) {
	c := newClock()
	l := NewLimits([]Tenant{{Name: "a", Quotas: Quotas{MaxQueueDepth: 3, Rate: 1, Burst: 1}}},
		LimitsOptions{Now: c.Now, QueueFullRetryAfter: 7 * time.Second})
	qe := quotaErr(t, l.Admit("a", 3))
	if qe.Reason != ReasonQueueDepth || qe.RetryAfter != 7*time.Second || qe.Limit != 3 {
		t.Fatalf("refusal = %+v", qe)
	}
	// The depth refusal spent no rate token.
	if err := l.Admit("a", 2); err != nil {
		t.Fatalf("below depth: %v", err)
	}
}

func TestConcurrencyQuota(t *testing.T) {
	var freed []string
	var mu sync.Mutex
	l := NewLimits([]Tenant{{Name: "a", Quotas: Quotas{MaxConcurrency: 2}}, {Name: "b"}}, LimitsOptions{
		OnFree: func(tenant string) { mu.Lock(); freed = append(freed, tenant); mu.Unlock() },
	})
	r1, err := l.TryAcquire("a")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.TryAcquire("a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.TryAcquire("a")
	if qe := quotaErr(t, err); qe.Reason != ReasonConcurrency || qe.Limit != 2 {
		t.Fatalf("refusal = %+v", qe)
	}
	if n := l.InFlight("a"); n != 2 {
		t.Fatalf("InFlight = %d, want 2", n)
	}
	r1()
	r1() // a second call does nothing
	if n := l.InFlight("a"); n != 1 {
		t.Fatalf("InFlight after release = %d, want 1", n)
	}
	r3, err := l.TryAcquire("a")
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	r2()
	r3()
	mu.Lock()
	// Only the releases that left the quota report it: 2→1 twice.
	if len(freed) != 2 || freed[0] != "a" || freed[1] != "a" {
		t.Errorf("OnFree calls = %v, want [a a]", freed)
	}
	mu.Unlock()

	var rels []func()
	for range 100 {
		r, err := l.TryAcquire("b")
		if err != nil {
			t.Fatalf("unlimited tenant refused: %v", err)
		}
		rels = append(rels, r)
	}
	for _, r := range rels {
		r()
	}
	if _, err := l.TryAcquire("nobody"); !errors.Is(err, ErrUnknownTenant) {
		t.Fatalf("unknown tenant: %v", err)
	}
}

func TestLimitsUpdate(t *testing.T) {
	c := newClock()
	a := Tenant{Name: "a", Quotas: Quotas{Rate: 1, Burst: 1, MaxConcurrency: 1}}
	l := NewLimits([]Tenant{a, {Name: "gone"}}, LimitsOptions{Now: c.Now})
	if err := l.Admit("a", 0); err != nil {
		t.Fatal(err)
	}
	rel, err := l.TryAcquire("gone")
	if err != nil {
		t.Fatal(err)
	}
	// Unchanged quotas keep their bucket (still empty); in-flight is kept.
	relA, err := l.TryAcquire("a")
	if err != nil {
		t.Fatal(err)
	}
	l.Update([]Tenant{a})
	quotaErr(t, l.Admit("a", 0))
	if _, err := l.TryAcquire("a"); err == nil {
		t.Fatalf("in-flight count lost on reload")
	}
	if err := l.Admit("gone", 0); !errors.Is(err, ErrUnknownTenant) {
		t.Fatalf("removed tenant: %v", err)
	}
	rel() // releasing a removed tenant's slot is harmless
	relA()
	// Changed quotas start a fresh bucket.
	a.Quotas.Rate = 5
	l.Update([]Tenant{a})
	if err := l.Admit("a", 0); err != nil {
		t.Fatalf("after raising the rate: %v", err)
	}
}
