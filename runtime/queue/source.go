package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
)

// source reads one queue through its durable pull consumer.
//
// Credit: at most window messages are held at once, counting both those
// fetched but not yet returned by Read and those returned but not yet
// acknowledged; the fetcher asks the server for no more than the free credit.
//
// Acknowledgement (AckFunc): nil → acknowledged and deleted from the queue
// (confirmed by the server before the AckFunc returns); an error wrapping
// ErrTerminate → deleted without processing; an error from RetryAfter →
// redelivered after that delay; any other error → redelivered at once. While
// a message is held, the source tells the server every AckWait/3 that it is
// in progress, so long invocations are not redelivered; a crashed process's
// messages are redelivered after AckWait.
//
// Close stops fetching, makes every fetched-but-unread message available
// again, waits (until ctx is done) for the acks of messages handed out, then
// makes the rest available again at once. Acks arriving later return an
// error and change nothing.
//
// Goroutines: Connect starts a fetcher and a keep-alive goroutine; Close
// stops both and waits for them.
type source struct {
	q      *JetStream
	queue  string
	window int
	log    *slog.Logger

	mu        sync.Mutex
	state     sourceState
	buf       []*delivery            // fetched, not yet returned by Read (FIFO)
	held      map[*delivery]struct{} // buffered or handed out, not yet settled
	fatal     error                  // set by the fetcher; Read returns it
	ready     chan struct{}          // signalled when buf grows or fatal is set
	credit    chan struct{}          // signalled when held shrinks (fetcher waits)
	drained   chan struct{}          // signalled when held shrinks (Close waits)
	closing   chan struct{}          // closed when Close begins
	stopFetch context.CancelFunc     // ends the fetcher's current fetch
	fetchDone chan struct{}          // closed when the fetcher returned
	stopKeep  chan struct{}          // closed when Close has settled everything
	keepDone  chan struct{}          // closed when keepAlive returned
}

type sourceState int

const (
	stateNew sourceState = iota
	stateConnected
	stateClosed
)

// delivery is one delivered message and whether it was settled (acked,
// nacked or abandoned) — each is settled exactly once.
type delivery struct {
	msg     jetstream.Msg
	settled bool
}

var (
	_ connectors.Source = (*source)(nil)
	_ connectors.Health = (*source)(nil)
)

func newSource(q *JetStream, queue string, opts connectors.Options) *source {
	w := opts.Window
	if w <= 0 {
		w = DefaultWindow
	}
	// The consumer's MaxAckPending caps all readers together; a larger
	// window could never fill.
	w = min(w, q.cfg.MaxAckPending)
	log := q.log.With("queue", queue)
	if opts.Name != "" {
		log = log.With("pipeline", opts.Name)
	}
	return &source{
		q: q, queue: queue, window: w, log: log,
		held:      make(map[*delivery]struct{}),
		ready:     make(chan struct{}, 1),
		credit:    make(chan struct{}, 1),
		drained:   make(chan struct{}, 1),
		closing:   make(chan struct{}),
		fetchDone: make(chan struct{}),
		stopKeep:  make(chan struct{}),
		keepDone:  make(chan struct{}),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Connect binds to the queue's consumer. ErrNoQueue (permanent) when the
// queue was not created; transient errors are retried until ctx is done.
func (s *source) Connect(ctx context.Context) error {
	if err := checkName(s.queue); err != nil {
		return err
	}
	var cons jetstream.Consumer
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		if err := s.q.checkOpen(); err != nil {
			return err
		}
		var err error
		cons, err = s.q.stream.Consumer(ctx, durableName(s.queue))
		if err == nil {
			break
		}
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("queue %s: %w", s.queue, ErrNoQueue)
		}
		s.log.Warn("queue: connect failed; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("queue %s: connect: %w (last error: %v)", s.queue, ctx.Err(), err)
		case <-time.After(delay):
		}
	}
	fetchCtx, stop := context.WithCancel(context.Background())
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateClosed:
		stop()
		return ErrClosed
	case stateConnected:
		stop()
		return fmt.Errorf("queue %s: Connect called twice", s.queue)
	}
	s.state, s.stopFetch = stateConnected, stop
	go func() {
		defer close(s.fetchDone)
		s.fetchLoop(fetchCtx, cons)
	}()
	go func() {
		defer close(s.keepDone)
		s.keepAlive()
	}()
	return nil
}

// fetchLoop pulls up to the free credit at a time until stopped.
func (s *source) fetchLoop(ctx context.Context, cons jetstream.Consumer) {
	backoff := 100 * time.Millisecond
	for {
		free, ok := s.waitCredit(ctx)
		if !ok {
			return
		}
		fctx, cancel := context.WithTimeout(ctx, s.q.cfg.PollWait)
		batch, err := cons.Fetch(free, jetstream.FetchContext(fctx))
		fetched := 0
		if err == nil {
			for m := range batch.Messages() {
				s.add(m)
				fetched++
			}
			err = batch.Error()
		}
		cancel()
		if fetched == 0 && ctx.Err() == nil &&
			(err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders)) {
			// A pull on a consumer deleted between two fetches either finds
			// nobody to answer or simply times out; only asking tells.
			if _, ierr := cons.Info(ctx); errors.Is(ierr, jetstream.ErrConsumerNotFound) {
				err = ierr
			}
		}
		switch {
		case err == nil, errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			backoff = 100 * time.Millisecond
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			s.fail(fmt.Errorf("queue %s: %w", s.queue, ErrQueueDeleted))
			return
		case errors.Is(err, nats.ErrConnectionClosed):
			s.fail(fmt.Errorf("queue %s: %w", s.queue, ErrClosed))
			return
		}
		// Transient (a reconnecting connection, a server restarting): the
		// messages already fetched stay valid.
		s.log.Warn("queue: fetch failed; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// waitCredit blocks until fewer than window messages are held and returns
// how many more may be fetched.
func (s *source) waitCredit(ctx context.Context) (int, bool) {
	for {
		s.mu.Lock()
		free := s.window - len(s.held)
		s.mu.Unlock()
		if free > 0 {
			return free, true
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-s.credit:
		}
	}
}

func (s *source) add(m jetstream.Msg) {
	d := &delivery{msg: m}
	s.mu.Lock()
	s.buf = append(s.buf, d)
	s.held[d] = struct{}{}
	s.mu.Unlock()
	signal(s.ready)
}

func (s *source) fail(err error) {
	s.mu.Lock()
	s.fatal = err
	s.mu.Unlock()
	signal(s.ready)
}

// keepAlive marks every held message in progress every AckWait/3.
func (s *source) keepAlive() {
	t := time.NewTicker(s.q.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.stopKeep:
			return
		}
		s.mu.Lock()
		msgs := make([]jetstream.Msg, 0, len(s.held))
		for d := range s.held {
			msgs = append(msgs, d.msg)
		}
		s.mu.Unlock()
		for _, m := range msgs {
			// Fire and forget: a lost progress report at worst lets the
			// message be redelivered, which at-least-once allows.
			_ = m.InProgress()
		}
	}
}

// Read implements connectors.Source.
func (s *source) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	for {
		s.mu.Lock()
		switch {
		case s.state == stateClosed:
			s.mu.Unlock()
			return nil, nil, ErrClosed
		case s.state == stateNew:
			s.mu.Unlock()
			return nil, nil, fmt.Errorf("queue %s: Read before Connect", s.queue)
		case len(s.buf) > 0:
			d := s.buf[0]
			s.buf[0] = nil
			s.buf = s.buf[1:]
			s.mu.Unlock()
			return s.message(d), s.ackFunc(d), nil
		case s.fatal != nil:
			err := s.fatal
			s.mu.Unlock()
			return nil, nil, err
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-s.closing:
		case <-s.ready:
		}
	}
}

func (s *source) message(d *delivery) *connectors.Message {
	m := d.msg
	headers := flatten(m.Headers())
	var seq uint64
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	msg := &connectors.Message{
		Lane: s.queue,
		Coordinates: connectors.Coordinates{
			System: "nats",
			Topic:  s.queue,
			Offset: int64(seq),
			ID:     headers[MsgIDHeader],
		},
		Size:       len(m.Data()),
		ReceivedAt: time.Now(),
	}
	ev, isCE, err := decodeEvent(headers, m.Data())
	switch {
	case isCE && err == nil:
		msg.Event = ev
	case isCE:
		msg.DecodeErr = fmt.Errorf("queue %s message %d: %w", s.queue, seq, err)
		msg.Event = wrapEvent(s.q.cfg.Stream, s.queue, seq, headers, m.Data())
	default:
		msg.Event = wrapEvent(s.q.cfg.Stream, s.queue, seq, headers, m.Data())
	}
	if k, ok := msg.Event.Extensions()["partitionkey"].(string); ok {
		msg.Key = k
	}
	return msg
}

func (s *source) ackFunc(d *delivery) connectors.AckFunc {
	return func(ctx context.Context, err error) error {
		s.mu.Lock()
		if d.settled {
			closed := s.state == stateClosed
			s.mu.Unlock()
			if closed {
				return fmt.Errorf("queue %s: ack after Close: %w", s.queue, ErrClosed)
			}
			return fmt.Errorf("queue %s: message acknowledged twice", s.queue)
		}
		d.settled = true
		s.mu.Unlock()
		defer s.release(d)
		var aerr error
		var ra *retryAfterError
		switch {
		case err == nil:
			aerr = d.msg.DoubleAck(ctx)
		case errors.Is(err, ErrTerminate):
			aerr = d.msg.Term()
		case errors.As(err, &ra) && ra.d > 0:
			aerr = d.msg.NakWithDelay(ra.d)
		default:
			aerr = d.msg.Nak()
		}
		if aerr != nil {
			// The server redelivers after AckWait: nothing is lost.
			return fmt.Errorf("queue %s: acknowledge: %w", s.queue, aerr)
		}
		return nil
	}
}

// release forgets a settled message and returns its credit.
func (s *source) release(d *delivery) {
	s.mu.Lock()
	delete(s.held, d)
	s.mu.Unlock()
	signal(s.credit)
	signal(s.drained)
}

// Health implements connectors.Health.
func (s *source) Health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.state == stateClosed:
		return ErrClosed
	case s.state == stateNew:
		return errors.New("not connected")
	case s.fatal != nil:
		return s.fatal
	case !s.q.nc.IsConnected():
		return fmt.Errorf("NATS connection %s", s.q.nc.Status())
	}
	return nil
}

// Close implements connectors.Source.
func (s *source) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		return nil
	}
	wasConnected := s.state == stateConnected
	s.state = stateClosed
	close(s.closing)
	stop := s.stopFetch
	s.mu.Unlock()
	if !wasConnected {
		return nil
	}
	// Stop fetching first, so that nothing new arrives; then hand back what
	// Read never returned.
	stop()
	<-s.fetchDone
	s.mu.Lock()
	unread := s.buf
	s.buf = nil
	for _, d := range unread {
		d.settled = true
	}
	s.mu.Unlock()
	for _, d := range unread {
		_ = d.msg.Nak() // if lost, redelivered after AckWait
		s.release(d)
	}
	// Wait for the acks of what the runtime holds; keep-alives continue.
	var waitErr error
	for waitErr == nil {
		s.mu.Lock()
		n := len(s.held)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-s.drained:
		case <-ctx.Done():
			waitErr = ctx.Err()
		}
	}
	var abandoned []*delivery
	if waitErr != nil {
		s.mu.Lock()
		for d := range s.held {
			if !d.settled {
				d.settled = true
				abandoned = append(abandoned, d)
			}
		}
		s.mu.Unlock()
		for _, d := range abandoned {
			_ = d.msg.Nak() // available again at once, to the next reader
			s.release(d)
		}
	}
	close(s.stopKeep)
	<-s.keepDone
	if len(abandoned) > 0 {
		return fmt.Errorf("queue %s: close: %d messages unacknowledged, made available again: %w", s.queue, len(abandoned), waitErr)
	}
	return nil
}
