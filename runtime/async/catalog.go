package async

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/tenancy"
)

// fnKey names a function: names are unique per tenant.
type fnKey struct{ tenant, name string }

func (k fnKey) String() string { return k.tenant + "/" + k.name }

// function is one configured Function and its runtime state.
type function struct {
	key      fnKey
	spec     *pipelines.Function
	maxBytes int64
	maxAge   time.Duration
	// dedup is how long an invocation's idempotency key is held (the
	// function's dedupWindow), passed to the store with each task.
	dedup time.Duration
	// paused mirrors the pause flag kept in the task store (pause.go); the
	// store's task states are the authority, this is the fast path that
	// keeps a paused function's messages away from its pipeline.
	paused atomic.Bool
	// rt is the function's pipeline (set by the dispatcher).
	rt *fnRuntime
}

// tenantsOf converts Tenant documents into tenancy's form: API keys are
// kept only as hashes.
func tenantsOf(docs []*pipelines.Tenant) []tenancy.Tenant {
	out := make([]tenancy.Tenant, 0, len(docs))
	for _, d := range docs {
		t := tenancy.Tenant{
			Name:   d.Metadata.Name,
			Weight: d.Spec.Weight,
			Pool:   d.Spec.Pool,
			Quotas: tenancy.Quotas{
				MaxConcurrency: d.Spec.Quotas.MaxConcurrency,
				Rate:           d.Spec.Quotas.Rate,
				Burst:          d.Spec.Quotas.Burst,
				MaxQueueDepth:  d.Spec.Quotas.MaxQueueDepth,
			},
		}
		for _, k := range d.Spec.APIKeys {
			t.Keys = append(t.Keys, tenancy.HashKey(k.Value()))
		}
		out = append(out, t)
	}
	return out
}

// catalogOf indexes the functions. Without Tenant documents (a
// single-tenant configuration) the functions' tenants are known by name
// only: they have no API keys, so the API refuses every request for them.
func catalogOf(tenantDocs []*pipelines.Tenant, fnDocs []*pipelines.Function) ([]tenancy.Tenant, map[fnKey]*function, error) {
	tenants := tenantsOf(tenantDocs)
	known := map[string]bool{}
	for _, t := range tenants {
		known[t.Name] = true
	}
	fns := make(map[fnKey]*function, len(fnDocs))
	for _, d := range fnDocs {
		k := fnKey{d.Metadata.Tenant, d.Metadata.Name}
		if k.tenant == "" {
			k.tenant = pipelines.DefaultTenant
		}
		if _, dup := fns[k]; dup {
			return nil, nil, fmt.Errorf("async: function %s defined twice", k)
		}
		if d.Spec.Mode == pipelines.ModeBatch {
			return nil, nil, fmt.Errorf("async: function %s: batch mode is not available for invocations", k)
		}
		if !known[k.tenant] {
			// A tenant without keys: its functions run, nobody can call them.
			tenants = append(tenants, tenancy.Tenant{Name: k.tenant})
			known[k.tenant] = true
		}
		fns[k] = &function{key: k, spec: d, maxBytes: int64(d.Spec.MaxRequestBytes), maxAge: d.Spec.Delivery.MaxEventAge.D(),
			dedup: d.Spec.DedupWindow.D()}
	}
	return tenants, fns, nil
}
