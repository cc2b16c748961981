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
// Tasks that find no worker wait in one FIFO per tenant, and a worker that
// frees up goes to the next of them in weighted deficit round robin order
// (tenancy.DRR, the tenant's weight per turn) among the tenants within
// their share and quota: while several tenants wait, admissions follow
// their weights and none waits behind another's whole backlog. A task that
// arrives while its tenant has none waiting takes a free worker at once.
//
// Safe for concurrent use; it starts no goroutines. Workers are handed over
// (pump) by whoever changed what limits them: a release, a new waiter, a
// waiter giving up.
type gate struct {
	shares *tenancy.Shares
	limits *tenancy.Limits

	mu     sync.Mutex
	drr    *tenancy.DRR[*waiter]
	queued map[string]int // waiters in the DRR per tenant, given-up ones included
	// waiting counts the waiters still wanting a worker per tenant, to tell
	// Shares who is active.
	waiting map[string]int
}

// waiter is one acquire call waiting for a worker.
type waiter struct {
	grant chan func() // capacity 1: the worker's release, sent once
	// gaveUp: its acquire returned without a worker (its context ended);
	// guarded by gate.mu. Its turn, when it comes, is passed on.
	gaveUp bool
}

func newGate(budget int, tenants []tenancy.Tenant) *gate {
	g := &gate{drr: tenancy.NewDRR[*waiter](1), queued: map[string]int{}, waiting: map[string]int{}}
	for _, t := range tenants {
		g.drr.SetWeight(t.Name, t.Weight)
	}
	// No onFree callbacks: every change that can free a worker calls pump.
	g.shares = tenancy.NewShares(budget, tenants, nil)
	g.limits = tenancy.NewLimits(tenants, tenancy.LimitsOptions{})
	return g
}

// acquire waits for a worker for tenant. The returned release must be
// called once when the task is finished. Errors: ctx's error, or
// tenancy.ErrUnknownTenant.
func (g *gate) acquire(ctx context.Context, tenant string) (release func(), err error) {
	g.mu.Lock()
	if g.queued[tenant] == 0 {
		rel, ok, err := g.try(tenant)
		if err != nil || ok {
			g.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return g.releaser(rel), nil
		}
	}
	w := &waiter{grant: make(chan func(), 1)}
	g.drr.Push(tenant, w)
	g.queued[tenant]++
	g.setWaiting(tenant, +1)
	g.pumpLocked() // waiting may have changed the shares
	g.mu.Unlock()

	select {
	case rel := <-w.grant:
		return rel, nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	select {
	case rel := <-w.grant: // granted meanwhile: give it back
		g.mu.Unlock()
		rel()
	default:
		w.gaveUp = true
		g.setWaiting(tenant, -1)
		g.pumpLocked() // the others' shares may have grown
		g.mu.Unlock()
	}
	return nil, ctx.Err()
}

// try takes a worker for tenant if its share and quota allow. It returns
// ok=false without an error when they do not.
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

// releaser wraps a worker's release so that freeing it hands it on.
func (g *gate) releaser(rel func()) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			rel()
			g.mu.Lock()
			g.pumpLocked()
			g.mu.Unlock()
		})
	}
}

// pumpLocked hands free workers to waiters in DRR order until none can be
// admitted. Every flow with waiters is resumed first: the DRR paused those
// whose tenant was at its share or quota, and any change since (a tenant
// going idle grows the others' shares, a release frees quota) may admit
// them; a resumed flow rejoins at the end of the round. The number of tenants is small, so this costs
// O(tenants) per worker handed over. Called with g.mu held.
func (g *gate) pumpLocked() {
	for {
		if g.shares.Full() {
			// Nobody can be admitted: keep the round as it is (NextIf would
			// pause every flow and lose their places).
			return
		}
		for t, n := range g.queued {
			if n > 0 {
				g.drr.Resume(t)
			}
		}
		var rel func()
		t, w, ok := g.drr.NextIf(func(t string) bool {
			r, ok, _ := g.try(t) // an unknown tenant never gets queued
			rel = r
			return ok
		})
		if !ok {
			return
		}
		if g.queued[t]--; g.queued[t] == 0 {
			delete(g.queued, t)
		}
		if w.gaveUp {
			rel() // the raw release: this loop hands it on
			continue
		}
		g.setWaiting(t, -1)
		w.grant <- g.releaser(rel)
	}
}

// setWaiting tells Shares when a tenant starts or stops having waiters.
// Called with g.mu held (Shares calls nothing back: it has no onFree).
func (g *gate) setWaiting(tenant string, delta int) {
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
