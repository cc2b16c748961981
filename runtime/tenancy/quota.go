package tenancy

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrQuotaExceeded is matched (errors.Is) by every *QuotaError.
var ErrQuotaExceeded = errors.New("quota exceeded")

// ErrUnknownTenant: the tenant is not configured (it may have been removed
// by a reload).
var ErrUnknownTenant = errors.New("unknown tenant")

// Reason says which quota refused.
type Reason string

// Reasons of a QuotaError.
const (
	ReasonRate        Reason = "rate"        // submissions per second
	ReasonQueueDepth  Reason = "queue-depth" // tasks waiting
	ReasonConcurrency Reason = "concurrency" // invocations in flight
)

// QuotaError is a refusal by one of a tenant's quotas. The invoke API
// answers 429 with a Retry-After header of RetryAfter (rounded up to whole
// seconds).
type QuotaError struct {
	Tenant string
	Reason Reason
	// Limit is the quota's configured value.
	Limit float64
	// RetryAfter is when trying again may succeed: exact for the rate, a
	// configured hint for queue depth, zero for concurrency (the dispatcher
	// is told through LimitsOptions.OnFree instead).
	RetryAfter time.Duration
}

func (e *QuotaError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("tenant %s: %s quota %v exceeded; retry after %s", e.Tenant, e.Reason, e.Limit, e.RetryAfter)
	}
	return fmt.Sprintf("tenant %s: %s quota %v exceeded", e.Tenant, e.Reason, e.Limit)
}

// Is makes errors.Is(err, ErrQuotaExceeded) true.
func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

// LimitsOptions tune Limits. The zero value is usable.
type LimitsOptions struct {
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
	// QueueFullRetryAfter is the Retry-After hint when the queue-depth quota
	// refuses. Default 1s.
	QueueFullRetryAfter time.Duration
	// OnFree, if set, is called (without locks held, from the goroutine
	// that released) when a tenant that was at its concurrency quota drops
	// below it — the dispatcher resumes the tenant's flow in its DRR.
	OnFree func(tenant string)
}

// Limits enforces every tenant's Quotas. Safe for concurrent use.
type Limits struct {
	now       func() time.Time
	fullAfter time.Duration
	onFree    func(string)

	mu      sync.Mutex
	tenants map[string]*tenantLimits
}

type tenantLimits struct {
	quotas   Quotas
	limiter  *rate.Limiter // nil: no rate quota
	inFlight int
}

// NewLimits returns the limits of tenants (validated by the caller, e.g.
// through NewAuthenticator).
func NewLimits(tenants []Tenant, opts LimitsOptions) *Limits {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.QueueFullRetryAfter <= 0 {
		opts.QueueFullRetryAfter = time.Second
	}
	l := &Limits{now: opts.Now, fullAfter: opts.QueueFullRetryAfter, onFree: opts.OnFree, tenants: map[string]*tenantLimits{}}
	l.Update(tenants)
	return l
}

// Update applies a reloaded tenant list. Tenants whose quotas did not change
// keep their token buckets; in-flight counts are always kept; removed
// tenants are forgotten (their later releases are no-ops).
func (l *Limits) Update(tenants []Tenant) {
	l.mu.Lock()
	defer l.mu.Unlock()
	keep := make(map[string]bool, len(tenants))
	for _, t := range tenants {
		keep[t.Name] = true
		tl, ok := l.tenants[t.Name]
		if !ok {
			tl = &tenantLimits{}
			l.tenants[t.Name] = tl
		} else if tl.quotas == t.Quotas {
			continue
		}
		tl.quotas = t.Quotas
		tl.limiter = nil
		if q := t.Quotas; q.Rate > 0 {
			burst := q.Burst
			if burst <= 0 {
				burst = max(1, int(math.Ceil(q.Rate)))
			}
			tl.limiter = rate.NewLimiter(rate.Limit(q.Rate), burst)
		}
	}
	for name := range l.tenants {
		if !keep[name] {
			delete(l.tenants, name)
		}
	}
}

// Admit decides whether tenant may submit one more task, given queued, the
// number of its tasks waiting now (the caller reads the queue depth). The
// depth quota is checked first so that a refused submission does not spend
// a rate token. Errors: *QuotaError (ErrQuotaExceeded) or ErrUnknownTenant.
func (l *Limits) Admit(tenant string, queued int) error {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	tl, ok := l.tenants[tenant]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownTenant, tenant)
	}
	if m := tl.quotas.MaxQueueDepth; m > 0 && queued >= m {
		return &QuotaError{Tenant: tenant, Reason: ReasonQueueDepth, Limit: float64(m), RetryAfter: l.fullAfter}
	}
	if tl.limiter != nil {
		r := tl.limiter.ReserveN(now, 1)
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			return &QuotaError{Tenant: tenant, Reason: ReasonRate, Limit: tl.quotas.Rate, RetryAfter: d}
		}
	}
	return nil
}

// TryAcquire takes one of tenant's concurrency slots without waiting. The
// returned release must be called once when the invocation ends (further
// calls do nothing). Errors: *QuotaError with ReasonConcurrency when the
// tenant is at its quota, or ErrUnknownTenant.
func (l *Limits) TryAcquire(tenant string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tl, ok := l.tenants[tenant]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownTenant, tenant)
	}
	if m := tl.quotas.MaxConcurrency; m > 0 && tl.inFlight >= m {
		return nil, &QuotaError{Tenant: tenant, Reason: ReasonConcurrency, Limit: float64(m)}
	}
	tl.inFlight++
	var once sync.Once
	return func() { once.Do(func() { l.release(tenant, tl) }) }, nil
}

func (l *Limits) release(tenant string, tl *tenantLimits) {
	l.mu.Lock()
	tl.inFlight--
	m := tl.quotas.MaxConcurrency
	freed := m > 0 && tl.inFlight == m-1 && l.tenants[tenant] == tl
	l.mu.Unlock()
	if freed && l.onFree != nil {
		l.onFree(tenant)
	}
}

// InFlight is tenant's number of acquired, unreleased slots.
func (l *Limits) InFlight(tenant string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if tl, ok := l.tenants[tenant]; ok {
		return tl.inFlight
	}
	return 0
}
