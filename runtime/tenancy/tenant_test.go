package tenancy

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		t    Tenant
		ok   bool
	}{
		{"minimal", Tenant{Name: "acme"}, true},
		{"full", Tenant{Name: "acme-2", Weight: 3, Pool: "small", Quotas: Quotas{MaxConcurrency: 5, Rate: 2.5, Burst: 10, MaxQueueDepth: 100}}, true},
		{"empty name", Tenant{}, false},
		{"upper case", Tenant{Name: "Acme"}, false},
		{"dot", Tenant{Name: "a.b"}, false},
		{"leading dash", Tenant{Name: "-a"}, false},
		{"too long", Tenant{Name: strings.Repeat("a", 64)}, false},
		{"negative weight", Tenant{Name: "a", Weight: -1}, false},
		{"negative concurrency", Tenant{Name: "a", Quotas: Quotas{MaxConcurrency: -1}}, false},
		{"negative rate", Tenant{Name: "a", Quotas: Quotas{Rate: -1}}, false},
		{"NaN rate", Tenant{Name: "a", Quotas: Quotas{Rate: math.NaN()}}, false},
		{"infinite rate", Tenant{Name: "a", Quotas: Quotas{Rate: math.Inf(1)}}, false},
		{"negative burst", Tenant{Name: "a", Quotas: Quotas{Burst: -1}}, false},
		{"negative depth", Tenant{Name: "a", Quotas: Quotas{MaxQueueDepth: -1}}, false},
		{"bad pool", Tenant{Name: "a", Pool: "x.y"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.t.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidTenant) {
				t.Fatalf("error %v does not wrap ErrInvalidTenant", err)
			}
		})
	}
}

func TestAuthenticator(t *testing.T) {
	a, err := NewAuthenticator([]Tenant{
		{Name: "acme", Keys: []KeyHash{HashKey("acme-key-1"), HashKey("acme-key-2")}},
		{Name: "globex", Keys: []KeyHash{HashKey("globex-key")}},
		{Name: "keyless"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key, tenant string
	}{
		{"acme-key-1", "acme"},
		{"acme-key-2", "acme"},
		{"globex-key", "globex"},
		{"acme-key-3", ""},
		{"ACME-KEY-1", ""},
		{"", ""},
		{"acme-key-1 ", ""},
	}
	for _, tc := range tests {
		got, err := a.Authenticate(tc.key)
		if tc.tenant == "" {
			if !errors.Is(err, ErrUnauthenticated) || got != "" {
				t.Errorf("Authenticate(%q) = %q, %v; want ErrUnauthenticated", tc.key, got, err)
			}
			continue
		}
		if err != nil || got != tc.tenant {
			t.Errorf("Authenticate(%q) = %q, %v; want %q", tc.key, got, err, tc.tenant)
		}
	}

	empty, err := NewAuthenticator(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := empty.Authenticate("anything"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("no tenants: %v", err)
	}
}

func TestAuthenticatorRefusesAmbiguity(t *testing.T) {
	const secret = "shared-secret-key"
	_, err := NewAuthenticator([]Tenant{
		{Name: "a", Keys: []KeyHash{HashKey(secret)}},
		{Name: "b", Keys: []KeyHash{HashKey(secret)}},
	})
	if !errors.Is(err, ErrInvalidTenant) {
		t.Fatalf("shared key: %v, want ErrInvalidTenant", err)
	}
	h := HashKey(secret)
	for _, leak := range []string{secret, string(h[:])} {
		if strings.Contains(err.Error(), leak) {
			t.Fatalf("error message reveals the key: %v", err)
		}
	}
	if _, err := NewAuthenticator([]Tenant{{Name: "a"}, {Name: "a"}}); !errors.Is(err, ErrInvalidTenant) {
		t.Fatalf("duplicate tenant: %v", err)
	}
	if _, err := NewAuthenticator([]Tenant{{Name: "Bad"}}); !errors.Is(err, ErrInvalidTenant) {
		t.Fatalf("invalid tenant: %v", err)
	}
}
