package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rabbitmq/rabbittest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
)

// frame is one ack or nack written by the batcher.
type frame struct {
	op       string // "ack" or "nack"
	tag      uint64
	multiple bool
}

// recorder is an amqp.Acknowledger that records frames.
type recorder struct {
	mu     sync.Mutex
	frames []frame
}

func (r *recorder) Ack(tag uint64, multiple bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames = append(r.frames, frame{"ack", tag, multiple})
	return nil
}

func (r *recorder) Nack(tag uint64, multiple, _ bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames = append(r.frames, frame{"nack", tag, multiple})
	return nil
}

func (r *recorder) Reject(tag uint64, _ bool) error { return r.Nack(tag, false, false) }

func (r *recorder) take() []frame {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.frames
	r.frames = nil
	return f
}

// TestAckBatcherFrames drives the batcher directly (no linger goroutine;
// linger flushes are called by hand) and checks the frames it writes:
//   - done tags behind a gap are not covered by a multiple ack; the
//     contiguous prefix is one multiple ack of its highest done tag;
//   - a nacked tag in the middle is settled, and the multiple ack that
//     passes it is of a tag still unacknowledged on the broker;
//   - done tags behind a gap are sent individually at the linger flush
//     staleLingers rounds after they were marked, or once a batch of them
//     waits;
//   - no tag is ever acknowledged twice.
func TestAckBatcherFrames(t *testing.T) {
	rec := &recorder{}
	b := newAckBatcher(rec, time.Hour)
	const batch = 4
	markAll := func(tags ...uint64) {
		for _, tag := range tags {
			if b.mark(tag, batch) {
				if err := b.flush(batch, false); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	expect := func(step string, want ...frame) {
		t.Helper()
		if got := rec.take(); !slices.Equal(got, want) {
			t.Fatalf("%s: frames %v, want %v", step, got, want)
		}
	}

	// 1 is processing; 2 and 3 are done behind it.
	markAll(2, 3)
	if err := b.flush(batch, true); err != nil { // round 0 → 1: they just arrived
		t.Fatal(err)
	}
	expect("gap at 1, first linger")
	markAll(1)
	expect("prefix of three, below the batch")
	if err := b.flush(batch, true); err != nil {
		t.Fatal(err)
	}
	expect("prefix 1..3", frame{"ack", 3, true})

	// 4 processing, 5 nacked, 6 and 7 done: at the linger nothing passes 4.
	if err := rec.Nack(5, false, true); err != nil {
		t.Fatal(err)
	}
	b.settled(5)
	markAll(6, 7)
	expect("nack of 5 only", frame{"nack", 5, false})
	markAll(4)
	if err := b.flush(batch, true); err != nil {
		t.Fatal(err)
	}
	// 5 is settled; the multiple ack is of 7, still unacknowledged.
	expect("prefix 4..7 past the nack", frame{"ack", 7, true})

	// 8 stuck: 9 and 10 wait staleLingers linger flushes, then go
	// individually.
	markAll(9, 10)
	for range staleLingers {
		if err := b.flush(batch, true); err != nil {
			t.Fatal(err)
		}
	}
	expect("tags behind a gap, not stale yet")
	if err := b.flush(batch, true); err != nil {
		t.Fatal(err)
	}
	expect("stale tags behind a gap", frame{"ack", 9, false}, frame{"ack", 10, false})
	// A batch behind the gap goes at once, individually.
	markAll(11, 12, 13, 14)
	expect("a batch behind a gap", frame{"ack", 11, false}, frame{"ack", 12, false}, frame{"ack", 13, false}, frame{"ack", 14, false})
	// 8 done: the prefix passes 9..14 (all settled) with nothing to send
	// but 8 itself, as a multiple ack of 8 (covering nothing else).
	markAll(8, 15)
	if err := b.flush(0, false); err != nil {
		t.Fatal(err)
	}
	expect("8 and 15", frame{"ack", 15, true})
	if b.base != 15 || len(b.sent) != 0 || len(b.done) != 0 {
		t.Errorf("after everything settled: base %d, sent %v, done %v", b.base, b.sent, b.done)
	}
}

// TestAddSentMerges checks the settled spans stay sorted, disjoint and
// merged.
func TestAddSentMerges(t *testing.T) {
	b := newAckBatcher(&recorder{}, time.Hour)
	for _, tag := range []uint64{5, 9, 7, 6, 3, 8, 2} {
		b.addSent(tag)
	}
	if want := []span{{2, 3}, {5, 9}}; !slices.Equal(b.sent, want) {
		t.Errorf("spans %v, want %v", b.sent, want)
	}
}

// sessions is how many sessions src opened (a channel error from a bad
// ack — an unknown or twice-acked tag — makes it reconnect).
func sessions(src *Source) int {
	src.mu.Lock()
	defer src.mu.Unlock()
	return src.gen
}

// TestCoalescedAcksOutOfOrder acks a window's worth out of order on the
// real broker, holding two messages: the broker ends up with exactly the
// two held unacknowledged while the source stays open (done messages
// behind them are not held back for long), no bad tag closed the channel,
// and after Close exactly the two are redelivered.
func TestCoalescedAcksOutOfOrder(t *testing.T) {
	url := testenv.RabbitURL(t)
	q := testenv.UniqueName(t, "ooo")
	rabbittest.DeclareQueue(t, url, q, nil)
	const total = 40
	evs := makeEvents(t, q, total)
	rabbittest.PublishEvents(t, url, "", q, evs)

	src := newTestSource(t, testSpec(url, q), connectors.Options{Window: total})
	connect(t, src)
	var held []heldMsg
	for range total {
		msg, ack := readOne(t, src)
		held = append(held, heldMsg{msg, ack})
	}
	keep := map[string]bool{evs[3].ID(): true, evs[22].ID(): true}
	// Newest first: nothing is contiguous until the oldest are acked.
	for i := len(held) - 1; i >= 0; i-- {
		if keep[held[i].msg.Event.ID()] {
			continue
		}
		if err := held[i].ack(context.Background(), nil); err != nil {
			t.Fatalf("ack %s: %v", held[i].msg.Event.ID(), err)
		}
	}
	waitUntil(t, "the broker to hold only the two unacknowledged", func() bool { return rabbittest.Unacked(t, q) == 2 })
	if n := sessions(src); n != 1 {
		t.Fatalf("%d sessions: an ack frame closed the channel", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	err := src.Close(ctx)
	cancel()
	if err == nil {
		t.Error("Close with two messages held = nil, want the count left")
	}

	again := newTestSource(t, testSpec(url, q), connectors.Options{})
	connect(t, again)
	got := map[string]bool{}
	for range 2 {
		msg, ack := readOne(t, again)
		got[msg.Event.ID()] = true
		if err := ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(keep) {
		t.Errorf("redelivered %v, want %v", got, keep)
	}
	if err := again.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := rabbittest.Depth(t, url, q); d != 0 {
		t.Errorf("queue holds %d after all were acknowledged", d)
	}
}

// TestCoalescedAcksPastNack: with onNack dead-letter, a message nacked in
// the middle of acked ones — before and after they are acked — is
// dead-lettered exactly once and not covered by the multiple acks of the
// others (a multiple ack covering it first would make the nack an unknown
// tag and close the channel: the session count proves that never
// happened). The acks are held back by a long linger and a large batch,
// so that Close's flush sends them as multiple acks past the nacked tags.
func TestCoalescedAcksPastNack(t *testing.T) {
	url := testenv.RabbitURL(t)
	q, dlx, dlq := testenv.UniqueName(t, "pn"), testenv.UniqueName(t, "pnx"), testenv.UniqueName(t, "pnq")
	rabbittest.DeclareQueue(t, url, dlq, nil)
	spec := testSpec(url, q)
	spec.OnNack = pipelines.RabbitOnNackDeadLetter
	spec.Declare = &pipelines.RabbitMQDeclare{
		Queue:     pipelines.RabbitMQQueue{DeadLetterExchange: dlx},
		Exchanges: []pipelines.RabbitMQExchange{{Name: dlx, Type: "fanout"}},
	}
	rabbittest.DeleteAtCleanup(t, url, q)
	t.Cleanup(func() { deleteExchange(t, url, dlx) })
	src := newTestSource(t, spec, connectors.Options{Window: 1000}, WithAckCoalescing(1000, time.Hour))
	connect(t, src)
	if err := rabbittest.Channel(t, url).QueueBind(dlq, "", dlx, false, nil); err != nil {
		t.Fatal(err)
	}
	const total = 20
	evs := makeEvents(t, q, total)
	rabbittest.PublishEvents(t, url, "", q, evs)
	var held []heldMsg
	for range total {
		msg, ack := readOne(t, src)
		held = append(held, heldMsg{msg, ack})
	}
	nack := func(i int) {
		if err := held[i].ack(context.Background(), errors.New("give up")); err != nil {
			t.Fatalf("nack %d: %v", i, err)
		}
	}
	ack := func(from, to int) {
		for i := from; i < to; i++ {
			if err := held[i].ack(context.Background(), nil); err != nil {
				t.Fatalf("ack %d: %v", i, err)
			}
		}
	}
	ack(0, 5)
	nack(5) // after the acks before it
	ack(7, 20)
	nack(6) // after the acks on both sides
	if err := src.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := sessions(src); n != 1 {
		t.Fatalf("%d sessions: an ack frame closed the channel", n)
	}
	dead := rabbittest.ReadEvents(t, url, dlq, 2)
	ids := []string{dead[0].ID(), dead[1].ID()}
	slices.Sort(ids)
	if want := []string{evs[5].ID(), evs[6].ID()}; !slices.Equal(ids, want) {
		t.Errorf("dead-lettered %v, want %v", ids, want)
	}
	if d := rabbittest.Depth(t, url, q); d != 0 {
		t.Errorf("source queue holds %d after Close", d)
	}
	if d := rabbittest.Depth(t, url, dlq); d != 0 {
		t.Errorf("dead-letter queue holds %d more", d)
	}
}
