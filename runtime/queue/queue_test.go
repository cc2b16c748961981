package queue

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/internal/cetest"
)

func TestPublishConsumeAck(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{})
	createQueue(t, q, "acme.default")
	evs := events(t, "pca", 5)
	publishEvents(t, q, "acme.default", evs...)
	if n := depth(t, q, "acme.default"); n != 5 {
		t.Fatalf("Depth = %d, want 5", n)
	}
	src := connect(t, q, "acme.default", connectors.Options{})
	gs := readN(t, src, 5)
	for i, g := range gs {
		cetest.Equal(t, evs[i], g.msg.Event)
		m := g.msg
		if m.DecodeErr != nil {
			t.Errorf("DecodeErr = %v", m.DecodeErr)
		}
		if m.Lane != "acme.default" || m.Coordinates.System != "nats" || m.Coordinates.Topic != "acme.default" {
			t.Errorf("lane/coordinates = %q %+v", m.Lane, m.Coordinates)
		}
		if m.Coordinates.ID != evs[i].ID() || m.Coordinates.Offset <= 0 {
			t.Errorf("coordinates = %+v, want ID %s and a positive offset", m.Coordinates, evs[i].ID())
		}
		if m.Key != "key-"+evs[i].ID() {
			t.Errorf("Key = %q, want the partitionkey", m.Key)
		}
		if m.Size != len(evs[i].Data()) || m.ReceivedAt.IsZero() {
			t.Errorf("Size = %d (want %d), ReceivedAt = %v", m.Size, len(evs[i].Data()), m.ReceivedAt)
		}
	}
	// In flight messages still count in the depth.
	if n := depth(t, q, "acme.default"); n != 5 {
		t.Fatalf("Depth with 5 in flight = %d, want 5", n)
	}
	ackAll(t, gs)
	if n := depth(t, q, "acme.default"); n != 0 {
		t.Fatalf("Depth after acks = %d, want 0", n)
	}
	expectQuiet(t, src, "after acking everything")
	if err := gs[0].ack(testCtx(t), nil); err == nil {
		t.Errorf("second ack = nil, want an error")
	}
}

func TestNackAndRedelivery(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{})
	tests := []struct {
		name      string
		ackErr    error
		redeliver bool
	}{
		{"nack", errors.New("function failed"), true},
		{"retry after", RetryAfter(errors.New("busy"), 300*time.Millisecond), true},
		{"terminate", ErrTerminate, false},
		{"terminate wrapped", errors.Join(errors.New("cancelled"), ErrTerminate), false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := "nack.q" + strconv.Itoa(i)
			createQueue(t, q, name)
			ev := cetest.New(t, name+"-ev", map[string]int{"n": i})
			publishEvents(t, q, name, ev)
			src := connect(t, q, name, connectors.Options{})
			first := readN(t, src, 1)[0]
			if err := first.ack(testCtx(t), tc.ackErr); err != nil {
				t.Fatalf("nack: %v", err)
			}
			if !tc.redeliver {
				expectQuiet(t, src, "after terminate")
				if n := depth(t, q, name); n != 0 {
					t.Fatalf("Depth after terminate = %d, want 0", n)
				}
				return
			}
			again := readN(t, src, 1)[0]
			if again.msg.Event.ID() != ev.ID() {
				t.Fatalf("redelivered %s, want %s", again.msg.Event.ID(), ev.ID())
			}
			ackAll(t, []got{again})
			expectQuiet(t, src, "after ack")
			if n := depth(t, q, name); n != 0 {
				t.Fatalf("Depth = %d, want 0", n)
			}
		})
	}
}

func TestDeduplication(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{})
	ctx := testCtx(t)
	r1, err := q.Publish(ctx, "dedup", "task-1", []byte("a"), nil)
	if err != nil || r1.Duplicate {
		t.Fatalf("first Publish = %+v, %v", r1, err)
	}
	r2, err := q.Publish(ctx, "dedup", "task-1", []byte("a again"), nil)
	if err != nil {
		t.Fatalf("second Publish: %v", err)
	}
	if !r2.Duplicate || r2.Seq != r1.Seq {
		t.Fatalf("second Publish = %+v, want a duplicate of seq %d", r2, r1.Seq)
	}
	// The dedup id is per stream: the same id on another queue is a
	// duplicate too (ids are task ids, unique across queues).
	r3, err := q.Publish(ctx, "dedup.other", "task-1", []byte("b"), nil)
	if err != nil || !r3.Duplicate {
		t.Fatalf("Publish on another queue = %+v, %v; want a duplicate", r3, err)
	}
	// No msgID: no deduplication.
	for range 2 {
		if r, err := q.Publish(ctx, "dedup", "", []byte("x"), nil); err != nil || r.Duplicate {
			t.Fatalf("Publish without msgID = %+v, %v", r, err)
		}
	}
	if n := depth(t, q, "dedup"); n != 3 {
		t.Fatalf("Depth = %d, want 3", n)
	}
	// Stored plain payloads are wrapped into CloudEvents keeping the msgID.
	createQueue(t, q, "dedup")
	gs := readN(t, connect(t, q, "dedup", connectors.Options{}), 3)
	m := gs[0].msg
	if m.Event.ID() != "task-1" || m.Event.Type() != WrappedEventType || string(m.Event.Data()) != "a" || m.DecodeErr != nil {
		t.Errorf("wrapped event = %v (DecodeErr %v)", m.Event, m.DecodeErr)
	}
	ackAll(t, gs)
}

func TestQueueLifecycle(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{})
	ctx := testCtx(t)

	// Connecting to a queue that was never created is a permanent error.
	src := q.Source("life.fn", connectors.Options{})
	if err := src.Connect(ctx); !errors.Is(err, ErrNoQueue) {
		t.Fatalf("Connect to a missing queue: %v, want ErrNoQueue", err)
	}
	_ = src.Close(ctx)

	// Messages published before the queue exists wait for it.
	publishEvents(t, q, "life.fn", cetest.New(t, "early", nil))
	createQueue(t, q, "life.fn")
	createQueue(t, q, "life.fn") // idempotent
	createQueue(t, q, "life.other")
	names, err := q.Queues(ctx)
	if err != nil {
		t.Fatalf("Queues: %v", err)
	}
	slices.Sort(names)
	if want := []string{"life.fn", "life.other"}; !slices.Equal(names, want) {
		t.Fatalf("Queues = %v, want %v", names, want)
	}
	if err := q.DeleteQueue(ctx, "life.fn"); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("DeleteQueue with a backlog: %v, want ErrNotEmpty", err)
	}
	src = connect(t, q, "life.fn", connectors.Options{})
	gs := readN(t, src, 1)
	if gs[0].msg.Event.ID() != "early" {
		t.Fatalf("got %s, want early", gs[0].msg.Event.ID())
	}
	ackAll(t, gs)
	if err := src.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := q.DeleteQueue(ctx, "life.fn"); err != nil {
		t.Fatalf("DeleteQueue: %v", err)
	}
	if err := q.DeleteQueue(ctx, "life.fn"); err != nil {
		t.Fatalf("DeleteQueue again: %v", err)
	}
	if names, _ := q.Queues(ctx); !slices.Equal(names, []string{"life.other"}) {
		t.Fatalf("Queues after delete = %v", names)
	}
	if err := q.Source("life.fn", connectors.Options{}).Connect(ctx); !errors.Is(err, ErrNoQueue) {
		t.Fatalf("Connect after delete: %v, want ErrNoQueue", err)
	}
}

func TestReadFailsWhenQueueDeleted(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{Config: Config{PollWait: 200 * time.Millisecond}})
	createQueue(t, q, "doomed")
	src := connect(t, q, "doomed", connectors.Options{})
	if err := q.DeleteQueue(testCtx(t), "doomed"); err != nil {
		t.Fatalf("DeleteQueue: %v", err)
	}
	if _, _, err := src.Read(testCtx(t)); !errors.Is(err, ErrQueueDeleted) {
		t.Fatalf("Read after delete: %v, want ErrQueueDeleted", err)
	}
	if h := src.(connectors.Health).Health(); !errors.Is(h, ErrQueueDeleted) {
		t.Fatalf("Health = %v, want ErrQueueDeleted", h)
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"acme.default", true},
		{"t.acme-corp.fn_resize-2", true},
		{"", false},
		{".a", false},
		{"a.", false},
		{"a..b", false},
		{"a b", false},
		{"a*", false},
		{"a.>", false},
		{"a~b", false},
		{"é", false},
		{strings.Repeat("a", MaxNameLen), true},
		{strings.Repeat("a", MaxNameLen+1), false},
	}
	q := openEmbedded(t, EmbeddedConfig{})
	for _, tc := range tests {
		if got := ValidName(tc.name); got != tc.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
		if tc.ok {
			continue
		}
		if _, err := q.Publish(testCtx(t), tc.name, "", nil, nil); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Publish(%q): %v, want ErrInvalidName", tc.name, err)
		}
		if err := q.CreateQueue(testCtx(t), tc.name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("CreateQueue(%q): %v, want ErrInvalidName", tc.name, err)
		}
	}
}

func TestMove(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{})
	ctx := testCtx(t)
	createQueue(t, q, "shared")
	var evs []string
	for i := range 10 {
		ev := cetest.New(t, "mv-"+strconv.Itoa(i), map[string]int{"i": i})
		fn := "light"
		if i%2 == 0 {
			fn = "noisy"
		}
		ev.SetExtension("sluicefunction", fn)
		publishEvents(t, q, "shared", ev)
		evs = append(evs, ev.ID())
	}
	// A reader holds the first two (delivered, unacknowledged): they stay.
	src := connect(t, q, "shared", connectors.Options{Window: 2})
	held := readN(t, src, 2)
	noisy := func(m *Stored) bool { return m.Headers[HeaderPrefix+"sluicefunction"] == "noisy" }
	n, err := q.Move(ctx, "shared", "dedicated.noisy", noisy)
	if err != nil {
		t.Fatalf("Move: %v", err)
	}
	// mv-0 (noisy) is held; mv-2, 4, 6, 8 move.
	if n != 4 {
		t.Fatalf("moved %d, want 4", n)
	}
	if a, b := depth(t, q, "shared"), depth(t, q, "dedicated.noisy"); a != 6 || b != 4 {
		t.Fatalf("depths shared=%d dedicated=%d, want 6 and 4", a, b)
	}
	createQueue(t, q, "dedicated.noisy")
	moved := readN(t, connect(t, q, "dedicated.noisy", connectors.Options{}), 4)
	var movedIDs []string
	for _, g := range moved {
		movedIDs = append(movedIDs, g.msg.Event.ID())
		if g.msg.Coordinates.ID != g.msg.Event.ID() {
			t.Errorf("moved message lost its msgID: %+v", g.msg.Coordinates)
		}
		if f, _ := g.msg.Event.Extensions()["sluicefunction"].(string); f != "noisy" {
			t.Errorf("moved %s of function %q", g.msg.Event.ID(), f)
		}
	}
	if want := []string{"mv-2", "mv-4", "mv-6", "mv-8"}; !slices.Equal(movedIDs, want) {
		t.Fatalf("moved %v, want %v in order", movedIDs, want)
	}
	ackAll(t, moved)

	// The shared queue resumed: the held ones and the light ones remain.
	ackAll(t, held)
	var restIDs []string
	for range 4 { // the window is 2: ack as we go
		g := readN(t, src, 1)
		restIDs = append(restIDs, g[0].msg.Event.ID())
		ackAll(t, g)
	}
	if want := []string{"mv-3", "mv-5", "mv-7", "mv-9"}; !slices.Equal(restIDs, want) {
		t.Fatalf("shared queue delivered %v after the move, want %v", restIDs, want)
	}
	expectQuiet(t, src, "shared queue drained")

	// Move everything from a queue that has no consumer, back and forth.
	publishEvents(t, q, "orphan", cetest.New(t, "o-1", nil), cetest.New(t, "o-2", nil))
	if n, err := q.Move(ctx, "orphan", "shared", nil); err != nil || n != 2 {
		t.Fatalf("Move orphan = %d, %v; want 2", n, err)
	}
	if n, err := q.Move(ctx, "orphan", "shared", nil); err != nil || n != 0 {
		t.Fatalf("Move of an empty queue = %d, %v; want 0", n, err)
	}
	ackAll(t, readN(t, src, 2))
	expectQuiet(t, src, "orphans consumed")
	if _, err := q.Move(ctx, "shared", "shared", nil); err == nil {
		t.Fatalf("Move to itself = nil error")
	}
}

func TestStoreFull(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{Config: Config{MaxBytes: 64 << 10}})
	payload := make([]byte, 4<<10)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = q.Publish(testCtx(t), "full", "", payload, nil)
	}
	if !errors.Is(err, ErrFull) {
		t.Fatalf("publishing past MaxBytes: %v, want ErrFull", err)
	}
}

func TestMessageTooLarge(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{Config: Config{MaxMessageBytes: 1 << 10}})
	_, err := q.Publish(testCtx(t), "big", "", make([]byte, 2<<10), nil)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Publish of 2 KiB with a 1 KiB limit: %v, want ErrTooLarge", err)
	}
}

func TestClosedQueue(t *testing.T) {
	q, err := OpenEmbedded(testCtx(t), EmbeddedConfig{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeQueue(t, q)
	closeQueue(t, q) // idempotent
	if _, err := q.Publish(testCtx(t), "x", "", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := q.Depth(testCtx(t), "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("Depth after Close: %v, want ErrClosed", err)
	}
	if err := q.Source("x", connectors.Options{}).Connect(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("Connect after Close: %v, want ErrClosed", err)
	}
}

// TestCloseHandsBackUnacked: Close gives up on an unacknowledged message when
// its ctx ends and makes it available to the next reader at once (well
// before AckWait); the late ack is refused.
func TestCloseHandsBackUnacked(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{Config: Config{AckWait: 10 * time.Minute}})
	createQueue(t, q, "handback")
	publishEvents(t, q, "handback", events(t, "hb", 3)...)
	a := connect(t, q, "handback", connectors.Options{Window: 1})
	gs := readN(t, a, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := a.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with an unacked message: %v, want DeadlineExceeded", err)
	}
	if err := gs[0].ack(testCtx(t), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("ack after Close: %v, want ErrClosed", err)
	}
	if _, _, err := a.Read(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v, want ErrClosed", err)
	}
	b := connect(t, q, "handback", connectors.Options{})
	again := readN(t, b, 3)
	ids := []string{again[0].msg.Event.ID(), again[1].msg.Event.ID(), again[2].msg.Event.ID()}
	slices.Sort(ids)
	if want := []string{"hb-000", "hb-001", "hb-002"}; !slices.Equal(ids, want) {
		t.Fatalf("second reader got %v, want %v", ids, want)
	}
	ackAll(t, again)
}

// TestLongInvocationNotRedelivered: a message held far longer than AckWait
// is not redelivered while its Source lives (progress is reported).
func TestLongInvocationNotRedelivered(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{Config: Config{AckWait: time.Second, PollWait: 200 * time.Millisecond}})
	createQueue(t, q, "long")
	publishEvents(t, q, "long", cetest.New(t, "slow-task", nil))
	a := connect(t, q, "long", connectors.Options{})
	held := readN(t, a, 1)
	// b joins only once a holds the task: connected earlier, its fetcher could
	// win the message and a would wait for nothing.
	b := connect(t, q, "long", connectors.Options{})
	// Several AckWaits pass while both readers poll.
	expectQuiet(t, b, "other reader while the task runs")
	expectQuiet(t, a, "same reader while the task runs")
	ackAll(t, held)
	if n := depth(t, q, "long"); n != 0 {
		t.Fatalf("Depth = %d, want 0", n)
	}
}

func TestUndecodableEvent(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{})
	createQueue(t, q, "bad")
	h := map[string]string{HeaderPrefix + "specversion": "9.9", HeaderPrefix + "id": "x"}
	if _, err := q.Publish(testCtx(t), "bad", "bad-1", []byte("payload"), h); err != nil {
		t.Fatal(err)
	}
	g := readN(t, connect(t, q, "bad", connectors.Options{}), 1)[0]
	if !errors.Is(g.msg.DecodeErr, ErrInvalidCloudEvent) {
		t.Fatalf("DecodeErr = %v, want ErrInvalidCloudEvent", g.msg.DecodeErr)
	}
	if g.msg.Event.ID() != "bad-1" || string(g.msg.Event.Data()) != "payload" {
		t.Fatalf("wrapper event = %v", g.msg.Event)
	}
	ackAll(t, []got{g})
}

// TestDurabilityAcrossSIGKILL re-executes the test binary as a child that
// publishes N messages and SIGKILLs itself the moment the last Publish
// returned; every one of them must be in the reopened data dir.
func TestDurabilityAcrossSIGKILL(t *testing.T) {
	const n = 200
	for _, sync := range []bool{false, true} {
		t.Run("SyncAlways="+strconv.FormatBool(sync), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			syncEnv := "0"
			if sync {
				syncEnv = "1"
			}
			cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashCountEnv+"="+strconv.Itoa(n), crashSyncEnv+"="+syncEnv)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("child: %v, want death by SIGKILL; output:\n%s", err, out)
			}
			ws, ok := exit.Sys().(syscall.WaitStatus)
			if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("child ended with %v, want SIGKILL; output:\n%s", exit, out)
			}

			q := openEmbedded(t, EmbeddedConfig{DataDir: dir})
			if d := depth(t, q, crashQueue); d != n {
				t.Fatalf("after SIGKILL the queue holds %d messages, want %d", d, n)
			}
			createQueue(t, q, crashQueue)
			gs := readN(t, connect(t, q, crashQueue, connectors.Options{Window: n}), n)
			for i, g := range gs {
				if g.msg.Coordinates.ID != crashMsgID(i) || string(g.msg.Event.Data()) != strconv.Itoa(i) {
					t.Fatalf("message %d = %s %q, want %s", i, g.msg.Coordinates.ID, g.msg.Event.Data(), crashMsgID(i))
				}
			}
			ackAll(t, gs)
		})
	}
}

// TestExternalNATS runs OpenNATS against the embedded server exposed on a
// loopback port (no other NATS server exists on this machine): what one
// process publishes, the other reads, and both see the same queues.
func TestExternalNATS(t *testing.T) {
	srv := openEmbedded(t, EmbeddedConfig{Listen: "127.0.0.1:0"})
	url := srv.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("ClientURL = %q", url)
	}
	ext, err := OpenNATS(testCtx(t), url, Config{}, nil)
	if err != nil {
		t.Fatalf("OpenNATS: %v", err)
	}
	t.Cleanup(func() { closeQueue(t, ext) })

	createQueue(t, ext, "ext.q")
	evs := events(t, "ext", 4)
	publishEvents(t, ext, "ext.q", evs[:2]...)
	publishEvents(t, srv, "ext.q", evs[2:]...)
	if d := depth(t, srv, "ext.q"); d != 4 {
		t.Fatalf("Depth = %d, want 4", d)
	}
	a := connect(t, ext, "ext.q", connectors.Options{Window: 2})
	b := connect(t, srv, "ext.q", connectors.Options{Window: 2})
	// Each reader holds its two unacked, so the window keeps the other's
	// share out of its reach; acking early would let a steal b's share.
	seen := map[string]bool{}
	var held []got
	for _, src := range []connectors.Source{a, b} {
		for _, g := range readN(t, src, 2) {
			seen[g.msg.Event.ID()] = true
			held = append(held, g)
		}
	}
	ackAll(t, held)
	if len(seen) != 4 {
		t.Fatalf("two readers on two connections got %v, want 4 distinct", seen)
	}
	names, err := ext.Queues(testCtx(t))
	if err != nil || !slices.Equal(names, []string{"ext.q"}) {
		t.Fatalf("Queues via OpenNATS = %v, %v", names, err)
	}
	if srvOnly := openEmbedded(t, EmbeddedConfig{}); srvOnly.ClientURL() != "" {
		t.Errorf("ClientURL without Listen = %q, want empty", srvOnly.ClientURL())
	}
}
