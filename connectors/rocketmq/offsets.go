package rocketmq

import (
	"errors"
	"fmt"
)

// Errors returned by offsetTracker. They describe misuse by the caller (an
// AckFunc called twice, an offset never delivered); the tracker is left
// unchanged when they are returned.
var (
	errUnknownOffset = errors.New("offset was not delivered or is already committed")
	errAckedTwice    = errors.New("message acknowledged twice")
	errOutOfOrder    = errors.New("offset delivered out of order")
)

type offsetState uint8

const (
	offsetPending offsetState = iota // delivered, no ack yet
	offsetDone                       // acked (or handed to the broker's retry topic)
	offsetFailed                     // nacked with retry: sluice: never committed by this consumer
)

type trackedOffset struct {
	offset int64
	state  offsetState
}

// offsetTracker follows the messages of one queue delivered to the runtime,
// in delivery (= queue) order, and computes what is committable: the
// position after the longest done prefix. Queue offsets may have gaps (tag
// and SQL filtering), so the successor of an offset is the next delivered
// one, not offset+1.
//
// The RocketMQ client commits the lowest offset still held in its process
// queue; the tracker mirrors that for the delivered part so that the window
// bounds what a crash re-delivers, and so that Close can tell when the
// client's commit has caught up.
//
// Not safe for concurrent use: the Source's mutex serialises access.
type offsetTracker struct {
	queue   []trackedOffset // from the first offset that is not done
	head    int
	next    int64 // committable position; valid when hasNext
	hasNext bool
	last    int64 // last delivered offset; valid when delivered
	started bool
	pending int
}

// Delivered records that offset was handed to the runtime. Offsets must
// increase.
func (t *offsetTracker) Delivered(offset int64) error {
	if t.started && offset <= t.last {
		return fmt.Errorf("deliver %d after %d: %w", offset, t.last, errOutOfOrder)
	}
	t.queue = append(t.queue, trackedOffset{offset: offset})
	t.last, t.started = offset, true
	t.pending++
	return nil
}

// Resolve records the acknowledgement of offset: done or failed.
func (t *offsetTracker) Resolve(offset int64, done bool) error {
	live := t.queue[t.head:]
	lo, hi := 0, len(live)
	for lo < hi { // binary search: offsets ascend
		m := (lo + hi) / 2
		if live[m].offset < offset {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(live) || live[lo].offset != offset {
		return fmt.Errorf("ack %d: %w", offset, errUnknownOffset)
	}
	e := &live[lo]
	if e.state != offsetPending {
		return fmt.Errorf("ack %d: %w", offset, errAckedTwice)
	}
	t.pending--
	if !done {
		e.state = offsetFailed
		return nil
	}
	e.state = offsetDone
	for t.head < len(t.queue) && t.queue[t.head].state == offsetDone {
		t.next, t.hasNext = t.queue[t.head].offset+1, true
		t.head++
	}
	// Reclaim the done prefix once it dominates, so memory follows the
	// uncommitted span.
	if t.head == len(t.queue) {
		t.queue, t.head = t.queue[:0], 0
	} else if t.head > 64 && t.head*2 > len(t.queue) {
		n := copy(t.queue, t.queue[t.head:])
		t.queue, t.head = t.queue[:n], 0
	}
	return nil
}

// Committable returns the position after the done prefix, and false when
// no delivered offset is done yet.
func (t *offsetTracker) Committable() (int64, bool) { return t.next, t.hasNext }

// Uncommitted is the number of delivered offsets at or after the committable
// position: what a crash now would re-deliver of what was delivered.
func (t *offsetTracker) Uncommitted() int { return len(t.queue) - t.head }

// Pending is the number of delivered offsets without an acknowledgement.
func (t *offsetTracker) Pending() int { return t.pending }
