package pipelines

import (
	"math"
)

// KindTenant is the kind of Tenant documents.
const KindTenant = "Tenant"

// Tenant defaults and limits.
const (
	DefaultTenantWeight = 1
	// MinAPIKeyLength is the shortest API key accepted, in bytes: shorter
	// keys can be guessed.
	MinAPIKeyLength = 16
)

// Tenant is one `kind: Tenant` document: an owner of pipelines, functions
// and buses, with API keys, a fair-share weight and quotas. A configuration
// without Tenant documents is single-tenant: every document belongs to the
// tenant it names (default "default"). With at least one Tenant document,
// every Pipeline, Function and Bus must belong to a defined tenant.
type Tenant struct {
	// APIVersion must be "sluice.dev/v1".
	APIVersion string `yaml:"apiVersion" json:"apiVersion" jsonschema:"enum=sluice.dev/v1"`
	// Kind must be "Tenant".
	Kind string `yaml:"kind" json:"kind" jsonschema:"enum=Tenant"`
	// Metadata names the tenant.
	Metadata TenantMetadata `yaml:"metadata" json:"metadata"`
	// Spec holds the tenant's keys, weight and quotas.
	Spec TenantSpec `yaml:"spec" json:"spec"`

	// Pos is where the document starts (not part of the YAML).
	Pos Position `yaml:"-" json:"-"`
}

// TenantMetadata names a tenant.
type TenantMetadata struct {
	// Name is unique among tenants: a DNS label (lower-case letters, digits
	// and '-', at most 63 characters). Documents name it in metadata.tenant.
	Name string `yaml:"name" json:"name"`
	// Labels are free-form key/value pairs.
	Labels map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
}

// TenantSpec is the body of a Tenant.
type TenantSpec struct {
	// APIKeys authenticate the tenant's API requests (the invoke API, the
	// task API); several allow rotation. Secrets of at least 16 characters,
	// printable ASCII without spaces; no two keys of any tenants may be
	// equal.
	APIKeys []Secret `yaml:"apiKeys" json:"apiKeys" jsonschema:"minItems=1"`
	// Weight is the tenant's share of the worker budget relative to other
	// busy tenants (weighted fair share); at least 1.
	Weight int `yaml:"weight,omitempty" json:"weight,omitempty" jsonschema:"minimum=0"`
	// Quotas bound what the tenant may submit and run; each left out or 0
	// is unlimited.
	Quotas TenantQuotas `yaml:"quotas,omitempty" json:"quotas,omitempty"`
	// Pool, when set, puts the tenant's tasks in a queue shared with the
	// other tenants of the same pool instead of a queue of its own (for many
	// small tenants). A DNS label.
	Pool string `yaml:"pool,omitempty" json:"pool,omitempty"`
}

// TenantQuotas are per-tenant limits. Zero (or left out) means unlimited.
type TenantQuotas struct {
	// MaxConcurrency bounds the tenant's invocations in flight, over all of
	// its functions, pipelines and bus targets.
	MaxConcurrency int `yaml:"maxConcurrency,omitempty" json:"maxConcurrency,omitempty" jsonschema:"minimum=0"`
	// Rate bounds accepted invocations per second (token bucket); above it
	// the invoke API answers 429.
	Rate float64 `yaml:"rate,omitempty" json:"rate,omitempty" jsonschema:"minimum=0"`
	// Burst is the token bucket's size: invocations accepted at once after
	// an idle period. Needs rate; defaults to rate rounded up (at least 1).
	Burst int `yaml:"burst,omitempty" json:"burst,omitempty" jsonschema:"minimum=0"`
	// MaxQueueDepth bounds the tenant's tasks waiting in queues; above it
	// the invoke API answers 429.
	MaxQueueDepth int `yaml:"maxQueueDepth,omitempty" json:"maxQueueDepth,omitempty" jsonschema:"minimum=0"`
}

func (t *Tenant) setPos(pos Position) { t.Pos = pos }
func (t *Tenant) resolveFiles(string) {}
func (t *Tenant) addTo(cfg *Config)   { cfg.Tenants = append(cfg.Tenants, t) }
func (t *Tenant) id() string          { return t.Metadata.Name }
func (t *Tenant) tenant() string      { return "" }
func (t *Tenant) busRefs() []busRef   { return nil }

func (t *Tenant) applyDefaults() {
	setDefault(&t.APIVersion, APIVersion)
	setDefault(&t.Kind, KindTenant)
	s := &t.Spec
	setDefault(&s.Weight, DefaultTenantWeight)
	if q := &s.Quotas; q.Rate > 0 {
		setDefault(&q.Burst, max(1, int(math.Ceil(min(q.Rate, math.MaxInt32)))))
	}
}

func (t *Tenant) validate(v *validator) {
	if v.required("metadata.name", t.Metadata.Name) {
		v.dnsLabel("metadata.name", t.Metadata.Name)
	}
	if _, ok := t.Metadata.Labels[""]; ok {
		v.errorf("metadata.labels", "label keys must not be empty")
	}
	s := &t.Spec
	if v.requiredList("spec.apiKeys", len(s.APIKeys)) {
		for i, k := range s.APIKeys {
			validateAPIKey(v, indexPath("spec.apiKeys", i), k)
		}
	}
	v.atLeast("spec.weight", s.Weight, 1)
	q := s.Quotas
	v.atLeast("spec.quotas.maxConcurrency", q.MaxConcurrency, 0)
	if q.Rate < 0 || math.IsNaN(q.Rate) || math.IsInf(q.Rate, 0) {
		v.errorf("spec.quotas.rate", "must be a finite number at least 0, got %g", q.Rate)
	}
	v.atLeast("spec.quotas.burst", q.Burst, 0)
	if q.Burst > 0 && q.Rate == 0 {
		v.errorf("spec.quotas.burst", "burst needs rate")
	}
	v.atLeast("spec.quotas.maxQueueDepth", q.MaxQueueDepth, 0)
	if s.Pool != "" {
		v.dnsLabel("spec.pool", s.Pool)
	}
}

// validateAPIKey checks one key without ever printing it: keys travel in
// HTTP headers, so they are printable ASCII without spaces.
func validateAPIKey(v *validator, path string, k Secret) {
	key := k.Value()
	switch {
	case key == "":
		if k.IsZero() {
			v.required(path, "")
		} else {
			v.errorf(path, "must not be empty")
		}
		return
	case len(key) < MinAPIKeyLength:
		v.errorf(path, "API key too short: want at least %d characters", MinAPIKeyLength)
	}
	for _, c := range []byte(key) {
		if c <= ' ' || c > '~' {
			v.errorf(path, "API key contains a space, a control or a non-ASCII character")
			return
		}
	}
}
