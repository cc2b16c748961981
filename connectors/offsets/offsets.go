// Package offsets tracks which delivered offsets of one partition or queue
// are acknowledged, and computes the contiguous committable position. The
// Kafka and RocketMQ sources share it.
package offsets

import (
	"errors"
	"fmt"
	"sort"
)

// Errors returned by Tracker. They describe misuse by the caller (an
// AckFunc called twice, an offset never delivered); the tracker state is left
// unchanged when they are returned.
var (
	ErrUnknownOffset = errors.New("offset was not delivered or is already committed")
	ErrAckedTwice    = errors.New("message acknowledged twice")
	ErrOutOfOrder    = errors.New("offset delivered out of order")
)

type entryState uint8

const (
	statePending entryState = iota // delivered, no ack yet
	stateDone                      // acked with nil: may be committed
	stateFailed                    // acked with an error (nack): never committed by this consumer
)

type trackedOffset struct {
	offset int64
	state  entryState
}

// Tracker computes the committable position of one partition from
// acknowledgements that arrive in any order.
//
// It only considers the offsets it was told were delivered, in delivery order:
// offsets can have gaps (Kafka compaction and transaction markers, RocketMQ tag
// and SQL filtering), so the
// successor of offset n is the next delivered offset, not n+1.
//
// The committable position is 1 + the highest delivered offset such that it
// and every offset delivered before it are done. A failed (nacked) offset is
// never done, so the position stays at it until the partition is re-read by a
// later session.
//
// Not safe for concurrent use; the lane serialises access.
type Tracker struct {
	// queue holds the delivered offsets from the first one that is not done
	// onwards, ascending. Done offsets at the front are dropped as they
	// complete, so len(queue)-head is what a crash would re-deliver.
	queue []trackedOffset
	head  int
	// next is the committable position; valid when hasNext.
	next    int64
	hasNext bool
	// last is the most recently delivered offset; valid when len > 0 or hasNext.
	last      int64
	delivered bool
	pending   int
}

// Delivered records that offset was handed to the runtime. Offsets must
// increase.
func (t *Tracker) Delivered(offset int64) error {
	if t.delivered && offset <= t.last {
		return fmt.Errorf("deliver %d after %d: %w", offset, t.last, ErrOutOfOrder)
	}
	t.queue = append(t.queue, trackedOffset{offset: offset})
	t.last, t.delivered = offset, true
	t.pending++
	return nil
}

// Retract undoes the Delivered call for offset, which must be the last one
// delivered and still pending: the hand-over to the runtime did not happen.
func (t *Tracker) Retract(offset int64) error {
	n := len(t.queue)
	if n == t.head || t.queue[n-1].offset != offset || t.queue[n-1].state != statePending {
		return fmt.Errorf("retract %d: %w", offset, ErrUnknownOffset)
	}
	t.queue = t.queue[:n-1]
	t.pending--
	if n-1 > t.head {
		t.last = t.queue[n-2].offset
	} else if t.hasNext {
		t.last = t.next - 1
	} else {
		t.delivered = false
	}
	return nil
}

// Resolve records the acknowledgement of offset: done (ack) or not (nack).
func (t *Tracker) Resolve(offset int64, done bool) error {
	live := t.queue[t.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].offset >= offset })
	if i == len(live) || live[i].offset != offset {
		return fmt.Errorf("ack %d: %w", offset, ErrUnknownOffset)
	}
	e := &live[i]
	if e.state != statePending {
		return fmt.Errorf("ack %d: %w", offset, ErrAckedTwice)
	}
	t.pending--
	if !done {
		e.state = stateFailed
		return nil
	}
	e.state = stateDone
	for t.head < len(t.queue) && t.queue[t.head].state == stateDone {
		t.next, t.hasNext = t.queue[t.head].offset+1, true
		t.head++
	}
	t.compact()
	return nil
}

// compact reclaims the dropped front of the queue once it dominates, keeping
// memory proportional to the uncommitted span.
func (t *Tracker) compact() {
	if t.head == len(t.queue) {
		t.queue, t.head = t.queue[:0], 0
		return
	}
	if t.head > 64 && t.head*2 > len(t.queue) {
		n := copy(t.queue, t.queue[t.head:])
		t.queue, t.head = t.queue[:n], 0
	}
}

// Committable returns the position to commit (the offset of the next message
// to consume), and false when no delivered offset is done yet.
func (t *Tracker) Committable() (int64, bool) { return t.next, t.hasNext }

// Uncommitted is the number of delivered offsets at or after the committable
// position: what a crash now would re-deliver.
func (t *Tracker) Uncommitted() int { return len(t.queue) - t.head }

// Pending is the number of delivered offsets with no acknowledgement yet.
func (t *Tracker) Pending() int { return t.pending }
