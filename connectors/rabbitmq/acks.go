package rabbitmq

import (
	"slices"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultAckBatch and DefaultAckLinger are the acknowledgement coalescing
// defaults (WithAckCoalescing).
const (
	DefaultAckBatch  = 64
	DefaultAckLinger = 2 * time.Millisecond
)

// staleLingers is how many linger flushes a done tag behind a gap waits
// before it is acked on its own: long enough that the oldest call in
// flight usually finishes first (then one multiple ack covers them all),
// short enough that a stuck message does not keep the others' acks for
// long.
const staleLingers = 25

// ackBatcher coalesces the acknowledgements of one channel. Every delivery
// tag on a channel is one of this source's deliveries, numbered 1, 2, … in
// delivery order, so a tag that is neither done nor settled is still
// delivered-and-unsettled (or not delivered yet).
//
// A tag the engine acked is "done": it waits here. A flush sends one
// basic.ack(T, multiple=true) for the highest done tag T such that every tag
// ≤ T is done or settled, and the done tags behind a gap (an earlier tag
// still processing) individually, basic.ack(tag, multiple=false), once
// there are a batch of them or they have waited staleLingers lingers: a slow
// message never holds the others' acks for long, so the broker's prefetch
// is not used up by messages the engine has finished. Nacks are sent at
// once by the AckFunc, individually, and only then marked settled: a later
// multiple ack never covers a nacked tag (it is no longer unacknowledged on
// the broker when the multiple ack arrives).
//
// Concurrency: mark, settled and flush may be called from any goroutine;
// frames are written under sendMu, so they reach the channel in the order
// the state changed. The linger goroutine (run) is owned by the session:
// started by open, stopped and waited for by session.close.
type ackBatcher struct {
	ch     amqp.Acknowledger
	linger time.Duration
	kick   chan struct{} // one pending signal: done became non-empty
	stop   chan struct{} // closed by session.close
	exited chan struct{} // closed when run returns

	sendMu sync.Mutex // held while computing and writing a flush
	mu     sync.Mutex
	base   uint64            // every tag ≤ base is settled on the broker
	done   map[uint64]uint64 // done tags not sent yet → the flush round they were marked in
	round  uint64            // linger flushes so far
	sent   []span            // tags > base settled on the broker, sorted, disjoint, not adjacent
}

// span is a closed range of delivery tags.
type span struct{ lo, hi uint64 }

func newAckBatcher(ch amqp.Acknowledger, linger time.Duration) *ackBatcher {
	return &ackBatcher{
		ch:     ch,
		linger: linger,
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		exited: make(chan struct{}),
		done:   map[uint64]uint64{},
	}
}

// mark records tag as done and reports whether batch or more tags now
// wait, when the caller should flush (outside its own locks); otherwise the
// linger goroutine will.
func (b *ackBatcher) mark(tag uint64, batch int) bool {
	b.mu.Lock()
	b.done[tag] = b.round
	n := len(b.done)
	b.mu.Unlock()
	if n == 1 {
		poke(b.kick)
	}
	return n >= batch
}

// settled records that tag was settled on the broker by its own frame (a
// nack), after that frame was written.
func (b *ackBatcher) settled(tag uint64) {
	b.mu.Lock()
	b.addSent(tag)
	b.mu.Unlock()
}

// flush sends the acks that are due. Done tags behind a gap are sent
// individually when there are at least batch of them, when a linger flush
// (lingered) finds them waiting for staleLingers rounds, or when all is
// set (Close, a consumer replacement: batch 0). It returns the first frame
// error.
func (b *ackBatcher) flush(batch int, lingered bool) error {
	b.sendMu.Lock()
	defer b.sendMu.Unlock()
	b.mu.Lock()
	var prefix uint64 // highest done tag of the contiguous prefix; 0: none
	for {
		next := b.base + 1
		if _, ok := b.done[next]; ok {
			delete(b.done, next)
			prefix, b.base = next, next
			continue
		}
		if len(b.sent) > 0 && b.sent[0].lo == next {
			b.base = b.sent[0].hi
			b.sent = b.sent[1:]
			continue
		}
		break
	}
	round := b.round
	if lingered {
		b.round++
	}
	var single []uint64
	if len(b.done) >= batch || lingered {
		for tag, marked := range b.done {
			if len(b.done) >= batch || (lingered && round-marked >= staleLingers) {
				single = append(single, tag)
			}
		}
		slices.Sort(single)
		for _, tag := range single {
			delete(b.done, tag)
			b.addSent(tag)
		}
	}
	b.mu.Unlock()
	var first error
	if prefix > 0 {
		first = b.ch.Ack(prefix, true)
	}
	for _, tag := range single {
		if err := b.ch.Ack(tag, false); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// pending reports whether done tags wait to be sent.
func (b *ackBatcher) pending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.done) > 0
}

// addSent adds tag (> base) to the settled spans. The caller holds mu.
func (b *ackBatcher) addSent(tag uint64) {
	i, _ := slices.BinarySearchFunc(b.sent, tag, func(s span, t uint64) int {
		switch {
		case s.hi < t:
			return -1
		case s.lo > t:
			return 1
		}
		return 0
	})
	joinLeft := i > 0 && b.sent[i-1].hi+1 == tag
	joinRight := i < len(b.sent) && b.sent[i].lo == tag+1
	switch {
	case joinLeft && joinRight:
		b.sent[i-1].hi = b.sent[i].hi
		b.sent = slices.Delete(b.sent, i, i+1)
	case joinLeft:
		b.sent[i-1].hi = tag
	case joinRight:
		b.sent[i].lo = tag
	default:
		b.sent = slices.Insert(b.sent, i, span{tag, tag})
	}
}

// run is the linger goroutine: once a tag is done it waits one linger and
// flushes, and goes on while done tags remain. Frame errors are left to the
// session's watcher (a failed write closes the channel).
func (b *ackBatcher) run() {
	defer close(b.exited)
	t := time.NewTimer(b.linger)
	t.Stop()
	for {
		select {
		case <-b.kick:
		case <-b.stop:
			return
		}
		for more := true; more; more = b.pending() {
			t.Reset(b.linger)
			select {
			case <-t.C:
			case <-b.stop:
				t.Stop()
				return
			}
			_ = b.flush(maxPrefetch+1, true)
		}
	}
}

// close stops the linger goroutine and waits for it; done tags not sent
// stay unacknowledged (the caller flushes first when the channel lives).
func (b *ackBatcher) close() {
	close(b.stop)
	<-b.exited
}
