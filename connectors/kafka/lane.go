package kafka

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/offsets"
)

type laneState uint8

const (
	laneActive   laneState = iota // delivering
	laneDraining                  // revoked: no new deliveries, acks still recorded
	laneReleased                  // let go: acks are refused, nothing more is committed
)

// lane is one owned partition within one consumer group session.
//
// Ownership: the partition's ConsumeClaim goroutine creates it, is the only
// one to deliver from it and to change its state, and releases it before
// returning. AckFuncs (any goroutine) resolve offsets through ack.
type lane struct {
	name      string // "topic/partition"
	topic     string
	partition int32
	sess      sarama.ConsumerGroupSession
	dirty     *atomic.Bool // set when an offset is marked; the session committer clears it

	// revoked is closed when the partition starts being revoked; it is the
	// Message.Revoked of every message of this lane.
	revoked chan struct{}
	// wake has room for one signal: an ack changed the window or the
	// number of pending acks.
	wake chan struct{}

	mu         sync.Mutex
	tracker    offsets.Tracker
	state      laneState
	releaseErr error // what acks get once released: ErrRevoked or ErrClosed
	marked     int64 // last position passed to MarkOffset; -1 none
}

func newLane(sess sarama.ConsumerGroupSession, topic string, partition int32, dirty *atomic.Bool) *lane {
	return &lane{
		name:      topic + "/" + strconv.FormatInt(int64(partition), 10),
		topic:     topic,
		partition: partition,
		sess:      sess,
		dirty:     dirty,
		revoked:   make(chan struct{}),
		wake:      make(chan struct{}, 1),
		marked:    -1,
	}
}

// deliver records offset as handed out. It fails only when the lane is no
// longer active.
func (l *lane) deliver(offset int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != laneActive {
		return connectors.ErrRevoked
	}
	return l.tracker.Delivered(offset)
}

// retract undoes deliver when the hand-over did not happen.
func (l *lane) retract(offset int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Cannot fail: only the lane goroutine delivers, and nobody could ack an
	// offset that was never handed out.
	_ = l.tracker.Retract(offset)
}

// ack records the outcome of one delivered message and marks the new
// contiguous prefix for commit. Called from AckFuncs, any goroutine.
func (l *lane) ack(offset int64, procErr error) error {
	if err := l.resolve(offset, procErr); err != nil {
		return err
	}
	// Woken after the unlock: the lane's goroutine takes l.mu first thing
	// (hasRoom), and woken under it, it ran only to block on the lock.
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// resolve records offset's outcome and marks the new committable prefix.
func (l *lane) resolve(offset int64, procErr error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == laneReleased {
		return fmt.Errorf("kafka %s offset %d: %w", l.name, offset, l.releaseErr)
	}
	if err := l.tracker.Resolve(offset, procErr == nil); err != nil {
		return fmt.Errorf("kafka %s: %w", l.name, err)
	}
	if next, ok := l.tracker.Committable(); ok && next > l.marked {
		// Never ahead of the contiguous prefix: sarama commits the highest
		// marked offset.
		l.sess.MarkOffset(l.topic, l.partition, next, "")
		l.marked = next
		l.dirty.Store(true)
	}
	return nil
}

// hasRoom reports whether another message may be delivered: fewer than
// window delivered and not committable (what a crash would redeliver) and
// fewer than share delivered and not acknowledged (what the runtime holds).
// The share is not counted against the committable prefix: one message
// held long (a Retry-After wait) would otherwise stop its partition once
// share later messages had been acknowledged behind it.
func (l *lane) hasRoom(window, share int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tracker.Uncommitted() < window && l.tracker.Pending() < share
}

// pending is the number of delivered messages not acknowledged yet.
func (l *lane) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tracker.Pending()
}

// startRevoke stops deliveries and tells holders of this lane's messages.
func (l *lane) startRevoke() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == laneActive {
		l.state = laneDraining
		close(l.revoked)
	}
}

// release refuses further acks (reason: connectors.ErrRevoked or ErrClosed)
// and returns the position to commit, if any, and how many messages were
// abandoned without an ack.
func (l *lane) release(reason error) (next int64, ok bool, abandoned int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == laneActive {
		close(l.revoked)
	}
	l.state = laneReleased
	l.releaseErr = reason
	next, ok = l.tracker.Committable()
	return next, ok, l.tracker.Pending()
}

// committedPosition is the last position marked for commit, or -1.
func (l *lane) committedPosition() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.marked
}
