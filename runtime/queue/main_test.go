package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/internal/cetest"
)

// Environment of the crash child (see TestDurabilityAcrossSIGKILL).
const (
	crashDirEnv   = "SLUICE_QUEUE_CRASH_DIR"
	crashCountEnv = "SLUICE_QUEUE_CRASH_N"
	crashSyncEnv  = "SLUICE_QUEUE_CRASH_SYNC"
	crashQueue    = "crash.tasks"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		os.Exit(crashChild(dir))
	}
	goleak.VerifyTestMain(m)
}

// crashChild publishes N messages to a queue in dir and kills its own
// process with SIGKILL the moment the last Publish returned: no Close, no
// flush, no deferred function runs. It returns only on failure.
func crashChild(dir string) int {
	n, err := strconv.Atoi(os.Getenv(crashCountEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 3
	}
	ctx := context.Background()
	q, err := OpenEmbedded(ctx, EmbeddedConfig{DataDir: dir, SyncAlways: os.Getenv(crashSyncEnv) == "1"}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 3
	}
	for i := range n {
		if _, err := q.Publish(ctx, crashQueue, crashMsgID(i), []byte(strconv.Itoa(i)), nil); err != nil {
			fmt.Fprintln(os.Stderr, "crash child: publish:", err)
			return 3
		}
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}

func crashMsgID(i int) string { return "crash-" + strconv.Itoa(i) }

// Generous bounds that only stop hung tests; no assertion depends on speed.
const opTimeout = 60 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// openEmbedded starts an embedded queue on a fresh data dir (or cfg.DataDir)
// and closes it when the test ends.
func openEmbedded(t *testing.T, cfg EmbeddedConfig) *Embedded {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	q, err := OpenEmbedded(testCtx(t), cfg, nil)
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	t.Cleanup(func() { closeQueue(t, q) })
	return q
}

func closeQueue(t *testing.T, q Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// publishEvents stores events in queue, each with its id as msgID.
func publishEvents(t *testing.T, q Queue, queue string, evs ...cloudevents.Event) {
	t.Helper()
	for _, ev := range evs {
		data, headers, err := EncodeEvent(ev)
		if err != nil {
			t.Fatalf("EncodeEvent(%s): %v", ev.ID(), err)
		}
		if _, err := q.Publish(testCtx(t), queue, ev.ID(), data, headers); err != nil {
			t.Fatalf("Publish(%s): %v", ev.ID(), err)
		}
	}
}

func events(t *testing.T, prefix string, n int) []cloudevents.Event {
	t.Helper()
	evs := make([]cloudevents.Event, n)
	for i := range evs {
		evs[i] = cetest.Full(t, fmt.Sprintf("%s-%03d", prefix, i))
	}
	return evs
}

// connect returns a connected Source that is closed when the test ends.
func connect(t *testing.T, q Queue, queue string, opts connectors.Options) connectors.Source {
	t.Helper()
	src := q.Source(queue, opts)
	if err := src.Connect(testCtx(t)); err != nil {
		t.Fatalf("Connect(%s): %v", queue, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = src.Close(ctx)
	})
	return src
}

type got struct {
	msg *connectors.Message
	ack connectors.AckFunc
}

func readN(t *testing.T, src connectors.Source, n int) []got {
	t.Helper()
	ctx := testCtx(t)
	out := make([]got, 0, n)
	for len(out) < n {
		msg, ack, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("Read %d of %d: %v", len(out)+1, n, err)
		}
		out = append(out, got{msg, ack})
	}
	return out
}

// expectQuiet fails unless Read stays blocked for a while.
func expectQuiet(t *testing.T, src connectors.Source, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	msg, _, err := src.Read(ctx)
	if err == nil {
		t.Fatalf("%s: Read returned %s, want nothing", what, msg.Event.ID())
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s: Read: %v, want context.DeadlineExceeded", what, err)
	}
}

func ackAll(t *testing.T, gs []got) {
	t.Helper()
	for _, g := range gs {
		if err := g.ack(testCtx(t), nil); err != nil {
			t.Fatalf("ack %s: %v", g.msg.Event.ID(), err)
		}
	}
}

func depth(t *testing.T, q Queue, queue string) int {
	t.Helper()
	n, err := q.Depth(testCtx(t), queue)
	if err != nil {
		t.Fatalf("Depth(%s): %v", queue, err)
	}
	return n
}

func createQueue(t *testing.T, q Queue, queue string) {
	t.Helper()
	if err := q.CreateQueue(testCtx(t), queue); err != nil {
		t.Fatalf("CreateQueue(%s): %v", queue, err)
	}
}
