package rabbitmq

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipelines"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func testSpec(url, queue string) pipelines.RabbitMQSource {
	return pipelines.RabbitMQSource{URL: pipelines.NewSecret("", url), Queue: queue}
}

func newTestSource(t *testing.T, spec pipelines.RabbitMQSource, opts connectors.Options, extra ...Option) *Source {
	t.Helper()
	options := append([]Option{WithReconnectBackoff(50*time.Millisecond, time.Second)}, extra...)
	src, err := New(spec, opts, testLogger(), options...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return src
}

// connect connects src and closes it when the test ends.
func connect(t *testing.T, src *Source) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = src.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
}

func readOne(t *testing.T, src connectors.Source) (*connectors.Message, connectors.AckFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msg, ack, err := src.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return msg, ack
}
