package rocketmq

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

// leakOptions ignores the RocketMQ client library's own goroutines. All but the
// pull loops run under primitive.WithRecover. They outlive Shutdown: pull
// requests wait out their 30 s RPC timeout, the client's schedulers first
// sleep up to 10 s, the consume-timeout cleaner sleeps ConsumeTimeout, and
// the statistics printers sleep until the next minute, hour and month
// (docs/connectors/rocketmq.md, "Quirks"). The source's own goroutine (the
// poller) is not among them, and parked callbacks are checked separately
// (Source.parked).
func leakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/primitive.WithRecover"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/consumer.(*pushConsumer).pullMessage"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/consumer.(*pushConsumer).Start.func1"),
		goleak.IgnoreAnyFunction("github.com/apache/rocketmq-client-go/v2/internal.(*rmqClient).RebalanceImmediately"),
		// Started by a package variable of the client at init; lives as
		// long as the process.
		goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"),
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakOptions()...)
}

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("SLUICE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// testOptions are the Source options every broker test uses: faster
// revocation and health checks than the defaults.
func testOptions() []Option {
	return []Option{
		WithPollInterval(200 * time.Millisecond),
		WithProbeInterval(time.Second),
	}
}

func newTestSource(t *testing.T, spec pipelines.RocketMQSource, opts connectors.Options, extra ...Option) *Source {
	t.Helper()
	if spec.Start == "" {
		spec.Start = pipelines.StartEarliest
	}
	src, err := New(spec, opts, testLogger(), append(testOptions(), extra...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return src
}

func connectorsOptions(window int) connectors.Options {
	return connectors.Options{Window: window, Name: "test"}
}

// connect connects src and closes it when the test ends.
func connect(t *testing.T, src *Source) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = src.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
}

// readOne reads one message, failing the test after a generous deadline.
func readOne(t *testing.T, src *Source) (*connectors.Message, connectors.AckFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	msg, ack, err := src.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return msg, ack
}

// expectNothing fails the test if a message arrives within d.
func expectNothing(t *testing.T, src *Source, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if msg, _, err := src.Read(ctx); err == nil {
		t.Fatalf("unexpected message %s (lane %s)", msg.Event.ID(), msg.Lane)
	}
}
