package rocketmq

import (
	"context"
	"fmt"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqtest"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
)

// buffered is how many messages the source holds pulled and not yet
// collected by their consume callbacks, over all lanes.
func (s *Source) buffered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.order {
		n += len(l.entries)
	}
	return n
}

// TestCreditBoundsPulls: the pull window follows the credit. Under a
// credit of 4 the client pulls at most one batch past it (4 + 32 - 1)
// although the window is 100, whatever the backlog; raising the credit lets
// it pull up to the window (+ a batch); nothing is lost or duplicated.
func TestCreditBoundsPulls(t *testing.T) {
	ns := testenv.RocketMQNameServer(t)
	spec := pipelines.RocketMQSource{
		NameServers: []string{ns},
		Topic:       testenv.UniqueName(t, "credit"),
		Group:       testenv.UniqueName(t, "grp"),
	}
	testenv.RocketMQCreateTopic(t, spec.Topic, 1)
	const total, window, credit = 300, 100, 4
	evs := make([]cloudevents.Event, total)
	for i := range evs {
		evs[i] = cetest.Full(t, fmt.Sprintf("%s-%03d", spec.Topic, i))
	}
	rocketmqtest.PublishEvents(t, spec.NameServers, spec.Topic, 1, evs)

	src := newTestSource(t, spec, connectorsOptions(window))
	src.SetCredit(credit)
	connect(t, src)
	lowBound := credit + maxPullBatch - 1
	seen := map[string]int{}
	// Consume 100 holding at most the credit, checking the buffer each time.
	var held []func()
	for range 100 {
		if len(held) == credit {
			held[0]()
			held = held[1:]
		}
		msg, ack := readOne(t, src)
		seen[msg.Event.ID()]++
		held = append(held, func() { creditAck(t, ack) })
		if b := src.buffered(); b > lowBound {
			t.Fatalf("credit %d: %d messages buffered, want at most %d", credit, b, lowBound)
		}
	}
	expectNothing(t, src, 2*time.Second)

	src.SetCredit(1000)
	deadline := time.Now().Add(90 * time.Second)
	for src.buffered() <= lowBound {
		if time.Now().After(deadline) {
			t.Fatalf("credit raised: still %d buffered, want more than %d", src.buffered(), lowBound)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for len(seen) < total {
		for _, ack := range held {
			ack()
		}
		held = held[:0]
		msg, ack := readOne(t, src)
		seen[msg.Event.ID()]++
		held = append(held, func() { creditAck(t, ack) })
		if b := src.buffered(); b > window+maxPullBatch-1 {
			t.Fatalf("window %d: %d messages buffered", window, b)
		}
	}
	for _, ack := range held {
		ack()
	}
	for _, e := range evs {
		if seen[e.ID()] != 1 {
			t.Errorf("%s delivered %d times, want 1", e.ID(), seen[e.ID()])
		}
	}
}

func creditAck(t *testing.T, ack func(context.Context, error) error) {
	t.Helper()
	if err := ack(context.Background(), nil); err != nil {
		t.Fatalf("ack: %v", err)
	}
}
