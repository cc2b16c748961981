package async

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tenancy"
)

const placementConfig = `
apiVersion: sluice.dev/v1
kind: Tenant
metadata: {name: acme}
spec: {apiKeys: ["` + keyAcme + `"]}
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: noisy, tenant: acme}
spec:
  url: {{.URL}}/noisy
  delivery: {concurrency: {initial: 1, min: 1, max: 1}}
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: quiet, tenant: acme}
spec:
  url: {{.URL}}/quiet
`

// TestPromotionAndReclaim: a slow function whose backlog grows in its
// tenant's queue, next to another function, is moved to a dedicated queue
// with its backlog; once idle, the dedicated queue is reclaimed. Every
// task runs once.
func TestPromotionAndReclaim(t *testing.T) {
	fn := newFnServer(t)
	// Once noisy is promoted its calls wait at the gate until the test has
	// seen the backlog in the dedicated queue: otherwise a slow Move on a
	// loaded machine races with the dedicated reader draining it.
	gate, gated := make(chan struct{}), atomic.Bool{}
	var openGate sync.Once
	t.Cleanup(func() { openGate.Do(func() { close(gate) }) })
	fn.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/noisy" {
			if gated.Load() {
				<-gate
			}
			time.Sleep(100 * time.Millisecond)
		}
		answer(w, r, nil)
	})
	e := startEnv(t, fn, envOpts{yaml: placementConfig, tweak: func(c *Config) {
		// Readers hold few messages, so that a backlog stays in the queue
		// where Move can reach it.
		c.QueueWindow = 4
		c.PlacementInterval = 100 * time.Millisecond
		c.Placement = tenancy.PlacementConfig{
			Window: 2 * time.Second, Buckets: 4, MinSamples: 3, SlowLatency: 50 * time.Millisecond,
			MinLag: 3, PromoteAfter: time.Millisecond, ReclaimAfter: time.Second, Cooldown: time.Hour,
		}
	}})
	ctx := context.Background()
	const dedicated = "f.acme.noisy"
	queues := func() []string {
		qs, err := e.q.Queues(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return qs
	}
	var ids []string
	submit := func(fn string) { ids = append(ids, e.accept(keyAcme, fn, `{}`)) }
	for range 40 {
		submit("noisy")
	}
	// Keep the backlog growing (about twice what noisy drains) with
	// neighbours, until the policy promotes noisy.
	deadline := time.Now().Add(waitFor)
	for i := 0; !slices.Contains(queues(), dedicated); i++ {
		if time.Now().After(deadline) {
			t.Fatal("noisy was never promoted")
		}
		submit("noisy")
		if i%4 == 0 {
			submit("quiet")
		}
		time.Sleep(50 * time.Millisecond)
	}
	gated.Store(true)
	// Its backlog follows it: far more than the shared reader's window
	// (what the reader holds stays and finishes there).
	eventually(t, "the backlog to move", func() bool { return e.depth(dedicated) >= 20 && e.depth("t.acme") <= 10 })
	openGate.Do(func() { close(gate) })
	for _, id := range ids {
		e.waitState(keyAcme, id, tasks.Succeeded)
		if n := fn.callsOf(id); n != 1 {
			t.Fatalf("task %s called %d times", id, n)
		}
	}
	eventually(t, "the dedicated queue to be reclaimed", func() bool { return !slices.Contains(queues(), dedicated) })
	for kind, want := range map[string]float64{"promote": 1, "reclaim": 1} {
		if got := metricValue(t, e.cfg.Metrics.Gatherer(), "sluice_task_queue_placements_total", map[string]string{"kind": kind, "tenant": "acme", "function": "noisy"}); got != want {
			t.Errorf("%s decisions: %v, want %v", kind, got, want)
		}
	}
	// New tasks go to the shared queue again.
	e.waitState(keyAcme, e.accept(keyAcme, "noisy", `{}`), tasks.Succeeded)
}

// metricValue reads one counter or gauge from g (0 if absent).
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
