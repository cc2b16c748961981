// Package queuetest is the behaviour every queue.Queue implementation must
// show, as a suite each implementation's tests run with Run (the embedded
// JetStream queue and the Kafka queue do).
package queuetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/runtime/queue"
)

// Harness describes the implementation under test.
type Harness struct {
	// Open returns an open queue; the suite closes it (once) at the end of
	// the test it was opened for.
	Open func(t *testing.T) queue.Queue
	// Moves: Move works (else it must fail with queue.ErrUnsupported and
	// queue.CanMove must report false).
	Moves bool
	// HoldsRetries: the reader itself holds a message acknowledged with
	// RetryAfter until its delay passes (queue.HeldRetries): closing the
	// reader must give it back at once, to the queue's next reader.
	HoldsRetries bool
}

// Generous bounds that only stop hung tests; no assertion depends on speed.
const opTimeout = 90 * time.Second

// suiteCase is one case of the suite, run on a fresh queue.
type suiteCase struct {
	name string
	fn   func(*testing.T, queue.Queue)
}

// Run runs the suite, each case in a subtest with its own queue.
func Run(t *testing.T, h Harness) {
	cases := []suiteCase{
		{"PublishReadAck", testPublishReadAck},
		{"RedeliveryAfterUnackedClose", testRedeliveryAfterClose},
		{"Depth", testDepth},
		{"RetryAfterAndTerminate", testRetryAfterAndTerminate},
		{"DeleteNonEmptyRefused", testDeleteNonEmpty},
		{"InvalidName", testInvalidName},
		{"Move", func(t *testing.T, q queue.Queue) { testMove(t, q, h.Moves) }},
		{"Closed", testClosed},
	}
	if h.HoldsRetries {
		cases = append(cases, suiteCase{"CloseDuringRetryDelay", testCloseDuringRetryDelay})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := h.Open(t)
			closed := false
			t.Cleanup(func() {
				if !closed {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					if err := q.Close(ctx); err != nil {
						t.Errorf("Close: %v", err)
					}
				}
			})
			if c.name == "Closed" {
				closed = true // the case closes it itself
			}
			c.fn(t, q)
		})
	}
}

func ctxOf(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

func publish(t *testing.T, q queue.Queue, name string, evs ...cloudevents.Event) {
	t.Helper()
	for _, ev := range evs {
		data, headers, err := queue.EncodeEvent(ev)
		if err != nil {
			t.Fatalf("EncodeEvent(%s): %v", ev.ID(), err)
		}
		if _, err := q.Publish(ctxOf(t), name, "msg-"+ev.ID(), data, headers); err != nil {
			t.Fatalf("Publish(%s): %v", ev.ID(), err)
		}
	}
}

func connect(t *testing.T, q queue.Queue, name string) connectors.Source {
	t.Helper()
	src := q.Source(name, connectors.Options{Window: 16, Name: "test " + name})
	if err := src.Connect(ctxOf(t)); err != nil {
		t.Fatalf("Connect(%s): %v", name, err)
	}
	t.Cleanup(func() { closeSource(t, src) })
	return src
}

func closeSource(t *testing.T, src connectors.Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = src.Close(ctx) // idempotent; a second Close may report ErrClosed
}

type got struct {
	msg *connectors.Message
	ack connectors.AckFunc
}

func readN(t *testing.T, src connectors.Source, n int) []got {
	t.Helper()
	ctx := ctxOf(t)
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

func ackAll(t *testing.T, gs []got) {
	t.Helper()
	for _, g := range gs {
		if err := g.ack(ctxOf(t), nil); err != nil {
			t.Fatalf("ack %s: %v", g.msg.Event.ID(), err)
		}
	}
}

func ids(gs []got) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.msg.Event.ID()
	}
	sort.Strings(out)
	return out
}

func eventIDs(evs []cloudevents.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID()
	}
	sort.Strings(out)
	return out
}

// waitDepth waits until Depth reports want: some stores count an
// acknowledged message until the reader's next commit.
func waitDepth(t *testing.T, q queue.Queue, name string, want int) {
	t.Helper()
	deadline := time.Now().Add(opTimeout)
	for {
		n, err := q.Depth(ctxOf(t), name)
		if err != nil {
			t.Fatalf("Depth(%s): %v", name, err)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Depth(%s) = %d, want %d", name, n, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func create(t *testing.T, q queue.Queue, name string) {
	t.Helper()
	if err := q.CreateQueue(ctxOf(t), name); err != nil {
		t.Fatalf("CreateQueue(%s): %v", name, err)
	}
}

// testPublishReadAck: every message comes back once, as published (the
// CloudEvent round-trips, the msgID is the coordinates' ID, the queue their
// topic), and acknowledging empties the queue.
func testPublishReadAck(t *testing.T, q queue.Queue) {
	name := testenv.UniqueName(t, "qt.read")
	create(t, q, name)
	// One event with every attribute (a partitionkey among them), one with
	// none: neither may gain or lose an attribute on the way.
	evs := []cloudevents.Event{cetest.Full(t, "full"), cetest.New(t, "plain", map[string]any{"n": 1})}
	publish(t, q, name, evs...)
	src := connect(t, q, name)
	gs := readN(t, src, len(evs))
	if !slices.Equal(ids(gs), eventIDs(evs)) {
		t.Fatalf("read %v, want %v", ids(gs), eventIDs(evs))
	}
	for _, g := range gs {
		for _, ev := range evs {
			if ev.ID() == g.msg.Event.ID() {
				cetest.Equal(t, ev, g.msg.Event)
			}
		}
		if want := "msg-" + g.msg.Event.ID(); g.msg.Coordinates.ID != want {
			t.Errorf("Coordinates.ID = %q, want the msgID %q", g.msg.Coordinates.ID, want)
		}
		if g.msg.Coordinates.Topic != name {
			t.Errorf("Coordinates.Topic = %q, want the queue %q", g.msg.Coordinates.Topic, name)
		}
		if g.msg.DecodeErr != nil {
			t.Errorf("DecodeErr = %v", g.msg.DecodeErr)
		}
	}
	ackAll(t, gs)
	waitDepth(t, q, name, 0)
}

// testRedeliveryAfterClose: messages read but never acknowledged go to the
// next reader when their reader closes.
func testRedeliveryAfterClose(t *testing.T, q queue.Queue) {
	name := testenv.UniqueName(t, "qt.redeliver")
	create(t, q, name)
	evs := make([]cloudevents.Event, 4)
	for i := range evs {
		evs[i] = cetest.New(t, fmt.Sprintf("r-%d", i), map[string]any{"i": i})
	}
	publish(t, q, name, evs...)
	first := connect(t, q, name)
	held := readN(t, first, len(evs))
	if !slices.Equal(ids(held), eventIDs(evs)) {
		t.Fatalf("first reader read %v, want %v", ids(held), eventIDs(evs))
	}
	closeSource(t, first)
	second := connect(t, q, name)
	again := readN(t, second, len(evs))
	if !slices.Equal(ids(again), eventIDs(evs)) {
		t.Fatalf("second reader read %v, want %v", ids(again), eventIDs(evs))
	}
	ackAll(t, again)
	waitDepth(t, q, name, 0)
}

// testRetryAfterAndTerminate: a message acknowledged with RetryAfter comes
// back (to the same reader) after the delay, as it was; one acknowledged
// with ErrTerminate is gone.
func testRetryAfterAndTerminate(t *testing.T, q queue.Queue) {
	name := testenv.UniqueName(t, "qt.retry")
	create(t, q, name)
	again, gone := cetest.Full(t, "again"), cetest.New(t, "gone", map[string]any{"n": 1})
	publish(t, q, name, again, gone)
	src := connect(t, q, name)
	for _, g := range readN(t, src, 2) {
		err := queue.RetryAfter(errors.New("not now"), 300*time.Millisecond)
		if g.msg.Event.ID() == gone.ID() {
			err = fmt.Errorf("cancelled: %w", queue.ErrTerminate)
		}
		// The reader may change the event it was handed (the async
		// service strips its routing attributes): the retry must not see it.
		g.msg.Event.SetExtension("attempt", nil)
		if aerr := g.ack(ctxOf(t), err); aerr != nil {
			t.Fatalf("ack %s with %v: %v", g.msg.Event.ID(), err, aerr)
		}
	}
	gs := readN(t, src, 1)
	if gs[0].msg.Event.ID() != again.ID() {
		t.Fatalf("redelivered %s, want %s", gs[0].msg.Event.ID(), again.ID())
	}
	cetest.Equal(t, again, gs[0].msg.Event)
	if want := "msg-" + again.ID(); gs[0].msg.Coordinates.ID != want {
		t.Errorf("redelivered Coordinates.ID = %q, want %q", gs[0].msg.Coordinates.ID, want)
	}
	ackAll(t, gs)
	waitDepth(t, q, name, 0)
}

// testDepth: Depth counts stored messages, published before any reader and
// before CreateQueue; a queue never used is empty.
func testDepth(t *testing.T, q queue.Queue) {
	name := testenv.UniqueName(t, "qt.depth")
	waitDepth(t, q, name, 0)
	evs := make([]cloudevents.Event, 5)
	for i := range evs {
		evs[i] = cetest.New(t, fmt.Sprintf("d-%d", i), map[string]any{"i": i})
	}
	publish(t, q, name, evs...)
	create(t, q, name)
	waitDepth(t, q, name, len(evs))
	src := connect(t, q, name)
	gs := readN(t, src, len(evs))
	waitDepth(t, q, name, len(evs)) // in flight still counts
	ackAll(t, gs)
	waitDepth(t, q, name, 0)
	queues, err := q.Queues(ctxOf(t))
	if err != nil {
		t.Fatalf("Queues: %v", err)
	}
	if !slices.Contains(queues, name) {
		t.Fatalf("Queues() = %v, want it to hold %s", queues, name)
	}
}

// testDeleteNonEmpty: a queue holding messages cannot be deleted; once they
// are acknowledged and the reader closed, it can, and is no longer listed.
func testDeleteNonEmpty(t *testing.T, q queue.Queue) {
	name := testenv.UniqueName(t, "qt.delete")
	create(t, q, name)
	publish(t, q, name, cetest.New(t, "del-1", map[string]any{"n": 1}))
	if err := q.DeleteQueue(ctxOf(t), name); !errors.Is(err, queue.ErrNotEmpty) {
		t.Fatalf("DeleteQueue of a non-empty queue: %v, want ErrNotEmpty", err)
	}
	src := connect(t, q, name)
	ackAll(t, readN(t, src, 1))
	waitDepth(t, q, name, 0)
	closeSource(t, src)
	if err := q.DeleteQueue(ctxOf(t), name); err != nil {
		t.Fatalf("DeleteQueue of an empty queue: %v", err)
	}
	queues, err := q.Queues(ctxOf(t))
	if err != nil {
		t.Fatalf("Queues: %v", err)
	}
	if slices.Contains(queues, name) {
		t.Fatalf("Queues() = %v after deleting %s", queues, name)
	}
	if err := q.DeleteQueue(ctxOf(t), name); err != nil {
		t.Fatalf("DeleteQueue of a missing queue: %v", err)
	}
}

func testInvalidName(t *testing.T, q queue.Queue) {
	for _, bad := range []string{"", "a..b", "a b", ".a"} {
		if _, err := q.Publish(ctxOf(t), bad, "", []byte("x"), nil); !errors.Is(err, queue.ErrInvalidName) {
			t.Errorf("Publish(%q): %v, want ErrInvalidName", bad, err)
		}
		if err := q.CreateQueue(ctxOf(t), bad); !errors.Is(err, queue.ErrInvalidName) {
			t.Errorf("CreateQueue(%q): %v, want ErrInvalidName", bad, err)
		}
	}
}

// testMove: Move transfers what nobody read, or is refused with
// ErrUnsupported by a queue that cannot, which says so through CanMove.
func testMove(t *testing.T, q queue.Queue, moves bool) {
	from, to := testenv.UniqueName(t, "qt.from"), testenv.UniqueName(t, "qt.to")
	create(t, q, from)
	create(t, q, to)
	evs := []cloudevents.Event{cetest.New(t, "m-1", map[string]any{"n": 1}), cetest.New(t, "m-2", map[string]any{"n": 2})}
	publish(t, q, from, evs...)
	if queue.CanMove(q) != moves {
		t.Fatalf("CanMove = %v, want %v", queue.CanMove(q), moves)
	}
	n, err := q.Move(ctxOf(t), from, to, nil)
	if !moves {
		if !errors.Is(err, queue.ErrUnsupported) || n != 0 {
			t.Fatalf("Move = %d, %v; want 0, ErrUnsupported", n, err)
		}
		waitDepth(t, q, from, len(evs)) // untouched
		return
	}
	if err != nil || n != len(evs) {
		t.Fatalf("Move = %d, %v; want %d, nil", n, err, len(evs))
	}
	waitDepth(t, q, from, 0)
	src := connect(t, q, to)
	gs := readN(t, src, len(evs))
	if !slices.Equal(ids(gs), eventIDs(evs)) {
		t.Fatalf("moved %v, want %v", ids(gs), eventIDs(evs))
	}
	ackAll(t, gs)
}

func testClosed(t *testing.T, q queue.Queue) {
	if err := q.Close(ctxOf(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := q.Close(ctxOf(t)); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := q.Publish(ctxOf(t), "after.close", "", []byte("x"), nil); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
}

// testCloseDuringRetryDelay: a reader closed while it holds a message for
// its retry delay gives it back at once (Close does not wait out the delay
// or its own deadline, and reports nothing unacknowledged), and the next
// reader gets it.
func testCloseDuringRetryDelay(t *testing.T, q queue.Queue) {
	name := testenv.UniqueName(t, "qt.hold")
	create(t, q, name)
	publish(t, q, name, cetest.New(t, "held", map[string]any{"n": 1}))
	first := connect(t, q, name)
	gs := readN(t, first, 1)
	if err := gs[0].ack(ctxOf(t), queue.RetryAfter(errors.New("paused"), time.Hour)); err != nil {
		t.Fatalf("ack with RetryAfter: %v", err)
	}
	// A generous bound: were the held message not given back, Close would
	// wait all of it and then report it unacknowledged.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := first.Close(ctx); err != nil {
		t.Fatalf("Close while holding a message for its retry delay: %v", err)
	}
	second := connect(t, q, name)
	again := readN(t, second, 1)
	if id := again[0].msg.Coordinates.ID; id != "msg-held" {
		t.Fatalf("read msgID %q, want msg-held", id)
	}
	ackAll(t, again)
}
