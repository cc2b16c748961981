package rabbitmq

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpconf"
	"github.com/sluicehq/sluice/connectors/rabbitmq/rabbittest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
)

// TestTLSConsume: the source consumes over RabbitMQ's TLS listener with the
// server certificate verified against the test CA, both with an amqps://
// URL and with an amqp:// URL plus tls.enabled; every message is delivered
// and, once acked, gone from the queue.
func TestTLSConsume(t *testing.T) {
	plain, tlsURL, ca := testenv.RabbitURL(t), testenv.RabbitTLSURL(t), testenv.TLSCAFile(t)
	for name, url := range map[string]string{
		"amqps":            tlsURL,
		"amqp+tls.enabled": strings.Replace(tlsURL, "amqps://", "amqp://", 1),
	} {
		t.Run(name, func(t *testing.T) {
			q := testenv.UniqueName(t, "tls")
			rabbittest.DeclareQueue(t, plain, q, nil)
			rabbittest.DeleteAtCleanup(t, plain, q)
			evs := makeEvents(t, q, 5)
			rabbittest.PublishEvents(t, plain, "", q, evs)

			spec := testSpec(url, q)
			spec.TLS = &pipelines.TLSSpec{Enabled: true, CAFile: ca}
			src := newTestSource(t, spec, connectors.Options{Window: 10, Name: testenv.UniqueName(t, "p")})
			connect(t, src)
			for i, want := range evs {
				msg, ack := readOne(t, src)
				if msg.Event.ID() != want.ID() {
					t.Fatalf("message %d: got %s, want %s", i, msg.Event.ID(), want.ID())
				}
				if err := ack(context.Background(), nil); err != nil {
					t.Fatalf("ack: %v", err)
				}
			}
			waitUntil(t, "the acked messages to leave the queue", func() bool { return rabbittest.Depth(t, plain, q) == 0 })
		})
	}
}

// TestTLSUntrustedServer: a server certificate that does not verify (issued
// by another CA, or for another name) fails Connect at once with the
// verification error, as a permanent error (the trusted CAs are read once,
// so retrying cannot help), and Health reports it.
func TestTLSUntrustedServer(t *testing.T) {
	plain, tlsURL, ca := testenv.RabbitURL(t), testenv.RabbitTLSURL(t), testenv.TLSCAFile(t)
	q := testenv.UniqueName(t, "tls-refused")
	rabbittest.DeclareQueue(t, plain, q, nil)
	rabbittest.DeleteAtCleanup(t, plain, q)
	otherCA := testenv.OtherCAFile(t)
	for name, tc := range map[string]struct {
		url  string
		tls  pipelines.TLSSpec
		want string
	}{
		"other CA":                   {tlsURL, pipelines.TLSSpec{Enabled: true, CAFile: otherCA}, "certificate signed by unknown authority"},
		"other CA, amqp+tls.enabled": {strings.Replace(tlsURL, "amqps://", "amqp://", 1), pipelines.TLSSpec{Enabled: true, CAFile: otherCA}, "certificate signed by unknown authority"},
		"wrong name":                 {tlsURL, pipelines.TLSSpec{Enabled: true, CAFile: ca, ServerName: "rabbit.example"}, "not rabbit.example"},
	} {
		t.Run(name, func(t *testing.T) {
			spec := testSpec(tc.url, q)
			spec.TLS = &tc.tls
			src := newTestSource(t, spec, connectors.Options{Window: 10, Name: testenv.UniqueName(t, "p")})
			defer func() { _ = src.Close(context.Background()) }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // only against a hang
			defer cancel()
			err := src.Connect(ctx)
			if err == nil || ctx.Err() != nil || !amqpconf.IsPermanent(err) ||
				!strings.Contains(err.Error(), "tls: failed to verify certificate") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Connect = %v, want a permanent certificate verification error (%q)", err, tc.want)
			}
			if h := src.Health(); h == nil || !strings.Contains(h.Error(), tc.want) {
				t.Errorf("Health = %v, want the verification error", h)
			}
			t.Logf("Connect: %v", err)
		})
	}
}
