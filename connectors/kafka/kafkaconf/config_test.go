package kafkaconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"hash"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"

	"github.com/sluicehq/sluice/pipelines"
)

func brokersList() []string { return []string{"127.0.0.1:9092"} }

func TestNewDefaults(t *testing.T) {
	cfg, err := New(Common{Brokers: brokersList()})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Version != sarama.V4_0_0_0 {
		t.Errorf("Version = %v, want 4.0.0", cfg.Version)
	}
	if cfg.ClientID != DefaultClientID {
		t.Errorf("ClientID = %q", cfg.ClientID)
	}
	if cfg.Net.TLS.Enable || cfg.Net.SASL.Enable {
		t.Errorf("TLS or SASL enabled without configuration")
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    Common
	}{
		{"no brokers", Common{}},
		{"bad version", Common{Brokers: brokersList(), Version: "four"}},
		{"bad client id", Common{Brokers: brokersList(), ClientID: "a b"}},
		{"missing CA file", Common{Brokers: brokersList(), TLS: &pipelines.TLSSpec{CAFile: filepath.Join(dir, "nope.pem")}}},
		{"CA file without PEM", Common{Brokers: brokersList(), TLS: &pipelines.TLSSpec{CAFile: garbage}}},
		{"cert without key", Common{Brokers: brokersList(), TLS: &pipelines.TLSSpec{Enabled: true, CertFile: garbage}}},
		{"bad key pair", Common{Brokers: brokersList(), TLS: &pipelines.TLSSpec{Enabled: true, CertFile: garbage, KeyFile: garbage}}},
		{"unknown SASL mechanism", Common{Brokers: brokersList(), SASL: &pipelines.SASLSpec{Mechanism: "GSSAPI", Username: "u"}}},
		{"SASL without user", Common{Brokers: brokersList(), SASL: &pipelines.SASLSpec{Mechanism: "PLAIN"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.c)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}

func TestVersionAndClientID(t *testing.T) {
	cfg, err := New(Common{Brokers: brokersList(), Version: "3.6.0", ClientID: "billing-1"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Version != sarama.V3_6_0_0 || cfg.ClientID != "billing-1" {
		t.Errorf("Version = %v, ClientID = %q", cfg.Version, cfg.ClientID)
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	cfg, err := New(Common{Brokers: brokersList(), TLS: &pipelines.TLSSpec{
		Enabled: true, CAFile: certFile, CertFile: certFile, KeyFile: keyFile, ServerName: "kafka.internal",
	}})
	if err != nil {
		t.Fatal(err)
	}
	tc := cfg.Net.TLS.Config
	if !cfg.Net.TLS.Enable || tc == nil {
		t.Fatal("TLS not enabled")
	}
	if tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "kafka.internal" || tc.InsecureSkipVerify {
		t.Errorf("tls.Config = %+v", tc)
	}

	// insecureSkipVerify alone enables TLS only with enabled: true.
	cfg, err = New(Common{Brokers: brokersList(), TLS: &pipelines.TLSSpec{Enabled: true, InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Net.TLS.Config.InsecureSkipVerify {
		t.Errorf("InsecureSkipVerify not set")
	}
	cfg, err = New(Common{Brokers: brokersList(), TLS: &pipelines.TLSSpec{}})
	if err != nil || cfg.Net.TLS.Enable {
		t.Errorf("empty tls section enabled TLS (err %v)", err)
	}
}

func TestSASL(t *testing.T) {
	tests := []struct {
		mechanism string
		want      sarama.SASLMechanism
		hash      func() hash.Hash // nil for PLAIN
	}{
		{"", sarama.SASLTypePlaintext, nil},
		{"PLAIN", sarama.SASLTypePlaintext, nil},
		{"SCRAM-SHA-256", sarama.SASLTypeSCRAMSHA256, sha256.New},
		{"SCRAM-SHA-512", sarama.SASLTypeSCRAMSHA512, sha512.New},
	}
	for _, tc := range tests {
		t.Run(tc.mechanism, func(t *testing.T) {
			cfg, err := New(Common{Brokers: brokersList(), SASL: &pipelines.SASLSpec{
				Mechanism: tc.mechanism, Username: "alice", Password: pipelines.NewSecret("${env:PW}", "s3cret"),
			}})
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.Net.SASL
			if !s.Enable || s.Mechanism != tc.want || s.User != "alice" || s.Password != "s3cret" {
				t.Fatalf("SASL = enable %v mechanism %v user %q", s.Enable, s.Mechanism, s.User)
			}
			if tc.hash == nil {
				return
			}
			if s.SCRAMClientGeneratorFunc == nil {
				t.Fatal("no SCRAM client generator")
			}
			// Run a full SCRAM conversation against xdg-go's server.
			scramConversation(t, s.SCRAMClientGeneratorFunc(), tc.hash, "alice", "s3cret", true)
			scramConversation(t, s.SCRAMClientGeneratorFunc(), tc.hash, "alice", "wrong", false)
		})
	}
}

func scramConversation(t *testing.T, c sarama.SCRAMClient, h func() hash.Hash, user, password string, wantOK bool) {
	t.Helper()
	gen := scram.HashGeneratorFcn(h)
	stored, err := gen.NewClient("alice", "s3cret", "")
	if err != nil {
		t.Fatal(err)
	}
	creds := stored.GetStoredCredentials(scram.KeyFactors{Salt: "salty", Iters: 4096})
	server, err := gen.NewServer(func(string) (scram.StoredCredentials, error) { return creds, nil })
	if err != nil {
		t.Fatal(err)
	}
	sconv := server.NewConversation()
	if err := c.Begin(user, password, ""); err != nil {
		t.Fatal(err)
	}
	challenge := ""
	var ok bool
	for range 4 {
		resp, err := c.Step(challenge)
		if err != nil {
			ok = false
			break
		}
		if c.Done() {
			ok = sconv.Valid()
			break
		}
		challenge, err = sconv.Step(resp)
		if err != nil {
			ok = false
			break
		}
	}
	if ok != wantOK {
		t.Errorf("SCRAM with password %q: authenticated = %v, want %v", password, ok, wantOK)
	}
}

func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kafka.internal"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		DNSNames:              []string{"kafka.internal"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
