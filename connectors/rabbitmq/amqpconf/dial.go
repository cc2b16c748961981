// Package amqpconf builds RabbitMQ connections for the RabbitMQ source
// (connectors/rabbitmq) and sink (sinks/rabbitmq): URL and TLS settings,
// heartbeats, a dial that honours its context, and the classification of
// errors into permanent and transient ones.
package amqpconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/pipelines"
)

// ErrConfig is wrapped by every configuration error: retrying cannot fix it.
var ErrConfig = errors.New("rabbitmq: invalid configuration")

// handshakeTimeout bounds the TCP connect plus the TLS and AMQP handshakes.
const handshakeTimeout = 30 * time.Second

// Dialer opens AMQP connections to one broker. It is immutable and safe
// for concurrent use.
type Dialer struct {
	url       string
	uri       amqp.URI
	heartbeat time.Duration
	tls       *tls.Config // nil: plain, or the library's default for amqps
	name      string
}

// New checks the URL and TLS settings. name becomes the connection name
// shown by the broker's management tools. Errors wrap ErrConfig and never
// quote the URL (it may hold a password).
func New(rawURL string, heartbeat time.Duration, t *pipelines.TLSSpec, name string) (Dialer, error) {
	uri, err := amqp.ParseURI(rawURL)
	if err != nil {
		return Dialer{}, fmt.Errorf("%w: url: not a valid amqp:// or amqps:// URL", ErrConfig)
	}
	d := Dialer{url: rawURL, uri: uri, heartbeat: heartbeat, name: name}
	if t != nil && (t.Enabled || t.CAFile != "" || t.CertFile != "") {
		if d.tls, err = tlsConfig(t, uri.Host); err != nil {
			return Dialer{}, err
		}
	}
	return d, nil
}

// Endpoint returns "host:port" and the virtual host, for CloudEvents
// sources and logs (without credentials).
func (d Dialer) Endpoint() (hostPort, vhost string) {
	vhost = d.uri.Vhost
	if vhost == "" {
		vhost = "/"
	}
	return net.JoinHostPort(d.uri.Host, strconv.Itoa(d.uri.Port)), vhost
}

// SourceURI is the CloudEvents source of messages read from queue:
// "amqp://host:port/<vhost>/<queue>", path segments escaped (the default
// vhost "/" is "%2F").
func (d Dialer) SourceURI(queue string) string {
	hp, vhost := d.Endpoint()
	return "amqp://" + hp + "/" + url.PathEscape(vhost) + "/" + url.PathEscape(queue)
}

// Dial opens a connection. The TCP connect and the handshakes end when ctx
// does (and after 30 s at most); once Dial has returned, ctx no longer
// matters to the connection.
func (d Dialer) Dial(ctx context.Context) (*amqp.Connection, error) {
	var (
		mu   sync.Mutex
		conn net.Conn // the TCP connection, once dialled
	)
	amqps := d.uri.Scheme == "amqps"
	cfg := amqp.Config{
		Heartbeat:  d.heartbeat,
		Properties: amqp.NewConnectionProperties(),
		Dial: func(network, addr string) (net.Conn, error) {
			nd := net.Dialer{Timeout: handshakeTimeout}
			c, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			deadline := time.Now().Add(handshakeTimeout)
			if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
				deadline = dl
			}
			// Cleared by the library once the AMQP handshake is done.
			if err := c.SetDeadline(deadline); err != nil {
				c.Close()
				return nil, err
			}
			mu.Lock()
			conn = c
			cancelled := ctx.Err() != nil
			mu.Unlock()
			if cancelled {
				// ctx ended before conn was set, so the AfterFunc below
				// had no connection to expire.
				c.Close()
				return nil, ctx.Err()
			}
			if d.tls != nil && !amqps {
				// The library only speaks TLS for amqps:// URLs; tls.enabled
				// with amqp:// gets it here.
				return tls.Client(c, d.tls), nil
			}
			return c, nil
		},
	}
	if amqps {
		cfg.TLSClientConfig = d.tls // nil: the library's default
	}
	if d.name != "" {
		cfg.Properties["connection_name"] = d.name
	}
	// A cancelled ctx cuts the handshake short by expiring its deadline.
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if conn != nil {
			_ = conn.SetDeadline(time.Unix(1, 0))
		}
	})
	c, err := amqp.DialConfig(d.url, cfg)
	if !stop() && err == nil {
		// ctx ended while the handshake finished: the connection may carry
		// an expired deadline, so it is not used.
		_ = c.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return nil, err
	}
	return c, nil
}

// IsPermanent reports errors that retrying cannot fix: configuration,
// refused credentials or vhost access, a server certificate that does not
// verify (another CA, another name: the trusted CAs are read once), a
// declaration that conflicts with an existing queue or exchange, protocol
// violations.
func IsPermanent(err error) bool {
	var cve *tls.CertificateVerificationError
	if errors.Is(err, ErrConfig) || errors.As(err, &cve) {
		return true
	}
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Code {
	case amqp.AccessRefused, amqp.NotAllowed, amqp.PreconditionFailed,
		amqp.SyntaxError, amqp.CommandInvalid, amqp.NotImplemented:
		return true
	}
	return false
}

// tlsConfig builds the client TLS configuration. host is the default
// server name.
func tlsConfig(s *pipelines.TLSSpec, host string) (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         host,
		InsecureSkipVerify: s.InsecureSkipVerify, //nolint:gosec // documented as tests only
	}
	if s.ServerName != "" {
		c.ServerName = s.ServerName
	}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: tls.caFile: %v", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: tls.caFile %s: no PEM certificate", ErrConfig, s.CAFile)
		}
		c.RootCAs = pool
	}
	if s.CertFile != "" || s.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: tls.certFile/keyFile: %v", ErrConfig, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
