package kafka

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/connectors"
)

// groupHandler implements sarama.ConsumerGroupHandler for a Source. sarama
// calls Setup, then ConsumeClaim once per claimed partition (each in its own
// goroutine), then Cleanup after every ConsumeClaim has returned.
type groupHandler struct {
	s *Source

	mu  sync.Mutex
	cur *sessionState
}

// sessionState is what the partitions of one session share. Its committer
// goroutine is started by Setup and stopped and waited by Cleanup.
type sessionState struct {
	dirty atomic.Bool // a lane marked an offset since the last commit
	stop  chan struct{}
	done  chan struct{}

	// unstarted counts the session's initial claims not yet consuming; the
	// source is ready when it reaches zero, so that "start: latest" has
	// resolved its offsets by the time Connect returns.
	unstarted atomic.Int64

	mu    sync.Mutex
	lanes map[*lane]sarama.ConsumerGroupClaim // owned partitions, for lag reports
}

func (st *sessionState) add(l *lane, c sarama.ConsumerGroupClaim) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.lanes[l] = c
}

func (st *sessionState) remove(l *lane) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.lanes, l)
}

func (h *groupHandler) Setup(sess sarama.ConsumerGroupSession) error {
	st := &sessionState{stop: make(chan struct{}), done: make(chan struct{}), lanes: map[*lane]sarama.ConsumerGroupClaim{}}
	h.mu.Lock()
	h.cur = st
	h.mu.Unlock()
	go h.s.commitLoop(sess, st)

	claims := 0
	for _, ps := range sess.Claims() {
		claims += len(ps)
	}
	st.unstarted.Store(int64(claims))
	h.s.sessions.Add(1)
	h.s.setConnected()
	h.s.logger.Info("kafka group session started",
		"generation", sess.GenerationID(), "member", sess.MemberID(), "claims", sess.Claims())
	if claims == 0 {
		h.s.markReady()
	}
	return nil
}

func (h *groupHandler) Cleanup(sess sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	st := h.cur
	h.cur = nil
	h.mu.Unlock()
	if st != nil {
		close(st.stop)
		<-st.done
	}
	h.s.logger.Info("kafka group session ended", "generation", sess.GenerationID())
	return nil
}

func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	h.mu.Lock()
	st := h.cur
	h.mu.Unlock()
	l := newLane(sess, claim.Topic(), claim.Partition(), &st.dirty)
	st.add(l, claim)
	h.s.credit.join(l)
	if st.unstarted.Add(-1) == 0 {
		h.s.markReady()
	}
	h.s.consumeLane(sess.Context(), claim, l)
	h.s.credit.leave(l)
	st.remove(l)
	h.s.releaseLane(sess, l)
	return nil
}

// markReady lets Connect return: the first session consumes every claim.
func (s *Source) markReady() { s.readyOnce.Do(func() { close(s.ready) }) }

// commitLoop commits marked positions every commit interval, so that a crash
// re-delivers at most about one interval of acknowledged messages, and
// reports each owned partition's lag. It runs apart from the partition
// goroutines, which may be blocked handing a record to Read.
func (s *Source) commitLoop(sess sarama.ConsumerGroupSession, st *sessionState) {
	defer close(st.done)
	t := time.NewTicker(s.set.commitInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if st.dirty.Swap(false) {
				sess.Commit()
			}
			st.mu.Lock()
			for l, claim := range st.lanes {
				s.reportLag(claim, l)
			}
			st.mu.Unlock()
		case <-st.stop:
			return
		}
	}
}

// consumeLane delivers the claim's records to Read while the lane has room
// in its window. It returns when the claim is revoked (session context done,
// or Messages closed by a cooperative rebalance) or the source closes.
func (s *Source) consumeLane(ctx context.Context, claim sarama.ConsumerGroupClaim, l *lane) {
	msgs := claim.Messages()
	for {
		if !l.hasRoom(s.window, s.credit.perLane()) {
			// Not reading Messages makes sarama stop fetching this
			// partition once its small buffer is full; others go on.
			select {
			case <-l.wake:
			case <-ctx.Done():
				return
			case <-s.stopping:
				return
			}
			continue
		}
		select {
		case rec, ok := <-msgs:
			// A buffered record may still be picked after the session
			// ended: never deliver for a partition being revoked.
			if !ok || ctx.Err() != nil || s.isStopping() {
				return
			}
			if !s.healthy.Load() {
				s.setConnected()
			}
			if !s.handOver(ctx, rec, l) {
				return
			}
		case <-ctx.Done():
			return
		case <-s.stopping:
			return
		}
	}
}

// handOver passes one record to Read. It returns false when the lane must
// stop (revoke or close) before the record was taken.
func (s *Source) handOver(ctx context.Context, rec *sarama.ConsumerMessage, l *lane) bool {
	if err := l.deliver(rec.Offset); err != nil {
		// sarama re-sent an offset already delivered in this session; the
		// first delivery is the one being tracked.
		s.logger.Warn("kafka record skipped", "lane", l.name, "offset", rec.Offset, "err", err)
		return true
	}
	msg := s.mapper.message(rec, l, time.Now())
	offset := rec.Offset
	ack := func(_ context.Context, err error) error { return l.ack(offset, err) }
	select {
	case s.deliveries <- delivery{msg: msg, ack: ack}:
		return true
	case <-ctx.Done():
	case <-s.stopping:
	}
	l.retract(offset)
	return false
}

// releaseLane revokes the lane: it stops deliveries (closing Revoked), waits
// for outstanding acks (bounded by the revoke grace, or by Close's ctx when
// closing), refuses later acks, and commits the contiguous prefix while the
// partition is still owned.
func (s *Source) releaseLane(sess sarama.ConsumerGroupSession, l *lane) {
	l.startRevoke()
	s.drain(l)
	reason := connectors.ErrRevoked
	closing := s.isStopping()
	if closing {
		reason = connectors.ErrClosed
	}
	next, ok, abandoned := l.release(reason)
	sess.Commit()
	s.rec.released(l.topic, l.partition)
	if closing && abandoned > 0 {
		s.abandoned.Add(int64(abandoned))
	}
	attrs := []any{"lane", l.name, "abandoned", abandoned, "closing", closing}
	if ok {
		attrs = append(attrs, "committed", next)
	}
	s.logger.Info("kafka partition released", attrs...)
}

// drain waits until the lane has no pending acks, the revoke grace expires,
// or — once Close has begun — Close's ctx is done.
func (s *Source) drain(l *lane) {
	if l.pending() == 0 {
		return
	}
	grace := time.NewTimer(s.set.revokeGrace)
	defer grace.Stop()
	stopping := s.stopping
	for l.pending() > 0 {
		graceC := grace.C
		var closeDone <-chan struct{}
		if s.isStopping() {
			// Close's ctx, not the grace, bounds the wait.
			graceC, stopping, closeDone = nil, nil, s.closeDone()
		}
		select {
		case <-l.wake:
		case <-graceC:
			return
		case <-closeDone:
			return
		case <-stopping:
		}
	}
}

// reportLag exports high-water mark minus committed position.
func (s *Source) reportLag(claim sarama.ConsumerGroupClaim, l *lane) {
	pos := l.committedPosition()
	if pos < 0 {
		pos = claim.InitialOffset()
	}
	hwm := claim.HighWaterMarkOffset()
	if pos < 0 || hwm < 0 {
		return
	}
	s.rec.lag(l.topic, l.partition, max(hwm-pos, 0))
}
