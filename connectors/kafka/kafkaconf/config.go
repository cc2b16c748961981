// Package kafkaconf builds the sarama client configuration shared by the
// Kafka source (connectors/kafka) and sink (sinks/kafka): protocol version,
// client id, network timeouts, TLS and SASL (PLAIN, SCRAM-SHA-256/512).
package kafkaconf

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"os"
	"time"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"

	"github.com/sluicehq/sluice/pipelines"
)

// DefaultVersion is the Kafka protocol version spoken when none is
// configured. Kafka 4.x removed every request version older than those of
// Kafka 2.1 (KIP-896); sarama's own default (2.8) still works, but 4.0 lets
// sarama use the newest request versions it knows. sarama negotiates down to
// what each broker advertises (ApiVersions), so older clusters still work.
const DefaultVersion = "4.0.0"

// DefaultClientID is used when none is configured.
const DefaultClientID = "sluice"

// ErrConfig is wrapped by every error caused by the configuration itself
// (bad version, unreadable certificate, unknown SASL mechanism). It is
// permanent: retrying does not help.
var ErrConfig = errors.New("invalid kafka configuration")

// Common holds the connection settings of a source or a sink.
type Common struct {
	Brokers  []string
	ClientID string
	Version  string
	TLS      *pipelines.TLSSpec
	SASL     *pipelines.SASLSpec
}

// New returns a sarama configuration with the connection settings of c.
// Consumer and producer settings are left at sarama's defaults for the
// caller to adjust. Errors wrap ErrConfig.
func New(c Common) (*sarama.Config, error) {
	if len(c.Brokers) == 0 {
		return nil, fmt.Errorf("%w: brokers: at least one is required", ErrConfig)
	}
	cfg := sarama.NewConfig()

	version := c.Version
	if version == "" {
		version = DefaultVersion
	}
	v, err := sarama.ParseKafkaVersion(version)
	if err != nil {
		return nil, fmt.Errorf("%w: version %q: %v", ErrConfig, version, err)
	}
	cfg.Version = v

	cfg.ClientID = DefaultClientID
	if c.ClientID != "" {
		if !validClientID(c.ClientID) {
			return nil, fmt.Errorf("%w: clientID %q: only letters, digits, '.', '_' and '-' are allowed", ErrConfig, c.ClientID)
		}
		cfg.ClientID = c.ClientID
	}

	// A dead broker should be noticed well within a rebalance timeout;
	// sarama's 30 s dial timeout is too patient for reconnect loops.
	cfg.Net.DialTimeout = 10 * time.Second
	cfg.Metadata.Retry.Max = 3
	cfg.Metadata.Retry.Backoff = 250 * time.Millisecond

	if c.TLS != nil && (c.TLS.Enabled || c.TLS.CAFile != "" || c.TLS.CertFile != "") {
		tc, err := tlsConfig(c.TLS)
		if err != nil {
			return nil, err
		}
		cfg.Net.TLS.Enable = true
		cfg.Net.TLS.Config = tc
	}
	if c.SASL != nil {
		if err := sasl(cfg, c.SASL); err != nil {
			return nil, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return cfg, nil
}

func tlsConfig(s *pipelines.TLSSpec) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         s.ServerName,
		InsecureSkipVerify: s.InsecureSkipVerify, //nolint:gosec // explicit user choice, documented as unsafe
	}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: tls.caFile: %v", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: tls.caFile %s: no PEM certificate found", ErrConfig, s.CAFile)
		}
		tc.RootCAs = pool
	}
	switch {
	case s.CertFile != "" && s.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: tls.certFile/keyFile: %v", ErrConfig, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	case s.CertFile != "" || s.KeyFile != "":
		return nil, fmt.Errorf("%w: tls: certFile and keyFile must be given together", ErrConfig)
	}
	return tc, nil
}

func sasl(cfg *sarama.Config, s *pipelines.SASLSpec) error {
	if s.Username == "" {
		return fmt.Errorf("%w: sasl.username is required", ErrConfig)
	}
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.Handshake = true
	cfg.Net.SASL.User = s.Username
	cfg.Net.SASL.Password = s.Password.Value()
	switch s.Mechanism {
	case "", sarama.SASLTypePlaintext:
		cfg.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case sarama.SASLTypeSCRAMSHA256:
		cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha256.New} }
	case sarama.SASLTypeSCRAMSHA512:
		cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha512.New} }
	default:
		return fmt.Errorf("%w: sasl.mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", ErrConfig, s.Mechanism)
	}
	return nil
}

// scramClient adapts xdg-go/scram to sarama.SCRAMClient. sarama creates one
// per connection attempt and uses it from one goroutine.
type scramClient struct {
	hash func() hash.Hash
	conv *scram.ClientConversation
}

func (c *scramClient) Begin(user, password, authzID string) error {
	client, err := scram.HashGeneratorFcn(c.hash).NewClient(user, password, authzID)
	if err != nil {
		return fmt.Errorf("scram: %w", err)
	}
	c.conv = client.NewConversation()
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) {
	return c.conv.Step(challenge)
}

func (c *scramClient) Done() bool { return c.conv.Done() }

// validClientID mirrors sarama's rule for client ids.
func validClientID(id string) bool {
	for _, c := range id {
		ok := c == '.' || c == '_' || c == '-' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
		if !ok {
			return false
		}
	}
	return id != ""
}
