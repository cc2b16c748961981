package async

import (
	"context"
	"errors"
	"sync"

	"github.com/sluicehq/sluice/runtime/tenancy"
)

// gate hands out workers: a task holds one from admission until it
// finishes (its retry waits included), so the worker budget bounds the
// tasks in progress across the runtime. Two limits apply to each tenant:
//
//   - its fair share of the budget (tenancy.Shares: budget × weight ÷ the
//     weights of the tenants that want workers now), which stops a tenant
//     whose tasks are slow from holding every worker (B4);
//   - its maxConcurrency quota (tenancy.Limits).
//
// Waiters block until a worker frees up, then all try again: the number
// of tenants is small, and Shares (not the order of wake-ups) is what
// keeps the division fair. Safe for concurrent use; it starts no goroutines.
type gate struct {
	shares *tenancy.Shares
	limits *tenancy.Limits

	mu   sync.Mutex
	wake chan struct{} // closed and replaced whenever a worker may have freed up

	// waitMu orders the updates of waiting with the Shares.SetWaiting calls
	// they cause (Shares' callbacks take mu, never waitMu).
	waitMu  sync.Mutex
	waiting map[string]int // waiters per tenant, to tell Shares who wants workers
}

func newGate(budget int, tenants []tenancy.Tenant) *gate {
	g := &gate{wake: make(chan struct{}), waiting: map[string]int{}}
	g.shares = tenancy.NewShares(budget, tenants, func(string) { g.broadcast() })
	g.limits = tenancy.NewLimits(tenants, tenancy.LimitsOptions{OnFree: func(string) { g.broadcast() }})
	return g
}

func (g *gate) broadcast() {
	g.mu.Lock()
	close(g.wake)
	g.wake = make(chan struct{})
	g.mu.Unlock()
}

// acquire waits for a worker for tenant. The returned release must be
// called once when the task is finished. Errors: ctx's error, or
// tenancy.ErrUnknownTenant.
func (g *gate) acquire(ctx context.Context, tenant string) (release func(), err error) {
	registered := false
	defer func() {
		if registered {
			g.setWaiting(tenant, -1)
		}
	}()
	for {
		g.mu.Lock()
		wake := g.wake
		g.mu.Unlock()
		if rel, ok, err := g.try(tenant); err != nil {
			return nil, err
		} else if ok {
			return rel, nil
		}
		if !registered {
			// Waiting makes the tenant active, which may shrink the others'
			// shares; try once more before sleeping in case that changed.
			registered = true
			g.setWaiting(tenant, +1)
			continue
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (g *gate) try(tenant string) (func(), bool, error) {
	relShare, ok := g.shares.TryAcquire(tenant)
	if !ok {
		return nil, false, nil
	}
	relQuota, err := g.limits.TryAcquire(tenant)
	if err != nil {
		relShare()
		if errors.Is(err, tenancy.ErrQuotaExceeded) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return func() { relQuota(); relShare() }, true, nil
}

func (g *gate) setWaiting(tenant string, delta int) {
	g.waitMu.Lock()
	defer g.waitMu.Unlock()
	before := g.waiting[tenant]
	after := before + delta
	if after == 0 {
		delete(g.waiting, tenant)
	} else {
		g.waiting[tenant] = after
	}
	switch {
	case before == 0 && after > 0:
		g.shares.SetWaiting(tenant, true)
	case before > 0 && after == 0:
		g.shares.SetWaiting(tenant, false)
	}
}

// inFlight is tenant's number of workers held.
func (g *gate) inFlight(tenant string) int { return g.shares.InFlight(tenant) }
