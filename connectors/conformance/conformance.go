// Package conformance is the test suite every source connector passes
// against its real broker (DESIGN §10). A connector's test calls RunSource
// with a SourceHarness that provisions fresh topics/queues and subscriptions
// on that broker; the suite runs the checks of the capabilities the harness
// declares.
//
// It is test code: only _test.go files import it.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
)

// Caps declares the guarantees a source claims. Checks of undeclared
// capabilities are not run (they are logged as such).
type Caps struct {
	// Ordered: messages of one lane arrive in publish order.
	Ordered bool
	// ConsumerGroups: several Sources on one subscription share its lanes,
	// and when one closes the others take over what it left unacknowledged.
	ConsumerGroups bool
	// Persistent: acknowledged positions survive Close; a new Source on the
	// same subscription resumes after them.
	Persistent bool
	// Redelivers: a message that was not acknowledged (or was nacked) is
	// delivered again, at the latest to the next Source on the subscription.
	Redelivers bool
	// ContiguousCommit: the position is an offset per lane, so an ack only
	// takes effect once every earlier message of the lane is acknowledged
	// (Kafka). Brokers with per-message acks (RabbitMQ) leave it false.
	ContiguousCommit bool
	// FollowsCredit: the source implements connectors.CreditFollower.
	FollowsCredit bool
}

// SourceHarness connects the suite to one connector and its broker.
type SourceHarness struct {
	Caps Caps
	// Subscription provisions a fresh topic/queue with the given number of
	// lanes (partitions; a broker without partitions may provide one) and a
	// fresh subscription (consumer group) on it.
	Subscription func(t *testing.T, lanes int) Subscription
	// LeakOptions are added to the goroutine leak check, for goroutines a
	// client library keeps for the life of the process.
	LeakOptions []goleak.Option
}

// Subscription is one topic/queue and one subscription on it.
type Subscription interface {
	// New returns an unconnected Source reading this subscription; every call
	// uses the same subscription (consumer group), so a second Source shares
	// or resumes the first one's position.
	New(t *testing.T, opts connectors.Options) connectors.Source
	// Publish durably writes the events in order, as CloudEvents in the
	// broker's binding. With several lanes it may spread them across lanes,
	// keeping the order within each lane.
	Publish(t *testing.T, events []cloudevents.Event)
}

// Generous bounds that only stop a hung test; no check depends on speed.
const (
	opTimeout = 90 * time.Second
	// quiet is how long a Read must stay blocked to count as "nothing more
	// is delivered". It bounds negative checks only.
	quiet = 3 * time.Second
)

// RunSource runs the source conformance suite.
func RunSource(t *testing.T, h SourceHarness) {
	type check struct {
		name string
		on   bool
		why  string
		run  func(*testing.T, SourceHarness)
	}
	c := h.Caps
	checks := []check{
		{"OpenClose", true, "", testOpenClose},
		{"MetadataRoundTrip", true, "", testMetadataRoundTrip},
		{"ContiguousCommit", c.ContiguousCommit && c.Persistent && c.Redelivers, "needs ContiguousCommit, Persistent, Redelivers", testContiguousCommit},
		{"PerMessageAck", !c.ContiguousCommit && c.Persistent && c.Redelivers, "needs Persistent, Redelivers and no ContiguousCommit", testPerMessageAck},
		{"ResumeAfterRestart", c.Persistent, "needs Persistent", testResumeAfterRestart},
		{"NoReadAheadBeyondWindow", true, "", testWindow},
		{"NoReadAheadBeyondCredit", c.FollowsCredit, "needs FollowsCredit", testCredit},
		{"RedeliveryAfterNack", c.Redelivers, "needs Redelivers", testRedeliveryAfterNack},
		{"ConsumerGroupHandover", c.ConsumerGroups && c.Redelivers, "needs ConsumerGroups, Redelivers", testHandover},
		{"ConcurrentClose", true, "", testConcurrentClose},
		{"NoLeakedGoroutines", true, "", testNoLeaks},
	}
	for _, ck := range checks {
		if !ck.on {
			t.Logf("conformance: %s not run: capability not declared (%s)", ck.name, ck.why)
			continue
		}
		t.Run(ck.name, func(t *testing.T) { ck.run(t, h) })
	}
}

// received is one message read from a source, with its ack.
type received struct {
	msg *connectors.Message
	ack connectors.AckFunc
}

func (r received) id() string { return r.msg.Event.ID() }

// makeEvents returns n fully populated events with ids unique to the test.
func makeEvents(t *testing.T, n int) []cloudevents.Event {
	t.Helper()
	prefix := testenv.UniqueName(t, "ev")
	evs := make([]cloudevents.Event, n)
	for i := range evs {
		evs[i] = cetest.Full(t, fmt.Sprintf("%s-%03d", prefix, i))
	}
	return evs
}

func ids(evs []cloudevents.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID()
	}
	return out
}

func receivedIDs(rs []received) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.id()
	}
	return out
}

// open creates and connects a Source; it is closed when the test ends (a
// second Close is a no-op by contract).
func open(t *testing.T, sub Subscription, opts connectors.Options) connectors.Source {
	t.Helper()
	src := sub.New(t, opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = src.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return src
}

func closeSource(t *testing.T, src connectors.Source, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return src.Close(ctx)
}

// readN reads n messages, failing the test if they do not all arrive.
func readN(t *testing.T, src connectors.Source, n int) []received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	out := make([]received, 0, n)
	for len(out) < n {
		msg, ack, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("Read %d of %d: %v (got %v)", len(out)+1, n, err, receivedIDs(out))
		}
		if msg == nil || ack == nil {
			t.Fatalf("Read returned a nil message or ack without error")
		}
		out = append(out, received{msg, ack})
	}
	return out
}

// expectQuiet fails the test if Read yields a message within the quiet period.
func expectQuiet(t *testing.T, src connectors.Source, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), quiet)
	defer cancel()
	msg, _, err := src.Read(ctx)
	if err == nil {
		t.Fatalf("%s: Read returned %q, want no message", what, msg.Event.ID())
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s: Read: %v, want context.DeadlineExceeded", what, err)
	}
}

func ackAll(t *testing.T, rs []received) {
	t.Helper()
	for _, r := range rs {
		if err := r.ack(context.Background(), nil); err != nil {
			t.Fatalf("ack %s: %v", r.id(), err)
		}
	}
}

func testOpenClose(t *testing.T, h SourceHarness) {
	sub := h.Subscription(t, 1)
	src := sub.New(t, connectors.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if hs, ok := src.(connectors.Health); ok {
		if err := hs.Health(); err != nil {
			t.Errorf("Health after Connect: %v", err)
		}
	}
	if err := closeSource(t, src, 30*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := closeSource(t, src, 30*time.Second); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := src.Read(ctx); !errors.Is(err, connectors.ErrClosed) {
		t.Fatalf("Read after Close: %v, want ErrClosed", err)
	}
	if hs, ok := src.(connectors.Health); ok && hs.Health() == nil {
		t.Errorf("Health after Close = nil, want an error")
	}

	// Close without Connect releases nothing and does not block.
	idle := sub.New(t, connectors.Options{})
	if err := closeSource(t, idle, 30*time.Second); err != nil {
		t.Fatalf("Close without Connect: %v", err)
	}
}

func testMetadataRoundTrip(t *testing.T, h SourceHarness) {
	sub := h.Subscription(t, 1)
	evs := makeEvents(t, 5)
	// One plain event too: no optional attributes, no extensions, no data.
	plain := cetest.New(t, testenv.UniqueName(t, "plain"), nil)
	evs = append(evs, plain)
	sub.Publish(t, evs)
	src := open(t, sub, connectors.Options{})
	got := readN(t, src, len(evs))
	byID := map[string]received{}
	for _, r := range got {
		if r.msg.DecodeErr != nil {
			t.Errorf("message %s: DecodeErr = %v", r.id(), r.msg.DecodeErr)
		}
		if r.msg.Lane == "" {
			t.Errorf("message %s: empty Lane", r.id())
		}
		if r.msg.Coordinates.System == "" || r.msg.Coordinates.Topic == "" {
			t.Errorf("message %s: incomplete Coordinates %+v", r.id(), r.msg.Coordinates)
		}
		if r.msg.Size != len(r.msg.Event.Data()) {
			t.Errorf("message %s: Size = %d, want %d", r.id(), r.msg.Size, len(r.msg.Event.Data()))
		}
		if r.msg.ReceivedAt.IsZero() {
			t.Errorf("message %s: zero ReceivedAt", r.id())
		}
		byID[r.id()] = r
	}
	for _, want := range evs {
		r, ok := byID[want.ID()]
		if !ok {
			t.Errorf("event %s not received (got %v)", want.ID(), receivedIDs(got))
			continue
		}
		cetest.Equal(t, want, r.msg.Event)
	}
	if h.Caps.Ordered && !slices.Equal(receivedIDs(got), ids(evs)) {
		t.Errorf("order = %v, want %v", receivedIDs(got), ids(evs))
	}
	ackAll(t, got)
}

// testContiguousCommit: ack 0..9 except 3, reopen: redelivery starts at 3.
func testContiguousCommit(t *testing.T, h SourceHarness) {
	sub := h.Subscription(t, 1)
	evs := makeEvents(t, 10)
	sub.Publish(t, evs)
	src := open(t, sub, connectors.Options{})
	got := readN(t, src, 10)
	if !slices.Equal(receivedIDs(got), ids(evs)) {
		t.Fatalf("order = %v, want %v", receivedIDs(got), ids(evs))
	}
	for i, r := range got {
		if i == 3 {
			continue
		}
		if err := r.ack(context.Background(), nil); err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
	}
	// Message 3 is never acknowledged: Close gives up on it when ctx ends.
	_ = closeSource(t, src, 2*time.Second)
	if rv := got[3].msg.Revoked; rv != nil {
		select {
		case <-rv:
		default:
			t.Errorf("Revoked of an abandoned message still open after Close")
		}
	}
	if err := got[3].ack(context.Background(), nil); err == nil {
		t.Errorf("ack after Close = nil, want an error")
	}

	src2 := open(t, sub, connectors.Options{})
	again := readN(t, src2, 7)
	if want := ids(evs)[3:]; !slices.Equal(receivedIDs(again), want) {
		t.Fatalf("redelivered %v, want %v", receivedIDs(again), want)
	}
	ackAll(t, again)
	expectQuiet(t, src2, "after redelivery")
}

// testPerMessageAck: ack all but one, reopen: only that one comes back.
func testPerMessageAck(t *testing.T, h SourceHarness) {
	sub := h.Subscription(t, 1)
	evs := makeEvents(t, 10)
	sub.Publish(t, evs)
	src := open(t, sub, connectors.Options{})
	got := readN(t, src, 10)
	for i, r := range got {
		if r.id() == evs[3].ID() {
			continue
		}
		if err := r.ack(context.Background(), nil); err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
	}
	_ = closeSource(t, src, 2*time.Second)
	src2 := open(t, sub, connectors.Options{})
	again := readN(t, src2, 1)
	if again[0].id() != evs[3].ID() {
		t.Fatalf("redelivered %s, want %s", again[0].id(), evs[3].ID())
	}
	ackAll(t, again)
	expectQuiet(t, src2, "after redelivery")
}

func testResumeAfterRestart(t *testing.T, h SourceHarness) {
	sub := h.Subscription(t, 1)
	first := makeEvents(t, 5)
	sub.Publish(t, first)
	src := open(t, sub, connectors.Options{})
	ackAll(t, readN(t, src, len(first)))
	if err := closeSource(t, src, 30*time.Second); err != nil {
		t.Fatalf("Close after acking everything: %v", err)
	}

	src2 := open(t, sub, connectors.Options{})
	second := makeEvents(t, 3)
	sub.Publish(t, second)
	got := readN(t, src2, len(second))
	gotIDs, wantIDs := receivedIDs(got), ids(second)
	if !h.Caps.Ordered {
		slices.Sort(gotIDs)
		slices.Sort(wantIDs)
	}
	if !slices.Equal(gotIDs, wantIDs) {
		t.Fatalf("after restart got %v, want only the new %v", receivedIDs(got), ids(second))
	}
	ackAll(t, got)
	expectQuiet(t, src2, "after the new messages")
}

// testWindow: with Window=W, at most W messages are read without acks;
// acking the oldest lets exactly one more through.
func testWindow(t *testing.T, h SourceHarness) {
	const w = 3
	sub := h.Subscription(t, 1)
	evs := makeEvents(t, w+2)
	sub.Publish(t, evs)
	src := open(t, sub, connectors.Options{Window: w})
	got := readN(t, src, w)
	expectQuiet(t, src, fmt.Sprintf("window %d full", w))

	if err := got[0].ack(context.Background(), nil); err != nil {
		t.Fatalf("ack: %v", err)
	}
	more := readN(t, src, 1)
	if h.Caps.Ordered && more[0].id() != evs[w].ID() {
		t.Errorf("after ack got %s, want %s", more[0].id(), evs[w].ID())
	}
	expectQuiet(t, src, fmt.Sprintf("window %d full again", w))
	ackAll(t, append(got[1:], more...))
	ackAll(t, readN(t, src, 1))
}

// testCredit: after SetCredit(n), no Read returns a message while n are
// held unacknowledged, whether the credit was raised or lowered (lowering
// takes nothing back: acks of the oldest must bring the count under n
// first), and the Window still bounds a credit above it. Nothing is lost
// or delivered twice.
func testCredit(t *testing.T, h SourceHarness) {
	const w, total = 8, 14
	sub := h.Subscription(t, 1)
	evs := makeEvents(t, total)
	sub.Publish(t, evs)
	src := open(t, sub, connectors.Options{Window: w})
	cf, ok := src.(connectors.CreditFollower)
	if !ok {
		t.Fatalf("%T declares FollowsCredit but does not implement connectors.CreditFollower", src)
	}
	var held, all []received
	read := func(n int) {
		t.Helper()
		got := readN(t, src, n)
		held, all = append(held, got...), append(all, got...)
	}
	ackOldest := func(n int) {
		t.Helper()
		ackAll(t, held[:n])
		held = held[n:]
	}

	cf.SetCredit(3)
	read(3)
	expectQuiet(t, src, "credit 3 held")
	cf.SetCredit(5) // raised
	read(2)
	expectQuiet(t, src, "credit 5 held")
	cf.SetCredit(2) // lowered below the 5 held
	ackOldest(3)
	expectQuiet(t, src, "2 held under a lowered credit of 2")
	ackOldest(1)
	read(1)
	expectQuiet(t, src, "credit 2 held again")
	cf.SetCredit(100) // above the window: the window bounds
	read(w - len(held))
	expectQuiet(t, src, fmt.Sprintf("window %d held under credit 100", w))
	ackOldest(len(held))
	read(total - len(all))
	ackOldest(len(held))

	seen := map[string]bool{}
	for _, r := range all {
		if seen[r.id()] {
			t.Errorf("%s delivered twice", r.id())
		}
		seen[r.id()] = true
	}
	for _, e := range evs {
		if !seen[e.ID()] {
			t.Errorf("%s never delivered", e.ID())
		}
	}
}

// testRedeliveryAfterNack: a nacked message comes back, at the latest to the
// next Source; acked ones before it do not.
func testRedeliveryAfterNack(t *testing.T, h SourceHarness) {
	sub := h.Subscription(t, 1)
	evs := makeEvents(t, 3)
	sub.Publish(t, evs)
	src := open(t, sub, connectors.Options{})
	got := readN(t, src, 3)
	for _, r := range got {
		var err error
		if r.id() == evs[1].ID() {
			err = errors.New("conformance: processing failed")
		}
		if aerr := r.ack(context.Background(), err); aerr != nil {
			t.Fatalf("ack %s (err=%v): %v", r.id(), err, aerr)
		}
	}
	if err := closeSource(t, src, 30*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}

	src2 := open(t, sub, connectors.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	for {
		msg, ack, err := src2.Read(ctx)
		if err != nil {
			t.Fatalf("nacked message %s not redelivered: %v", evs[1].ID(), err)
		}
		if aerr := ack(context.Background(), nil); aerr != nil {
			t.Fatalf("ack: %v", aerr)
		}
		switch msg.Event.ID() {
		case evs[0].ID():
			t.Fatalf("acknowledged message %s redelivered", evs[0].ID())
		case evs[1].ID():
			return
		}
	}
}

// collector reads a source in the background and acks what the policy says.
type collector struct {
	src  connectors.Source
	keep func(n int) bool // ack the n-th message (0-based)?

	mu     sync.Mutex
	got    []received
	acked  map[string]bool
	lanes  map[string]bool
	err    error
	done   chan struct{}
	cancel context.CancelFunc
}

func collect(src connectors.Source, keep func(int) bool) *collector {
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{src: src, keep: keep, acked: map[string]bool{}, lanes: map[string]bool{}, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(c.done)
		for {
			msg, ack, err := src.Read(ctx)
			if err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
				return
			}
			c.mu.Lock()
			n := len(c.got)
			c.got = append(c.got, received{msg, ack})
			c.lanes[msg.Lane] = true
			c.mu.Unlock()
			if c.keep(n) && ack(context.Background(), nil) == nil {
				c.mu.Lock()
				c.acked[msg.Event.ID()] = true
				c.mu.Unlock()
			}
		}
	}()
	return c
}

// stop ends the reader goroutine and waits for it.
func (c *collector) stop() {
	c.cancel()
	<-c.done
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(opTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testHandover: two consumers share the lanes; when one closes with
// messages unacknowledged, the other receives every one of them.
func testHandover(t *testing.T, h SourceHarness) {
	const lanes, n = 4, 40
	sub := h.Subscription(t, lanes)
	a := open(t, sub, connectors.Options{})
	b := open(t, sub, connectors.Options{})
	ca := collect(a, func(i int) bool { return i < 3 }) // a acks only its first 3
	cb := collect(b, func(int) bool { return true })
	defer cb.stop()
	defer ca.stop()

	evs := makeEvents(t, n)
	sub.Publish(t, evs)
	waitFor(t, "both consumers to receive messages", func() bool { return ca.count() >= 5 && cb.count() >= 1 })

	ca.stop()
	_ = closeSource(t, a, 2*time.Second)
	ca.mu.Lock()
	aAcked := maps.Clone(ca.acked)
	aLanes := maps.Clone(ca.lanes)
	ca.mu.Unlock()

	missing := func() []string {
		cb.mu.Lock()
		defer cb.mu.Unlock()
		var out []string
		for _, e := range evs {
			if !aAcked[e.ID()] && !cb.acked[e.ID()] {
				out = append(out, e.ID())
			}
		}
		return out
	}
	deadline := time.Now().Add(opTimeout)
	for m := missing(); len(m) > 0; m = missing() {
		if time.Now().After(deadline) {
			t.Fatalf("after the first consumer closed, %d messages never reached the second: %v", len(m), m)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if h.Caps.ContiguousCommit {
		cb.mu.Lock()
		bLanes := maps.Clone(cb.lanes)
		cb.mu.Unlock()
		for l := range aLanes {
			if !bLanes[l] {
				t.Errorf("lane %s of the closed consumer was not taken over (second consumer read %v)", l, bLanes)
			}
		}
	}
}

// testConcurrentClose: Close while a Read is blocked and acks are in flight.
func testConcurrentClose(t *testing.T, h SourceHarness) {
	sub := h.Subscription(t, 2)
	evs := makeEvents(t, 20)
	sub.Publish(t, evs)
	src := open(t, sub, connectors.Options{})
	held := readN(t, src, 10)

	var wg sync.WaitGroup
	readErr := make(chan error, 1)
	wg.Go(func() {
		for {
			_, ack, err := src.Read(context.Background())
			if err != nil {
				readErr <- err
				return
			}
			_ = ack(context.Background(), nil) // may race with Close: any result but a panic
		}
	})
	start := make(chan struct{})
	for _, r := range held {
		wg.Go(func() {
			<-start
			_ = r.ack(context.Background(), nil)
		})
	}
	closeErr := make(chan error, 1)
	wg.Go(func() {
		<-start
		closeErr <- closeSource(t, src, 60*time.Second)
	})
	close(start)

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * opTimeout):
		t.Fatal("deadlock: Close, Read or acks did not return")
	}
	if err := <-closeErr; err != nil {
		t.Errorf("Close with every message acknowledged: %v", err)
	}
	if err := <-readErr; !errors.Is(err, connectors.ErrClosed) {
		t.Errorf("blocked Read returned %v, want ErrClosed", err)
	}
	if err := closeSource(t, src, 5*time.Second); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, r := range held {
		if err := r.ack(context.Background(), nil); err == nil {
			t.Errorf("second ack of %s after Close = nil, want an error", r.id())
		}
	}
}

func testNoLeaks(t *testing.T, h SourceHarness) {
	sub := h.Subscription(t, 2)
	evs := makeEvents(t, 6)
	opts := append([]goleak.Option{goleak.IgnoreCurrent()}, h.LeakOptions...)
	sub.Publish(t, evs)
	src := sub.New(t, connectors.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	got := readN(t, src, len(evs))
	ackAll(t, got[:len(got)-1])
	// One message is nacked so that Close has nothing left to wait for.
	if err := got[len(got)-1].ack(context.Background(), errors.New("conformance: nack")); err != nil {
		t.Fatalf("nack: %v", err)
	}
	if err := closeSource(t, src, 30*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	goleak.VerifyNone(t, opts...)
}
