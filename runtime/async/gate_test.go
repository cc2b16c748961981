package async

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/tenancy"
)

// gateWaiters starts n acquires per tenant, in this order, each waiting
// until the previous one is queued, and returns the channel their releases
// arrive on (with the tenant).
type grant struct {
	tenant  string
	release func()
}

func queueWaiters(t *testing.T, g *gate, ctx context.Context, order []string) (<-chan grant, *sync.WaitGroup) {
	t.Helper()
	out := make(chan grant, len(order))
	var wg sync.WaitGroup
	for i, tenant := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := g.acquire(ctx, tenant)
			if err != nil {
				out <- grant{tenant: "error: " + err.Error()}
				return
			}
			out <- grant{tenant, rel}
		}()
		eventually(t, fmt.Sprintf("waiter %d queued", i), func() bool {
			g.mu.Lock()
			defer g.mu.Unlock()
			n := 0
			for _, q := range g.queued {
				n += q
			}
			return n == i+1
		})
	}
	return out, &wg
}

func mustAcquire(t *testing.T, g *gate, tenant string) func() {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rel, err := g.acquire(ctx, tenant)
	if err != nil {
		t.Fatalf("acquire %s: %v", tenant, err)
	}
	return rel
}

// TestGateWeightedRoundRobin: with one worker and two backlogged tenants of
// weights 2 and 1, workers are handed over in weighted round robin order,
// whatever order the waiters arrived in.
func TestGateWeightedRoundRobin(t *testing.T) {
	g := newGate(1, []tenancy.Tenant{{Name: "a", Weight: 2}, {Name: "b", Weight: 1}})
	first := mustAcquire(t, g, "a")
	// b's backlog arrives first, all of it; then a's.
	order := []string{"b", "b", "b", "b", "a", "a", "a", "a", "a", "a", "a", "a"}
	grants, wg := queueWaiters(t, g, context.Background(), order)
	first()
	var got []string
	for range order {
		gr := <-grants
		got = append(got, gr.tenant)
		gr.release()
	}
	wg.Wait()
	// b was first in the round; then each turn is a's two, b's one, until b
	// runs dry.
	want := "b a a b a a b a a b a a"
	if s := strings.Join(got, " "); s != want {
		t.Fatalf("grant order %q, want %q", s, want)
	}
	if n := g.inFlight("a") + g.inFlight("b"); n != 0 {
		t.Fatalf("%d workers still held", n)
	}
}

// TestGateQuotaAndShare: a tenant at its concurrency quota waits while
// another tenant takes the free worker; its waiter is served when its own
// worker is released.
func TestGateQuotaAndShare(t *testing.T) {
	g := newGate(3, []tenancy.Tenant{{Name: "a", Quotas: tenancy.Quotas{MaxConcurrency: 1}}, {Name: "b"}})
	relA := mustAcquire(t, g, "a")
	grants, wg := queueWaiters(t, g, context.Background(), []string{"a"})
	relB := mustAcquire(t, g, "b") // a's waiter is at its quota: b is not held up
	select {
	case gr := <-grants:
		t.Fatalf("a's waiter got a worker (%s) while a was at its quota", gr.tenant)
	default:
	}
	relA()
	gr := <-grants
	if gr.tenant != "a" {
		t.Fatalf("grant %q, want a", gr.tenant)
	}
	gr.release()
	relB()
	wg.Wait()
}

// TestGateWaiterGivesUp: a waiter whose context ends returns its error, holds
// nothing, and its turn passes to the next waiter.
func TestGateWaiterGivesUp(t *testing.T) {
	g := newGate(1, []tenancy.Tenant{{Name: "a"}, {Name: "b"}})
	first := mustAcquire(t, g, "a")
	ctx, cancel := context.WithCancel(context.Background())
	quitter, qwg := queueWaiters(t, g, ctx, []string{"b"})
	cancel()
	if gr := <-quitter; !strings.Contains(gr.tenant, context.Canceled.Error()) {
		t.Fatalf("gave-up waiter: %q, want the context's error", gr.tenant)
	}
	qwg.Wait()
	grants, wg := queueWaiters2(t, g, "a")
	first()
	gr := <-grants
	if gr.tenant != "a" {
		t.Fatalf("grant %q, want a", gr.tenant)
	}
	gr.release()
	wg.Wait()
	if n := g.inFlight("a") + g.inFlight("b"); n != 0 {
		t.Fatalf("%d workers still held", n)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queued) != 0 || len(g.waiting) != 0 {
		t.Fatalf("left queued %v, waiting %v", g.queued, g.waiting)
	}
}

// queueWaiters2 queues one more waiter behind those already queued (which
// may include given-up ones).
func queueWaiters2(t *testing.T, g *gate, tenant string) (<-chan grant, *sync.WaitGroup) {
	t.Helper()
	g.mu.Lock()
	before := 0
	for _, q := range g.queued {
		before += q
	}
	g.mu.Unlock()
	out := make(chan grant, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rel, err := g.acquire(context.Background(), tenant)
		if err != nil {
			out <- grant{tenant: "error: " + err.Error()}
			return
		}
		out <- grant{tenant, rel}
	}()
	eventually(t, "waiter queued", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		n := 0
		for _, q := range g.queued {
			n += q
		}
		return n == before+1
	})
	return out, &wg
}

// TestGateUnknownTenant: an unknown tenant is refused at once.
func TestGateUnknownTenant(t *testing.T) {
	g := newGate(1, []tenancy.Tenant{{Name: "a"}})
	if _, err := g.acquire(context.Background(), "nobody"); !errors.Is(err, tenancy.ErrUnknownTenant) {
		t.Fatalf("acquire: %v, want ErrUnknownTenant", err)
	}
}
