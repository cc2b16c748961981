package rabbitmq

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpconf"
	"github.com/sluicehq/sluice/connectors/rabbitmq/rabbittest"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks"
)

// TestTLSWrite: the sink publishes over RabbitMQ's TLS listener, the server
// certificate verified against the test CA, and every event arrives.
func TestTLSWrite(t *testing.T) {
	plain, tlsURL, ca := testenv.RabbitURL(t), testenv.RabbitTLSURL(t), testenv.TLSCAFile(t)
	q := testenv.UniqueName(t, "tls")
	rabbittest.DeclareQueue(t, plain, q, nil)
	rabbittest.DeleteAtCleanup(t, plain, q)
	s := newSink(t, pipelines.RabbitMQSink{
		URL: pipelines.NewSecret("", tlsURL), RoutingKey: q,
		TLS: &pipelines.TLSSpec{Enabled: true, CAFile: ca},
	})
	closeAtEnd(t, s)
	evs := make([]cloudevents.Event, 5)
	for i := range evs {
		evs[i] = cetest.New(t, fmt.Sprintf("%s-%d", q, i), map[string]int{"i": i})
	}
	if err := write(t, s, evs...); err != nil {
		t.Fatalf("Write over TLS: %v", err)
	}
	got := rabbittest.ReadEvents(t, plain, q, len(evs))
	for i := range evs {
		if got[i].ID() != evs[i].ID() {
			t.Fatalf("message %d: got %s, want %s", i, got[i].ID(), evs[i].ID())
		}
	}
}

// TestTLSUntrustedServer: with a CA that did not issue the server's
// certificate, Write fails with the verification error, as a permanent
// error (not ErrUnavailable, not a rejection of the events), and nothing is
// published.
func TestTLSUntrustedServer(t *testing.T) {
	plain, tlsURL := testenv.RabbitURL(t), testenv.RabbitTLSURL(t)
	q := testenv.UniqueName(t, "tls-refused")
	rabbittest.DeclareQueue(t, plain, q, nil)
	rabbittest.DeleteAtCleanup(t, plain, q)
	s := newSink(t, pipelines.RabbitMQSink{
		URL: pipelines.NewSecret("", tlsURL), RoutingKey: q,
		TLS: &pipelines.TLSSpec{Enabled: true, CAFile: testenv.OtherCAFile(t)},
	})
	closeAtEnd(t, s)
	err := write(t, s, cetest.New(t, q+"-0", nil))
	if err == nil || errors.Is(err, ErrUnavailable) || errors.Is(err, sinks.ErrRejected) || !amqpconf.IsPermanent(err) ||
		!strings.Contains(err.Error(), "tls: failed to verify certificate: x509: certificate signed by unknown authority") {
		t.Fatalf("Write = %v, want a permanent certificate verification error", err)
	}
	if n := rabbittest.Depth(t, plain, q); n != 0 {
		t.Errorf("queue holds %d messages, want 0", n)
	}
	t.Logf("Write: %v", err)
}
