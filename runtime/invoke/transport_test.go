package invoke

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/pipelines"
)

// TestGuardRanges checks the address predicate only; nothing is dialled.
func TestGuardRanges(t *testing.T) {
	g := addressGuard{deny: deniedPrefixes(), allow: []netip.Prefix{netip.MustParsePrefix("10.1.2.0/24")}}
	cases := map[string]bool{
		"127.0.0.1":        false,
		"::1":              false,
		"10.0.0.5":         false,
		"10.1.2.3":         true, // allow list wins
		"172.16.0.1":       false,
		"192.168.1.1":      false,
		"169.254.169.254":  false, // cloud metadata
		"fe80::1%eth0":     false,
		"fd00::1":          false,
		"0.0.0.0":          false,
		"::":               false,
		"100.64.0.1":       false,
		"224.0.0.1":        false,
		"255.255.255.255":  false,
		"::ffff:127.0.0.1": false, // IPv4-mapped loopback
		"::ffff:10.1.2.9":  true,
		"64:ff9b::a00:1":   false,
		"8.8.8.8":          true,
		"2606:4700::1111":  true,
		"93.184.216.34":    true,
	}
	for ip, want := range cases {
		if got := g.allowed(netip.MustParseAddr(ip)); got != want {
			t.Errorf("allowed(%s) = %v, want %v", ip, got, want)
		}
	}
	if err := g.check("not-an-address"); !errors.Is(err, ErrForbiddenAddress) {
		t.Errorf("check(garbage) = %v, want ErrForbiddenAddress", err)
	}
}

func TestGuardedTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	in := []cloudevents.Event{cetest.New(t, "e", 1)}
	cases := []struct {
		name  string
		allow []netip.Prefix
		ok    bool
	}{
		{"loopback refused", nil, false},
		{"other range allowed only", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, false},
		{"loopback allowed", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewGuardedTransport(tc.allow)
			defer tr.CloseIdleConnections()
			f, err := NewHTTP(HTTPConfig{URL: srv.URL, Mode: pipelines.ModeBinary, Timeout: 5 * time.Second,
				Client: &http.Client{Transport: tr}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.Invoke(context.Background(), in)
			if tc.ok && err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			var ie *Error
			if !tc.ok && (!errors.Is(err, ErrForbiddenAddress) || !errors.As(err, &ie) || ie.Status != 0) {
				t.Fatalf("Invoke = %v, want *Error wrapping ErrForbiddenAddress", err)
			}
		})
	}
}
