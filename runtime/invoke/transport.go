package invoke

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// ErrForbiddenAddress is wrapped by dial errors of a guarded transport when
// the target resolved to an address it refuses (loopback, private,
// link-local, ...). It is a permanent failure: retrying will not help.
var ErrForbiddenAddress = errors.New("address not allowed")

// NewTransport returns an http.Transport tuned for many concurrent calls to
// a few hosts: keep-alive on, up to 1024 idle connections per host (so a
// high AIMD limit does not churn connections), bounded dial and TLS
// handshake times. The caller owns it and calls CloseIdleConnections when
// done with it.
func NewTransport() *http.Transport {
	return newTransport(&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second})
}

func newTransport(d *net.Dialer) *http.Transport {
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           0, // no global cap; per-host cap below
		MaxIdleConnsPerHost:    1024,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
}

// NewGuardedTransport is NewTransport that refuses to connect to loopback,
// private, link-local, multicast, unspecified and other special-purpose
// addresses unless they fall in one of the allow prefixes. The check runs
// on the resolved IP of every dial attempt, so DNS names that resolve (or
// re-resolve) to internal addresses are refused too. Proxies are disabled,
// since a proxy would dial on our behalf and bypass the check. A refused
// dial fails with an error wrapping ErrForbiddenAddress.
//
// It is meant for targets supplied by tenants of a multi-tenant service.
// Pipelines written by the operator are trusted and use NewTransport:
// functions usually run next to Sluice on loopback or a private network.
func NewGuardedTransport(allow []netip.Prefix) *http.Transport {
	g := addressGuard{allow: allow, deny: deniedPrefixes()}
	t := newTransport(&net.Dialer{
		Timeout:   5 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			return g.check(address)
		},
	})
	t.Proxy = nil
	return t
}

type addressGuard struct {
	allow []netip.Prefix
	deny  []netip.Prefix
}

// check is called with the resolved "ip:port" of each dial attempt.
func (g addressGuard) check(address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrForbiddenAddress, address, err)
	}
	if !g.allowed(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, ap.Addr())
	}
	return nil
}

func (g addressGuard) allowed(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	for _, p := range g.allow {
		if p.Contains(ip) {
			return true
		}
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() ||
		ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() {
		return false
	}
	for _, p := range g.deny {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// deniedPrefixes are special-purpose ranges not covered by netip's
// predicates that can still reach internal hosts.
func deniedPrefixes() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
		netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT
		netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
		netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
		netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
		netip.MustParsePrefix("64:ff9b::/96"),   // NAT64 (embeds IPv4)
		netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
		netip.MustParsePrefix("2002::/16"),      // 6to4 (embeds IPv4)
		netip.MustParsePrefix("2001::/32"),      // Teredo
		netip.MustParsePrefix("100::/64"),       // discard-only
	}
}
