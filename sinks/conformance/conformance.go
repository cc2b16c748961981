// Package conformance is the test suite every sink passes against its real
// destination (DESIGN §10). A sink's test calls RunSink with a SinkHarness
// that provisions fresh destinations and reads back what was written.
//
// It is test code: only _test.go files import it.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/sinks"
)

// SinkHarness connects the suite to one sink kind and its destination.
type SinkHarness struct {
	// Target provisions a fresh destination (topic, queue, endpoint).
	Target func(t *testing.T) Target
	// NewUnavailable returns a sink whose destination cannot be reached
	// (e.g. an address with nothing listening).
	NewUnavailable func(t *testing.T) sinks.Sink
	// LeakOptions are added to the goroutine leak check, for goroutines a
	// client library keeps for the life of the process.
	LeakOptions []goleak.Option
}

// Target is one fresh destination.
type Target interface {
	// New returns a sink writing to this destination. The suite closes it.
	New(t *testing.T) sinks.Sink
	// ReadBack returns the first n events written to the destination,
	// waiting for them (failing t if they do not arrive).
	ReadBack(t *testing.T, n int) []cloudevents.Event
}

// opTimeout only stops a hung test; no check depends on speed.
const opTimeout = 90 * time.Second

// RunSink runs the sink conformance suite.
func RunSink(t *testing.T, h SinkHarness) {
	t.Run("WriteReadBack", func(t *testing.T) { testWriteReadBack(t, h) })
	t.Run("EmptyWrite", func(t *testing.T) { testEmptyWrite(t, h) })
	t.Run("Unavailable", func(t *testing.T) { testUnavailable(t, h) })
	t.Run("CancelledContext", func(t *testing.T) { testCancelled(t, h) })
	t.Run("CloseIdempotent", func(t *testing.T) { testCloseIdempotent(t, h) })
	t.Run("ConcurrentWrites", func(t *testing.T) { testConcurrentWrites(t, h) })
	t.Run("NoLeakedGoroutines", func(t *testing.T) { testNoLeaks(t, h) })
}

func makeEvents(t *testing.T, n int) []cloudevents.Event {
	t.Helper()
	prefix := testenv.UniqueName(t, "ev")
	evs := make([]cloudevents.Event, n)
	for i := range evs {
		evs[i] = cetest.Full(t, fmt.Sprintf("%s-%03d", prefix, i))
	}
	return evs
}

func newSink(t *testing.T, tg Target) sinks.Sink {
	t.Helper()
	s := tg.New(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

func write(t *testing.T, s sinks.Sink, evs []cloudevents.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := s.Write(ctx, evs); err != nil {
		t.Fatalf("Write(%d events): %v", len(evs), err)
	}
}

// checkSame fails t unless got holds exactly the events of want (any
// order), each with its attributes, extensions and data intact.
func checkSame(t *testing.T, want, got []cloudevents.Event) {
	t.Helper()
	byID := make(map[string]cloudevents.Event, len(got))
	for _, e := range got {
		if _, dup := byID[e.ID()]; dup {
			t.Errorf("event %s read back twice", e.ID())
		}
		byID[e.ID()] = e
	}
	for _, w := range want {
		g, ok := byID[w.ID()]
		if !ok {
			t.Errorf("event %s not read back", w.ID())
			continue
		}
		cetest.Equal(t, w, g)
	}
}

func testWriteReadBack(t *testing.T, h SinkHarness) {
	tg := h.Target(t)
	s := newSink(t, tg)
	evs := makeEvents(t, 20)
	// A minimal event too: no optional attributes, no extensions, no data.
	evs = append(evs, cetest.New(t, testenv.UniqueName(t, "plain"), nil))
	write(t, s, evs[:1])
	write(t, s, evs[1:15])
	write(t, s, evs[15:])
	checkSame(t, evs, tg.ReadBack(t, len(evs)))
}

func testEmptyWrite(t *testing.T, h SinkHarness) {
	tg := h.Target(t)
	s := newSink(t, tg)
	write(t, s, nil)
	write(t, s, []cloudevents.Event{})
	evs := makeEvents(t, 1)
	write(t, s, evs)
	checkSame(t, evs, tg.ReadBack(t, 1))
}

// testUnavailable: writing to a destination that is not there fails on its
// own (not only when ctx ends), and never reports success.
func testUnavailable(t *testing.T, h SinkHarness) {
	s := h.NewUnavailable(t)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	}()
	for i := range 2 { // a second attempt must not succeed either
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		err := s.Write(ctx, makeEvents(t, 3))
		ctxErr := ctx.Err()
		cancel()
		if err == nil {
			t.Fatalf("attempt %d: Write to an unavailable destination returned nil", i+1)
		}
		if ctxErr != nil {
			t.Fatalf("attempt %d: Write only gave up when its context ended (%v); it must fail by itself", i+1, err)
		}
		t.Logf("attempt %d: %v", i+1, err)
	}
}

func testCancelled(t *testing.T, h SinkHarness) {
	tg := h.Target(t)
	s := newSink(t, tg)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Write(ctx, makeEvents(t, 2)); err == nil {
		t.Fatalf("Write with a cancelled context returned nil")
	}
	// The sink still works afterwards. (Whether the cancelled events
	// reached the destination is unspecified, so nothing is read back.)
	write(t, s, makeEvents(t, 2))
}

func testCloseIdempotent(t *testing.T, h SinkHarness) {
	tg := h.Target(t)
	s := tg.New(t)
	write(t, s, makeEvents(t, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Write(ctx, makeEvents(t, 1)); err == nil {
		t.Fatalf("Write after Close returned nil")
	}

	// Close of a sink that never wrote.
	idle := tg.New(t)
	if err := idle.Close(ctx); err != nil {
		t.Fatalf("Close of an unused sink: %v", err)
	}
}

func testConcurrentWrites(t *testing.T, h SinkHarness) {
	const writers, each = 8, 10
	tg := h.Target(t)
	s := newSink(t, tg)
	evs := makeEvents(t, writers*each)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			if err := s.Write(ctx, evs[w*each:(w+1)*each]); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Write: %v", err)
	}
	checkSame(t, evs, tg.ReadBack(t, len(evs)))
}

func testNoLeaks(t *testing.T, h SinkHarness) {
	tg := h.Target(t)
	opts := append([]goleak.Option{goleak.IgnoreCurrent()}, h.LeakOptions...)
	s := tg.New(t)
	write(t, s, makeEvents(t, 3))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	u := h.NewUnavailable(t)
	if err := u.Write(ctx, makeEvents(t, 1)); err == nil {
		t.Errorf("Write to an unavailable destination returned nil")
	}
	if err := u.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("Close of the unavailable sink: %v", err)
	}
	goleak.VerifyNone(t, opts...)
}
