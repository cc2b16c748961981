package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TLS endpoints of the test brokers. scripts/brokers.sh generates one test
// CA (in <brokers dir>/tls/ca.pem) and a server certificate it issued for
// 127.0.0.1 and localhost, used by every TLS listener it configures.
const (
	EnvRabbitTLSURL = "SLUICE_RABBITMQ_TLS_URL"
	EnvTLSCA        = "SLUICE_TLS_CA"
	// EnvBrokersDir is scripts/brokers.sh's state directory (default
	// <repo>/.brokers); the CA is looked up under it.
	EnvBrokersDir = "SLUICE_BROKERS_DIR"

	DefaultRabbitTLSURL = "amqps://guest:guest@127.0.0.1:5671/"
)

// TLSCAFile returns the path of the PEM file of the CA that issued the test
// brokers' certificates: $SLUICE_TLS_CA, else tls/ca.pem in
// $SLUICE_BROKERS_DIR or <repo>/.brokers. It fails the test if the file
// holds no certificate.
func TLSCAFile(t testing.TB) string {
	t.Helper()
	path, source := getenv(EnvTLSCA, "")
	if path == "" {
		dir, _ := getenv(EnvBrokersDir, filepath.Join(RepoRoot(t), ".brokers"))
		path, source = filepath.Join(dir, "tls", "ca.pem"), "default; set "+EnvTLSCA+" to override"
	}
	if _, err := caPool(path); err != nil {
		t.Fatalf("testenv: the test CA %s (%s): %v\n"+
			"scripts/brokers.sh generates it with the brokers: `scripts/brokers.sh up rabbitmq`.", path, source, err)
	}
	return path
}

// RabbitTLSURL returns the amqps:// URL of RabbitMQ's TLS listener. The
// first call in the process checks that the listener completes a TLS
// handshake whose certificate verifies against TLSCAFile for the URL's
// host, and then answers the AMQP protocol header.
func RabbitTLSURL(t testing.TB) string {
	t.Helper()
	raw, source := getenv(EnvRabbitTLSURL, DefaultRabbitTLSURL)
	if !strings.HasPrefix(raw, "amqps://") {
		t.Fatalf("testenv: %s=%q is not an amqps:// URL", EnvRabbitTLSURL, redact(raw))
	}
	addr, err := hostPort(raw, map[string]string{"amqps": "5671"})
	if err != nil {
		t.Fatalf("testenv: %s: %v", EnvRabbitTLSURL, err)
	}
	ca := TLSCAFile(t)
	err = checkOnce("rabbitmq-tls|"+addr+"|"+ca, func() error {
		pool, err := caPool(ca)
		if err != nil {
			return err
		}
		return amqpTLSGreeting(addr, pool, probeTimeout)
	})
	if err != nil {
		unreachable(t, "RabbitMQ's TLS listener", redact(raw), source, "rabbitmq", err)
	}
	return raw
}

// OtherCAFile writes a freshly generated CA certificate, one that issued
// none of the brokers' certificates, to a PEM file in t.TempDir() and returns
// its path: the "wrong CA" of TLS tests.
func OtherCAFile(t testing.TB) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Sluice test: an unrelated CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testenv: CA certificate: %v", err)
	}
	path := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return path
}

// caPool reads a PEM bundle into a certificate pool.
func caPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("no PEM certificate in %s", path)
	}
	return pool, nil
}

// amqpTLSGreeting is amqpGreeting over TLS, verifying the server's
// certificate against roots for the address's host.
func amqpTLSGreeting(addr string, roots *x509.CertPool, timeout time.Duration) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	c, err := dialDeadline(addr, timeout)
	if err != nil {
		return err
	}
	tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12})
	defer tc.Close()
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	return amqpGreetingOn(tc)
}
