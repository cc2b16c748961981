// Package tenancy holds Sluice's multi-tenancy primitives (DESIGN §7):
// tenants and their API keys (Authenticator), per-tenant quotas on
// submissions and concurrency (Limits), weighted fair sharing of the worker
// budget (DRR, Shares), and the queue placement policy that isolates noisy
// functions in dedicated queues (Placement).
//
// Everything here is in-memory policy with no I/O; the invoke API and the
// dispatcher (and runtime/queue) act on its answers. docs/queues.md
// describes the policies and their thresholds.
package tenancy

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
)

// Tenant is an owner of functions and pipelines, as configured by a
// `kind: Tenant` document.
type Tenant struct {
	// Name identifies the tenant: a DNS label (lowercase letters, digits
	// and '-', at most 63), so that it can name queues and metric labels.
	Name string
	// Weight is the tenant's relative share of the worker budget when
	// tenants compete (fair share). Zero means 1.
	Weight int
	// Quotas bound what the tenant may submit and run.
	Quotas Quotas
	// Keys are the SHA-256 hashes of the tenant's API keys (HashKey). The
	// keys themselves are never kept.
	Keys []KeyHash
	// Pool, when set, puts the tenant's tasks in a queue shared with the
	// other small tenants of the same pool instead of a queue of its own
	// (see Placement). A DNS label, like Name.
	Pool string
}

// Quotas are per-tenant limits. Zero means unlimited for each.
type Quotas struct {
	// MaxConcurrency bounds the tenant's invocations in flight.
	MaxConcurrency int
	// Rate bounds submissions per second (token bucket).
	Rate float64
	// Burst is the token bucket's size: submissions accepted at once after
	// an idle period. Zero means max(1, ceil(Rate)).
	Burst int
	// MaxQueueDepth bounds the tenant's tasks waiting in queues.
	MaxQueueDepth int
}

// KeyHash is the SHA-256 digest of an API key.
type KeyHash [sha256.Size]byte

// HashKey hashes an API key for Tenant.Keys.
func HashKey(key string) KeyHash { return sha256.Sum256([]byte(key)) }

// ErrInvalidTenant is wrapped by Validate's errors.
var ErrInvalidTenant = errors.New("invalid tenant")

// Validate checks the tenant's configuration.
func (t Tenant) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidTenant, t.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case !validName(t.Name):
		return bad("name must be a DNS label: lowercase letters, digits and '-', at most 63")
	case t.Weight < 0:
		return bad("weight %d < 0", t.Weight)
	case t.Quotas.MaxConcurrency < 0:
		return bad("maxConcurrency %d < 0", t.Quotas.MaxConcurrency)
	case t.Quotas.Rate < 0 || math.IsNaN(t.Quotas.Rate) || math.IsInf(t.Quotas.Rate, 0):
		return bad("rate %v must be a finite number ≥ 0", t.Quotas.Rate)
	case t.Quotas.Burst < 0:
		return bad("burst %d < 0", t.Quotas.Burst)
	case t.Quotas.MaxQueueDepth < 0:
		return bad("maxQueueDepth %d < 0", t.Quotas.MaxQueueDepth)
	case t.Pool != "" && !validName(t.Pool):
		return bad("pool %q must be a DNS label", t.Pool)
	}
	return nil
}

// weight is the effective fair-share weight.
func (t Tenant) weight() int {
	if t.Weight <= 0 {
		return 1
	}
	return t.Weight
}

// validName: a DNS label.
func validName(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ErrUnauthenticated: the API key is missing or matches no tenant. The
// invoke API answers 401 without saying which.
var ErrUnauthenticated = errors.New("unauthenticated")

// Authenticator maps API keys to tenants. It is immutable and safe for
// concurrent use; on a configuration reload build a new one and swap it in
// (an atomic.Pointer), so requests never see a half-updated key set.
type Authenticator struct {
	keys    []KeyHash
	tenants []string // tenants[i] owns keys[i]
}

// NewAuthenticator indexes every tenant's keys. It refuses invalid tenants,
// duplicate tenant names and a key shared by two tenants (which would make
// the owner of a request ambiguous).
func NewAuthenticator(tenants []Tenant) (*Authenticator, error) {
	a := &Authenticator{}
	names := make(map[string]bool, len(tenants))
	owner := make(map[KeyHash]string)
	for _, t := range tenants {
		if err := t.Validate(); err != nil {
			return nil, err
		}
		if names[t.Name] {
			return nil, fmt.Errorf("%w %q: defined twice", ErrInvalidTenant, t.Name)
		}
		names[t.Name] = true
		for _, k := range t.Keys {
			if o, dup := owner[k]; dup {
				// Never print the key or its hash.
				return nil, fmt.Errorf("%w %q: an API key is also a key of tenant %q", ErrInvalidTenant, t.Name, o)
			}
			owner[k] = t.Name
			a.keys = append(a.keys, k)
			a.tenants = append(a.tenants, t.Name)
		}
	}
	return a, nil
}

// Authenticate returns the tenant owning key, or ErrUnauthenticated.
//
// The key is hashed and compared with every stored hash in constant time,
// without stopping at a match, so the time taken depends on the number of
// keys only — not on the key, nor on whether or where it matched.
func (a *Authenticator) Authenticate(key string) (string, error) {
	if key == "" {
		return "", ErrUnauthenticated
	}
	h := HashKey(key)
	match := -1
	for i := range a.keys {
		eq := subtle.ConstantTimeCompare(h[:], a.keys[i][:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return "", ErrUnauthenticated
	}
	return a.tenants[match], nil
}
