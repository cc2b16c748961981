package rabbitmq

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rabbitmq/rabbittest"
	"github.com/sluicehq/sluice/internal/testenv"
)

// prefetch is the live session's consumer prefetch (0 while paused or
// reconnecting).
func (s *Source) prefetch() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return 0
	}
	return s.sess.prefetch
}

// quietFor is how long a Read must stay blocked to count as "nothing
// delivered"; it bounds a negative check only.
const quietFor = 2 * time.Second

type heldMsg struct {
	msg *connectors.Message
	ack connectors.AckFunc
}

// TestCreditFollowsWhileConsuming raises and lowers the credit while
// consuming a backlog, acking like the engine (it holds at most the credit
// and acks the oldest first), and kills the connection once on the way:
//   - a Read never returns while the credit's worth is held unacknowledged;
//   - after a change, from the second Read on, the consumer's prefetch is at
//     most the credit (the supervisor replaces the consumer before handing
//     over anything more), and after an increase it reaches the credit;
//   - the broker never has more than twice the larger of the current and
//     the previous credit delivered and unacknowledged (published - acked -
//     ready);
//   - nothing is lost, nothing is acknowledged twice but what the kill
//     redelivered, and the queue ends empty.
func TestCreditFollowsWhileConsuming(t *testing.T) {
	url := testenv.RabbitURL(t)
	q := testenv.UniqueName(t, "credit")
	rabbittest.DeclareQueue(t, url, q, nil)
	credits := []int{40, 200, 15, 120, 3, 90, 60}
	const perPhase, window = 150, 500
	total := perPhase * len(credits)
	evs := makeEvents(t, q, total)
	rabbittest.PublishEvents(t, url, "", q, evs)

	name := testenv.UniqueName(t, "p")
	src := newTestSource(t, testSpec(url, q), connectors.Options{Window: window, Name: name})
	if got := src.prefetch(); got != 0 {
		t.Fatalf("prefetch before Connect = %d", got)
	}
	src.SetCredit(credits[0]) // before Connect: the first consumer starts with it
	connect(t, src)
	if got := src.prefetch(); got != credits[0] {
		t.Fatalf("first consumer's prefetch = %d, want the credit %d", got, credits[0])
	}

	acked := map[string]int{}
	var held []heldMsg
	ackOldest := func() {
		h := held[0]
		held = held[1:]
		err := h.ack(context.Background(), nil)
		switch {
		case err == nil:
			acked[h.msg.Event.ID()]++
		case errors.Is(err, connectors.ErrRevoked):
			// Its channel died: the broker redelivers it.
		default:
			t.Fatalf("ack %s: %v", h.msg.Event.ID(), err)
		}
	}
	brokerHeld := func() int {
		return total - len(acked) - rabbittest.Depth(t, url, q)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	prev := credits[0]
	killed := false
	for phase, c := range credits {
		src.SetCredit(c)
		followed := false
		for i := 0; i < perPhase && len(acked)+len(held) < total; i++ {
			for len(held) >= c {
				ackOldest()
			}
			msg, ack, err := src.Read(ctx)
			if err != nil {
				t.Fatalf("phase %d (credit %d) Read: %v", phase, c, err)
			}
			held = append(held, heldMsg{msg, ack})
			if i >= 1 {
				p := src.prefetch()
				if p > c {
					t.Fatalf("phase %d: prefetch %d after read %d, want at most the credit %d", phase, p, i+1, c)
				}
				followed = followed || p == c
			}
			if i%25 == 5 {
				if b, bound := brokerHeld(), 2*max(c, prev); b > bound {
					t.Fatalf("phase %d (credit %d, previous %d): broker has %d unacknowledged, want at most %d", phase, c, prev, b, bound)
				}
			}
			if phase == 3 && i == 50 && !killed {
				killed = true
				if n := rabbittest.KillConnections(t, name); n != 1 {
					t.Fatalf("closed %d connections, want 1", n)
				}
				waitUntil(t, "reconnect", func() bool { return src.Health() == nil })
			}
		}
		// After a decrease the cancelled consumer's backlog may outlast the
		// phase (the consumer stays paused meanwhile).
		if c > prev && !followed {
			t.Errorf("phase %d: the prefetch never reached the credit %d", phase, c)
		}
		prev = c
	}
	for {
		for len(held) > 0 {
			ackOldest()
		}
		if len(acked) == total {
			break
		}
		msg, ack, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("final Read (%d of %d acked): %v", len(acked), total, err)
		}
		held = append(held, heldMsg{msg, ack})
	}
	// An ack written to the dead channel's batcher but not yet sent when
	// the connection died is redelivered (at-least-once): bounded by the
	// credit at the kill.
	twice := 0
	for _, e := range evs {
		n := acked[e.ID()]
		if n < 1 {
			t.Errorf("%s never acknowledged", e.ID())
		}
		twice += max(n-1, 0)
	}
	if twice > credits[3] {
		t.Errorf("%d messages acknowledged again after the kill, more than the credit %d", twice, credits[3])
	}
	if !killed {
		t.Fatal("the connection was never killed")
	}
	waitUntil(t, "queue drained", func() bool { return rabbittest.Depth(t, url, q) == 0 })
	if got := src.prefetch(); got > credits[len(credits)-1] {
		t.Errorf("final prefetch %d, want at most %d", got, credits[len(credits)-1])
	}
}

// TestCreditLoweredBelowHeldPausesConsumer: lowering the credit below what
// is held cancels the consumer and starts none until the held deliveries
// settle below the new credit; the backlog of the cancelled consumer is
// still handed over, and nothing is lost.
func TestCreditLoweredBelowHeldPausesConsumer(t *testing.T) {
	url := testenv.RabbitURL(t)
	q := testenv.UniqueName(t, "pause")
	rabbittest.DeclareQueue(t, url, q, nil)
	const total = 40
	evs := makeEvents(t, q, total)
	rabbittest.PublishEvents(t, url, "", q, evs)

	src := newTestSource(t, testSpec(url, q), connectors.Options{Window: 20})
	connect(t, src)
	var held []heldMsg
	for range 10 {
		msg, ack := readOne(t, src)
		held = append(held, heldMsg{msg, ack})
	}
	// The broker delivers up to the window of 20 to this channel.
	waitUntil(t, "window delivered", func() bool { return rabbittest.Depth(t, url, q) == total-20 })

	src.SetCredit(4)
	waitUntil(t, "consumer paused", func() bool { return src.prefetch() == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), quietFor)
	_, _, err := src.Read(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read with 10 held under credit 4 = %v, want nothing (DeadlineExceeded)", err)
	}
	if d := rabbittest.Depth(t, url, q); d != total-20 {
		t.Fatalf("paused consumer: %d ready, want %d (nothing more delivered)", d, total-20)
	}

	seen := map[string]int{}
	for _, h := range held {
		seen[h.msg.Event.ID()]++
		if err := h.ack(context.Background(), nil); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	// The cancelled consumer's other 10 deliveries come first, at most 4
	// held at a time; then a new consumer with prefetch 4 takes the rest.
	held = held[:0]
	for len(seen) < total {
		if len(held) == 4 {
			if err := held[0].ack(context.Background(), nil); err != nil {
				t.Fatalf("ack: %v", err)
			}
			held = held[1:]
		}
		msg, ack := readOne(t, src)
		seen[msg.Event.ID()]++
		held = append(held, heldMsg{msg, ack})
		if p := src.prefetch(); p > 4 {
			t.Fatalf("prefetch %d under credit 4", p)
		}
	}
	for _, h := range held {
		if err := h.ack(context.Background(), nil); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	for _, e := range evs {
		if seen[e.ID()] != 1 {
			t.Errorf("%s delivered %d times, want 1", e.ID(), seen[e.ID()])
		}
	}
	waitUntil(t, "queue drained", func() bool { return rabbittest.Depth(t, url, q) == 0 })
}
