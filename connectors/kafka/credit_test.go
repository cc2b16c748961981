package kafka

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
)

type heldRec struct {
	msg *connectors.Message
	ack connectors.AckFunc
}

// TestCreditSplitAcrossPartitions: the credit is the source's total, split
// evenly over the owned partitions (at least one each) and capped by the
// window; raising it lets lanes read on, lowering it stops a lane until
// acks bring it under its new share.
func TestCreditSplitAcrossPartitions(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.UniqueName(t, "credit"), testenv.UniqueName(t, "grp")
	const perLane = 10
	kafkatest.CreateTopic(t, brokers, topic, 2)
	evs := make([]cloudevents.Event, 2*perLane)
	for i := range evs {
		evs[i] = cetest.Full(t, fmt.Sprintf("%s-%02d", topic, i))
	}
	kafkatest.ProduceEvents(t, brokers, topic, 2, evs)

	src := newTestSource(t, brokers, topic, group, connectors.Options{Window: 8})
	connect(t, src)
	held := map[string][]heldRec{} // lane → unacknowledged, oldest first
	seen := map[string]int{}
	read := func(n int) {
		t.Helper()
		for range n {
			msg, ack := readOne(t, src)
			held[msg.Lane] = append(held[msg.Lane], heldRec{msg, ack})
			seen[msg.Event.ID()]++
		}
	}
	quiet := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if msg, _, err := src.Read(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: Read = %v, %v; want nothing", what, msg, err)
		}
	}
	ackOldest := func(lane string) {
		t.Helper()
		mustAck(t, held[lane][0].ack, nil)
		held[lane] = held[lane][1:]
	}
	perLaneHeld := func(want int) {
		t.Helper()
		if len(held) != 2 {
			t.Fatalf("lanes %d, want 2", len(held))
		}
		for lane, h := range held {
			if len(h) != want {
				t.Fatalf("lane %s holds %d, want %d", lane, len(h), want)
			}
		}
	}

	src.SetCredit(4) // 2 per partition
	read(4)
	perLaneHeld(2)
	quiet("credit 4 over 2 partitions held")

	src.SetCredit(6) // 3 per partition
	read(2)
	perLaneHeld(3)
	quiet("credit 6 held")

	src.SetCredit(3) // 1 per partition (3/2)
	for lane := range held {
		ackOldest(lane)
	}
	quiet("2 per partition held under a share of 1")
	for lane := range held {
		for len(held[lane]) > 0 {
			ackOldest(lane)
		}
	}
	read(2)
	perLaneHeld(1)
	quiet("share of 1 full again")

	src.SetCredit(1) // 0 per partition rounds up to one: a lane never stalls
	for lane := range held {
		ackOldest(lane)
	}
	read(2)
	perLaneHeld(1)
	quiet("1 per partition held under credit 1")

	src.SetCredit(1000) // the window (8) bounds each partition
	read(2*perLane - len(seen))
	for lane := range held {
		for len(held[lane]) > 0 {
			ackOldest(lane)
		}
	}
	for _, e := range evs {
		if seen[e.ID()] != 1 {
			t.Errorf("%s delivered %d times, want 1", e.ID(), seen[e.ID()])
		}
	}
}

// TestCreditCountsUnacknowledged: a lane's share of the credit counts the
// messages the runtime holds (delivered, not acknowledged), not those behind
// an unacknowledged one: one message held long (a retry waiting out a
// Retry-After) does not stop its partition while later ones are acked. The
// window still bounds what is delivered and not committable.
func TestCreditCountsUnacknowledged(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.UniqueName(t, "credit-held"), testenv.UniqueName(t, "grp")
	const events, window = 12, 6
	kafkatest.CreateTopic(t, brokers, topic, 1)
	evs := make([]cloudevents.Event, events)
	for i := range evs {
		evs[i] = cetest.Full(t, fmt.Sprintf("%s-%02d", topic, i))
	}
	kafkatest.ProduceEvents(t, brokers, topic, 1, evs)

	src := newTestSource(t, brokers, topic, group, connectors.Options{Window: window})
	src.SetCredit(2) // one partition: a share of 2
	connect(t, src)
	quiet := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if msg, _, err := src.Read(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: Read = %v, %v; want nothing", what, msg, err)
		}
	}

	first, ackFirst := readOne(t, src) // held until the end
	if first.Event.ID() != evs[0].ID() {
		t.Fatalf("first = %s, want %s", first.Event.ID(), evs[0].ID())
	}
	_, ack := readOne(t, src)
	quiet("share of 2 held")
	// Acking the later one frees a place in the share although nothing
	// is committable yet; up to the window, the lane goes on.
	for i := 2; i < window; i++ {
		mustAck(t, ack, nil)
		msg, next := readOne(t, src)
		if msg.Event.ID() != evs[i].ID() {
			t.Fatalf("read %s, want %s", msg.Event.ID(), evs[i].ID())
		}
		ack = next
	}
	mustAck(t, ack, nil)
	quiet("window full behind the held first message")
	mustAck(t, ackFirst, nil)
	for i := window; i < events; i++ {
		msg, ack := readOne(t, src)
		if msg.Event.ID() != evs[i].ID() {
			t.Fatalf("read %s, want %s", msg.Event.ID(), evs[i].ID())
		}
		mustAck(t, ack, nil)
	}
}
