package amqpconf

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/pipelines"
)

func TestSourceURI(t *testing.T) {
	for _, tt := range []struct{ url, queue, want string }{
		{"amqp://guest:guest@127.0.0.1:5672/", "orders", "amqp://127.0.0.1:5672/%2F/orders"},
		{"amqp://u:p@rabbit/prod", "a b", "amqp://rabbit:5672/prod/a%20b"},
		{"amqps://rabbit/", "q", "amqp://rabbit:5671/%2F/q"},
	} {
		d, err := New(tt.url, time.Second, nil, "")
		if err != nil {
			t.Fatalf("New(%s): %v", tt.url, err)
		}
		if got := d.SourceURI(tt.queue); got != tt.want {
			t.Errorf("SourceURI(%s, %s) = %q, want %q", tt.url, tt.queue, got, tt.want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New("http://u:secret@h/", time.Second, nil, ""); !errors.Is(err, ErrConfig) || strings.Contains(err.Error(), "secret") {
		t.Errorf("bad scheme: %v", err)
	}
	for _, tls := range []*pipelines.TLSSpec{
		{Enabled: true, CAFile: "/nonexistent/ca.pem"},
		{Enabled: true, CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/c.key"},
	} {
		if _, err := New("amqps://h/", time.Second, tls, ""); !errors.Is(err, ErrConfig) {
			t.Errorf("TLS %+v: %v, want ErrConfig", tls, err)
		}
	}
	d, err := New("amqp://h/", time.Second, &pipelines.TLSSpec{Enabled: true, ServerName: "rabbit.internal"}, "")
	if err != nil || d.tls == nil || d.tls.ServerName != "rabbit.internal" {
		t.Errorf("TLS with amqp://: %v %+v", err, d.tls)
	}
}

func TestIsPermanent(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{amqp.ErrCredentials, true},
		{amqp.ErrVhost, true},
		{&amqp.Error{Code: amqp.PreconditionFailed}, true},
		{&amqp.Error{Code: amqp.NotFound}, false},
		{&amqp.Error{Code: amqp.ConnectionForced}, false},
		{ErrConfig, true},
		{errors.New("connection refused"), false},
	} {
		if got := IsPermanent(tt.err); got != tt.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestDialHonoursContext: a server that accepts TCP but never answers the
// AMQP handshake does not hold Dial beyond its context.
func TestDialHonoursContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	d, err := New("amqp://guest:guest@"+l.Addr().String()+"/", time.Second, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := d.Dial(ctx); errc <- err }()
	c := <-accepted
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Dial = %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Dial did not return after its context was cancelled")
	}
	if c != nil {
		c.Close()
	}
}
