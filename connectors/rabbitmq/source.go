// Package rabbitmq is the RabbitMQ source: it consumes one queue with
// manual acknowledgements, a prefetch (basic.qos) of Options.Window
// messages or the runtime's credit when smaller (re-subscribing as the
// credit changes), reconnection with backoff, and optional topology
// declaration. The queue is its one lane.
//
// See docs/connectors/rabbitmq.md for settings, the message → CloudEvent
// mapping, ack/nack semantics, ordering and reconnect behaviour.
package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpconf"
	"github.com/sluicehq/sluice/pipelines"
)

// DefaultWindow is the prefetch when connectors.Options.Window is 0.
const DefaultWindow = 1024

// maxPrefetch is the largest prefetch count AMQP 0-9-1 can express.
const maxPrefetch = 65535

// closeTimeout bounds closing a connection (the close handshake) when the
// broker does not answer.
const closeTimeout = 2 * time.Second

var _ connectors.Source = (*Source)(nil)
var _ connectors.Health = (*Source)(nil)
var _ connectors.CreditFollower = (*Source)(nil)

// ErrAckedTwice is returned by an AckFunc called a second time; the second
// call changes nothing.
var ErrAckedTwice = errors.New("rabbitmq source: message already acknowledged")

// Source consumes one queue. Its lane is the queue name.
//
// Ownership: Connect opens the first session (connection, channel,
// consumer) and starts the supervisor goroutine, which hands deliveries to
// Read, re-subscribes when the credit calls for another prefetch and, when
// the session is lost, reconnects with backoff. Each session has a watcher
// goroutine that notices the channel or connection closing, and an ack
// batcher goroutine that sends coalesced acks after a linger (acks.go).
// Close stops and waits for all of them. Concurrency follows connectors.Source; Health and
// SetCredit may be called at any time.
type Source struct {
	spec    pipelines.RabbitMQSource
	dialer  amqpconf.Dialer
	window  int
	requeue bool // onNack: requeue
	mapper  mapper
	logger  *slog.Logger
	set     settings
	tagBase string // consumer tag prefix, unique to this Source

	// out hands deliveries from the supervisor to Read. It is unbuffered
	// so that a delivery is either in the runtime's hands or still the
	// supervisor's.
	out      chan delivery
	stopping chan struct{} // closed by Close
	// room has one pending signal: a delivery settled or the credit
	// changed; a hand-over waiting for credit re-checks.
	room chan struct{}
	// recheck has one pending signal: the credit changed, or a paused
	// session may resume; the supervisor re-checks the prefetch.
	recheck  chan struct{}
	fatal    chan struct{} // closed when reconnecting stopped on a permanent error
	fatalErr error         // written before fatal is closed

	mu            sync.Mutex
	connecting    bool
	started       bool               // the supervisor runs
	connectCancel context.CancelFunc // ends Connect's first attempts
	runCancel     context.CancelFunc
	runDone       chan struct{}
	sess          *session // the live session; nil while reconnecting
	gen           int      // sessions opened so far
	healthErr     error
	outstanding   int           // handed to Read, AckFunc not yet called
	credit        int           // SetCredit's credit; 0 until set
	drained       chan struct{} // set by Close; closed when outstanding reaches 0
	closed        bool          // Close finished: acks are refused

	closeOnce sync.Once
	closeErr  error
}

type delivery struct {
	msg *connectors.Message
	ack connectors.AckFunc
}

// session is one connection and channel, and its consumers one after the
// other: a consumer is replaced (basic.cancel, basic.qos, basic.consume on
// the same channel) when the credit calls for another prefetch. Its
// delivery tags are only valid on its channel, and stay valid across its
// consumers: once dead is closed, its messages' AckFuncs refuse to ack (the
// broker redelivers those messages).
type session struct {
	gen  int
	conn *amqp.Connection
	ch   *amqp.Channel
	// Owned by the supervisor (Close reads tag after it stopped).
	tag        string               // current consumer; "" while paused
	deliveries <-chan amqp.Delivery // current consumer's; nil while paused
	backlog    []pending            // delivered to cancelled consumers, not handed over yet
	acks       *ackBatcher          // the channel's acknowledgements
	dead       chan struct{}        // closed by watch; the Revoked channel of its messages
	cause      error                // why it died; written before dead is closed
	watchDone  chan struct{}

	// Guarded by Source.mu; written only by the supervisor.
	prefetch int // current consumer's basic.qos; 0 while paused
	epoch    int // consumers replaced so far; a delivery's epoch is its consumer's
	handed   int // handed to Read and not settled
	older    int // delivered to cancelled consumers (backlog or handed) and not settled
}

// pending is a delivery received from a cancelled consumer.
type pending struct {
	d     amqp.Delivery
	epoch int
}

// watch closes dead when the channel or the connection closes. It ends
// then; closing the connection (Close, or the supervisor after a loss)
// guarantees that.
func (ss *session) watch(connClosed, chClosed <-chan *amqp.Error) {
	defer close(ss.watchDone)
	var e *amqp.Error
	select {
	case e = <-connClosed:
	case e = <-chClosed:
	}
	if e != nil {
		ss.cause = e
	} else {
		ss.cause = errors.New("channel closed")
	}
	close(ss.dead)
}

func (ss *session) isDead() bool {
	select {
	case <-ss.dead:
		return true
	default:
		return false
	}
}

// close closes the connection (and so the channel: the broker requeues
// every unacknowledged message, including done ones not sent yet) and waits
// for the watcher and the ack batcher's goroutine.
func (ss *session) close() {
	_ = ss.conn.CloseDeadline(time.Now().Add(closeTimeout))
	<-ss.watchDone
	ss.acks.close()
}

// New validates spec and returns an unconnected Source. opts.Window is the
// prefetch: the most messages delivered but not yet acknowledged (default
// DefaultWindow, at most 65535), lowered by SetCredit's credit when that
// is smaller. Errors wrap amqpconf.ErrConfig.
func New(spec pipelines.RabbitMQSource, opts connectors.Options, logger *slog.Logger, options ...Option) (*Source, error) {
	if spec.Queue == "" {
		return nil, fmt.Errorf("%w: queue is required", amqpconf.ErrConfig)
	}
	window := opts.Window
	if window == 0 {
		window = DefaultWindow
	}
	if window < 0 || window > maxPrefetch {
		return nil, fmt.Errorf("%w: window %d: want 1 to %d (the AMQP prefetch limit)", amqpconf.ErrConfig, window, maxPrefetch)
	}
	var requeue bool
	switch spec.OnNack {
	case "", pipelines.RabbitOnNackRequeue:
		requeue = true
	case pipelines.RabbitOnNackDeadLetter:
	default:
		return nil, fmt.Errorf("%w: onNack %q: want requeue or dead-letter", amqpconf.ErrConfig, spec.OnNack)
	}
	heartbeat := spec.Heartbeat.D()
	if heartbeat == 0 {
		heartbeat = pipelines.DefaultRabbitHeartbeat
	}
	name := "sluice"
	if opts.Name != "" {
		name += " " + opts.Name
	}
	dialer, err := amqpconf.New(spec.URL.Value(), heartbeat, spec.TLS, name)
	if err != nil {
		return nil, err
	}
	set := defaultSettings()
	for _, o := range options {
		o(&set)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	_, vhost := dialer.Endpoint()
	return &Source{
		spec:      spec,
		dialer:    dialer,
		window:    window,
		requeue:   requeue,
		mapper:    newMapper(spec.Queue, dialer.SourceURI(spec.Queue), spec.EventType, spec.KeyFrom),
		logger:    logger.With("connector", "rabbitmq", "pipeline", opts.Name, "queue", spec.Queue, "vhost", vhost),
		set:       set,
		tagBase:   "sluice-" + hex.EncodeToString(rnd[:]),
		out:       make(chan delivery),
		stopping:  make(chan struct{}),
		room:      make(chan struct{}, 1),
		recheck:   make(chan struct{}, 1),
		fatal:     make(chan struct{}),
		healthErr: errors.New("rabbitmq source not connected"),
	}, nil
}

// Connect opens the first session — connection, channel, topology
// (declared, or the queue checked passively), prefetch and consumer —
// retrying transient failures with backoff (each logged and reported by
// Health), and starts consuming. It returns nil once consuming, ctx's
// error, connectors.ErrClosed, or a permanent error (configuration, refused
// credentials or vhost, a declaration conflicting with the existing queue).
// A missing queue (passive check) is transient: it may be created later.
func (s *Source) Connect(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	if s.connecting {
		s.mu.Unlock()
		return errors.New("rabbitmq source: Connect called twice")
	}
	s.connecting = true
	s.connectCancel = cancel
	if s.isStopping() {
		cancel()
	}
	s.mu.Unlock()

	sess, err := s.establish(ctx)
	if err != nil {
		return err
	}
	runCtx, runCancel := context.WithCancel(context.Background())
	s.mu.Lock()
	if s.isStopping() {
		s.mu.Unlock()
		runCancel()
		sess.close()
		return connectors.ErrClosed
	}
	s.started = true
	s.runCancel, s.runDone = runCancel, make(chan struct{})
	s.sess, s.healthErr = sess, nil
	s.mu.Unlock()
	s.set.connected(true)
	go s.run(runCtx, sess)
	return nil
}

// establish opens a session, retrying transient errors with backoff until
// ctx ends.
func (s *Source) establish(ctx context.Context) (*session, error) {
	bo := s.set.newBackoff()
	for attempt := 1; ; attempt++ {
		sess, err := s.setup(ctx)
		if err == nil {
			return sess, nil
		}
		if ctx.Err() != nil {
			if s.isStopping() {
				return nil, connectors.ErrClosed
			}
			return nil, fmt.Errorf("rabbitmq source: connect (last error: %v): %w", err, ctx.Err())
		}
		s.setUnhealthy(err)
		if amqpconf.IsPermanent(err) {
			s.logger.Error("rabbitmq connect failed permanently", "err", err)
			return nil, fmt.Errorf("rabbitmq source: %w", err)
		}
		delay := bo.NextBackOff()
		s.logger.Warn("rabbitmq connect failed", "attempt", attempt, "next_delay", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// setup opens one session. ctx bounds the whole setup: when it ends, the
// connection is closed under the pending calls.
func (s *Source) setup(ctx context.Context) (*session, error) {
	conn, err := s.dialer.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.CloseDeadline(time.Now().Add(closeTimeout)) })
	sess, err := s.open(conn)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
		if sess != nil {
			sess.close()
		}
		return nil, err
	}
	return sess, nil
}

// open sets up the channel, topology, prefetch and consumer on conn. On
// error the caller closes conn; a returned session's watcher then ends.
func (s *Source) open(conn *amqp.Connection) (*session, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	s.mu.Lock()
	s.gen++
	gen := s.gen
	prefetch := s.targetLocked()
	s.mu.Unlock()
	sess := &session{
		gen:       gen,
		conn:      conn,
		ch:        ch,
		acks:      newAckBatcher(ch, s.set.ackLinger),
		dead:      make(chan struct{}),
		watchDone: make(chan struct{}),
	}
	// Registered first, so that a failure of any call below is seen.
	go sess.watch(conn.NotifyClose(make(chan *amqp.Error, 1)), ch.NotifyClose(make(chan *amqp.Error, 1)))
	go sess.acks.run()
	if err := declare(ch, s.spec); err != nil {
		return sess, err
	}
	if err := s.subscribe(sess, prefetch); err != nil {
		return sess, err
	}
	return sess, nil
}

// subscribe starts the session's consumer with the given prefetch: a
// per-consumer basic.qos (global=false, the only kind quorum queues
// support), which applies to consumers started after it, then
// basic.consume.
func (s *Source) subscribe(sess *session, prefetch int) error {
	if err := sess.ch.Qos(prefetch, 0, false); err != nil {
		return fmt.Errorf("basic.qos: %w", err)
	}
	s.mu.Lock()
	tag := fmt.Sprintf("%s-%d.%d", s.tagBase, sess.gen, sess.epoch)
	s.mu.Unlock()
	deliveries, err := sess.ch.Consume(s.spec.Queue, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("basic.consume: %w", err)
	}
	sess.tag, sess.deliveries = tag, deliveries
	s.mu.Lock()
	sess.prefetch = prefetch
	s.mu.Unlock()
	return nil
}

// declare declares the spec's topology, or checks passively that the
// queue exists.
func declare(ch *amqp.Channel, spec pipelines.RabbitMQSource) error {
	d := spec.Declare
	if d == nil {
		if _, err := ch.QueueDeclarePassive(spec.Queue, false, false, false, false, nil); err != nil {
			return fmt.Errorf("queue %q (passive check; set declare to create it): %w", spec.Queue, err)
		}
		return nil
	}
	for _, e := range d.Exchanges {
		typ := e.Type
		if typ == "" {
			typ = pipelines.DefaultRabbitExchangeType
		}
		if err := ch.ExchangeDeclare(e.Name, typ, boolOr(e.Durable, true), false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %q: %w", e.Name, err)
		}
	}
	q := d.Queue
	if _, err := ch.QueueDeclare(spec.Queue, boolOr(q.Durable, true), false, false, false, queueArgs(q)); err != nil {
		return fmt.Errorf("declare queue %q: %w", spec.Queue, err)
	}
	for _, b := range d.Bindings {
		if err := ch.QueueBind(spec.Queue, b.RoutingKey, b.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %q to exchange %q with key %q: %w", spec.Queue, b.Exchange, b.RoutingKey, err)
		}
	}
	return nil
}

// queueArgs are the x-arguments of a declared queue. A classic queue gets
// no x-queue-type, so that queues declared by tools that leave it out are
// equivalent.
func queueArgs(q pipelines.RabbitMQQueue) amqp.Table {
	args := amqp.Table{}
	if q.Type == pipelines.RabbitQueueQuorum {
		args["x-queue-type"] = pipelines.RabbitQueueQuorum
	}
	if q.SingleActiveConsumer {
		args["x-single-active-consumer"] = true
	}
	if q.DeadLetterExchange != "" {
		args["x-dead-letter-exchange"] = q.DeadLetterExchange
	}
	if q.DeadLetterRoutingKey != "" {
		args["x-dead-letter-routing-key"] = q.DeadLetterRoutingKey
	}
	if q.DeliveryLimit > 0 {
		args["x-delivery-limit"] = int64(q.DeliveryLimit)
	}
	if q.MessageTTL > 0 {
		args["x-message-ttl"] = q.MessageTTL.D().Milliseconds()
	}
	if len(args) == 0 {
		return nil
	}
	return args
}

func boolOr(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// run is the supervisor: it hands the session's deliveries to Read and,
// when the session is lost, opens a new one with backoff. Started by
// Connect; ends when ctx is cancelled (Close, which then still owns the
// live session) or on a permanent error.
func (s *Source) run(ctx context.Context, sess *session) {
	defer close(s.runDone)
	for {
		cause := s.consume(ctx, sess)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.sess = nil
		s.mu.Unlock()
		s.setUnhealthy(cause)
		s.set.connected(false)
		// Closes the channel: the broker requeues what it had delivered
		// and not been acknowledged; those AckFuncs now refuse.
		sess.close()
		s.logger.Warn("rabbitmq session lost; reconnecting", "err", cause)
		next, err := s.establish(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.fatalErr = err
			close(s.fatal)
			return
		}
		s.mu.Lock()
		s.sess, s.healthErr = next, nil
		s.mu.Unlock()
		s.set.connected(true)
		s.logger.Info("rabbitmq reconnected", "session", next.gen)
		sess = next
	}
}

// consume hands deliveries to Read until the session dies or ctx ends,
// and replaces the consumer when the credit calls for another prefetch. It
// returns why the session ended (nil when ctx ended).
func (s *Source) consume(ctx context.Context, sess *session) error {
	for {
		select {
		case <-s.recheck:
			if err := s.followCredit(sess); err != nil {
				return err
			}
			continue
		default:
		}
		if len(sess.backlog) > 0 {
			p := sess.backlog[0]
			sess.backlog[0] = pending{}
			sess.backlog = sess.backlog[1:]
			if !s.handOver(ctx, sess, &p.d, p.epoch) {
				if ctx.Err() != nil {
					return nil
				}
				return sess.cause
			}
			continue
		}
		select {
		case <-s.recheck:
			if err := s.followCredit(sess); err != nil {
				return err
			}
		case d, ok := <-sess.deliveries: // nil while paused
			if !ok {
				select {
				case <-sess.dead:
					return sess.cause
				case <-ctx.Done():
					return nil
				case <-time.After(closeTimeout):
					// The channel is open but the consumer is gone:
					// the broker cancelled it (queue deleted, or a quorum
					// queue leader moved).
					return errors.New("consumer cancelled by the broker")
				}
			}
			s.mu.Lock()
			epoch := sess.epoch
			s.mu.Unlock()
			if !s.handOver(ctx, sess, &d, epoch) {
				if ctx.Err() != nil {
					return nil
				}
				return sess.cause
			}
		case <-sess.dead:
			return sess.cause
		case <-ctx.Done():
			return nil
		}
	}
}

// SetCredit implements connectors.CreditFollower; the queue is the one
// lane, so its read-ahead is min(window, n). The hand-over to Read follows
// at once: nothing more is handed out while n messages are unacknowledged.
// The broker's prefetch follows through the supervisor (followCredit).
func (s *Source) SetCredit(n int) {
	s.mu.Lock()
	s.credit = max(n, 1)
	s.mu.Unlock()
	poke(s.room)
	poke(s.recheck)
}

// targetLocked is the read-ahead allowed now: the window, or the credit
// when smaller. The caller holds s.mu.
func (s *Source) targetLocked() int {
	if s.credit > 0 {
		return min(s.window, s.credit)
	}
	return s.window
}

// followCredit makes the consumer's prefetch follow the credit. A running
// consumer's prefetch cannot change (basic.qos with global=false applies to
// consumers started after it), so the consumer is replaced: basic.cancel —
// the deliveries sent before cancel-ok are kept in the backlog, and their
// tags stay valid on this channel, as do those of messages already handed
// out — then basic.qos and basic.consume with the credit as prefetch. A
// lower credit replaces it at once; a higher one once it exceeds the
// prefetch by over a quarter, so that additive steps do not replace it
// each time. The new consumer starts only while the unsettled deliveries
// of replaced consumers (older) are fewer than the credit, so the broker
// never has more than twice the credit delivered to this channel and not
// acknowledged; settling them resumes it. It returns an error only when
// the session is unusable.
func (s *Source) followCredit(sess *session) error {
	s.mu.Lock()
	target, older := s.targetLocked(), sess.older
	s.mu.Unlock()
	cur := sess.prefetch
	if cur > 0 && cur <= target && target*4 <= cur*5 {
		return nil // the same, or higher by at most a quarter
	}
	if cur > 0 {
		// The broker's unacknowledged count is what the replacement's
		// bookkeeping bounds: leave no finished message in it.
		if err := sess.acks.flush(0, false); err != nil {
			return fmt.Errorf("ack before changing the prefetch: %w", err)
		}
		if err := sess.ch.Cancel(sess.tag, false); err != nil {
			return fmt.Errorf("basic.cancel to change the prefetch: %w", err)
		}
		s.mu.Lock()
		epoch := sess.epoch
		s.mu.Unlock()
		// Closed once the deliveries sent before cancel-ok are passed on.
		for d := range sess.deliveries {
			sess.backlog = append(sess.backlog, pending{d: d, epoch: epoch})
		}
		s.mu.Lock()
		sess.epoch++
		sess.older = sess.handed + len(sess.backlog)
		target, older = s.targetLocked(), sess.older
		sess.prefetch = 0
		s.mu.Unlock()
		sess.tag, sess.deliveries = "", nil
	}
	if older >= target {
		s.logger.Debug("rabbitmq consumer paused until deliveries settle", "credit", target, "unsettled", older)
		return nil
	}
	if err := s.subscribe(sess, target); err != nil {
		return err
	}
	s.logger.Debug("rabbitmq prefetch follows credit", "prefetch", target, "unsettled", older)
	return nil
}

// poke leaves one pending signal on c.
func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// handOver passes one delivery of the given consumer epoch to Read once
// fewer than the credit are unacknowledged. When the credit changes first,
// it puts the delivery back at the head of the backlog and leaves the
// change to the caller's loop, so that the prefetch follows even while
// nobody reads, and the delivery passes the new credit's gate. It returns
// false when the session died or ctx ended first; the delivery then stays
// unacknowledged and the broker redelivers it.
func (s *Source) handOver(ctx context.Context, sess *session, d *amqp.Delivery, epoch int) bool {
	putBack := func() bool {
		sess.backlog = append([]pending{{d: *d, epoch: epoch}}, sess.backlog...)
		poke(s.recheck)
		return true
	}
	for {
		s.mu.Lock()
		ok := s.outstanding < s.targetLocked()
		s.mu.Unlock()
		if ok {
			break
		}
		select {
		case <-s.room:
		case <-s.recheck:
			return putBack()
		case <-sess.dead:
			return false
		case <-ctx.Done():
			return false
		}
	}
	if sess.isDead() {
		return false
	}
	msg := s.mapper.message(d, sess.dead, time.Now())
	ack := s.ackFunc(sess, epoch, d.DeliveryTag)
	s.mu.Lock()
	s.outstanding++
	sess.handed++
	s.mu.Unlock()
	select {
	case s.out <- delivery{msg: msg, ack: ack}:
		return true
	case <-s.recheck:
		// Not handed after all: it stays among the session's deliveries.
		s.mu.Lock()
		s.outstanding--
		sess.handed--
		s.mu.Unlock()
		return putBack()
	case <-sess.dead:
	case <-ctx.Done():
	}
	s.settle(sess, epoch)
	return false
}

// ackFunc returns the AckFunc of one delivery. For nil it marks the tag
// done in the session's ack batcher and returns: the basic.ack (usually a
// multiple one covering it) follows within the batcher's linger, at once
// when a batch is due (written by this call, whose error it then returns),
// and at the latest before Close closes the channel. For an error it sends
// basic.nack with requeue (onNack: requeue) or without (dead-letter) at
// once, individually. It acknowledges only on the delivery's own channel:
// once that session is dead it refuses (wrapping connectors.ErrRevoked).
func (s *Source) ackFunc(sess *session, epoch int, tag uint64) connectors.AckFunc {
	var called atomic.Bool
	return func(_ context.Context, err error) error {
		if called.Swap(true) {
			return ErrAckedTwice
		}
		defer s.settle(sess, epoch)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return fmt.Errorf("rabbitmq source: ack after Close: %w", connectors.ErrClosed)
		}
		if sess.isDead() {
			s.mu.Unlock()
			return fmt.Errorf("rabbitmq source: delivery %d of session %d: %w: its channel closed (%v); the broker redelivers the message",
				tag, sess.gen, connectors.ErrRevoked, sess.cause)
		}
		if err == nil {
			// Marked under s.mu, so that Close (which marks the source
			// closed under s.mu, then flushes) sends it.
			batch := s.ackBatchLocked()
			due := sess.acks.mark(tag, batch)
			s.mu.Unlock()
			if due {
				if ferr := sess.acks.flush(batch, false); ferr != nil {
					return fmt.Errorf("rabbitmq source: ack of delivery %d: %w", tag, ferr)
				}
			}
			return nil
		}
		s.mu.Unlock()
		if nerr := sess.ch.Nack(tag, false, s.requeue); nerr != nil {
			return fmt.Errorf("rabbitmq source: nack of delivery %d: %w", tag, nerr)
		}
		sess.acks.settled(tag)
		return nil
	}
}

// ackBatchLocked is how many done tags make a flush due: the configured
// batch, at most half the read-ahead. The broker counts done tags not sent
// yet against the prefetch; the engine's credit is about twice its
// concurrency, so half of it still keeps every call slot fed. The caller
// holds s.mu.
func (s *Source) ackBatchLocked() int {
	return max(1, min(s.set.ackBatch, s.targetLocked()/2))
}

// settle counts one handed-over delivery of sess's consumer epoch as
// finished.
func (s *Source) settle(sess *session, epoch int) {
	s.mu.Lock()
	s.outstanding--
	sess.handed--
	// A paused session resumes once its replaced consumers' deliveries are
	// fewer than the credit; only then is the supervisor worth waking.
	resume := false
	if epoch < sess.epoch {
		sess.older--
		resume = sess.prefetch == 0 && sess.older < s.targetLocked()
	}
	if s.outstanding == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
	s.mu.Unlock()
	poke(s.room)
	if resume {
		poke(s.recheck)
	}
}

// Read returns the next message. It blocks while the prefetch is used up
// (every delivered message unacknowledged) or the queue is empty, and
// while reconnecting.
func (s *Source) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	if s.isStopping() {
		return nil, nil, connectors.ErrClosed
	}
	select {
	case d := <-s.out:
		return d.msg, d.ack, nil
	case <-s.stopping:
		return nil, nil, connectors.ErrClosed
	case <-s.fatal:
		return nil, nil, s.fatalErr
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// Close stops consuming (basic.cancel), waits until every message handed
// to Read is acknowledged or ctx is done, and closes the channel and
// connection; the broker requeues whatever was not acknowledged.
// Idempotent. It returns an error when messages were left unacknowledged.
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.stopping)
		if s.connectCancel != nil {
			s.connectCancel()
		}
		started := s.started
		s.mu.Unlock()
		if !started {
			s.markClosed()
			return
		}
		s.runCancel()
		<-s.runDone
		s.mu.Lock()
		sess := s.sess
		s.mu.Unlock()
		if sess != nil && !sess.isDead() && sess.tag != "" {
			s.cancelConsumer(ctx, sess)
		}
		s.mu.Lock()
		var wait chan struct{}
		if s.outstanding > 0 {
			wait = make(chan struct{})
			s.drained = wait
		}
		s.mu.Unlock()
		if wait != nil {
			select {
			case <-wait:
			case <-ctx.Done():
			}
		}
		left := s.markClosed()
		if sess != nil {
			if !sess.isDead() {
				if err := sess.acks.flush(0, false); err != nil {
					s.logger.Warn("rabbitmq acks before close failed; the broker redelivers those messages", "err", err)
				}
			}
			sess.close()
		}
		s.set.connected(false)
		if left > 0 {
			s.closeErr = fmt.Errorf("rabbitmq source close: %d messages left unacknowledged (the broker redelivers them): %w", left, context.Cause(ctx))
		}
	})
	return s.closeErr
}

// cancelConsumer sends basic.cancel so that the broker delivers nothing
// new while Close waits for acknowledgements. Messages already sent to this
// client stay unacknowledged and are requeued when the channel closes.
func (s *Source) cancelConsumer(ctx context.Context, sess *session) {
	done := make(chan error, 1)
	go func() { done <- sess.ch.Cancel(sess.tag, false) }()
	select {
	case err := <-done:
		if err != nil {
			s.logger.Debug("rabbitmq basic.cancel failed", "err", err)
		}
	case <-ctx.Done():
		// The broker does not answer: closing the connection ends the call.
		_ = sess.conn.CloseDeadline(time.Now().Add(closeTimeout))
		<-done
	}
}

// markClosed refuses later acks and reports how many were outstanding.
func (s *Source) markClosed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.sess = nil
	s.healthErr = connectors.ErrClosed
	return s.outstanding
}

// Health returns nil while a session is consuming; otherwise why not.
func (s *Source) Health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed || s.isStopping():
		return connectors.ErrClosed
	case s.sess != nil && !s.sess.isDead():
		return nil
	}
	return fmt.Errorf("rabbitmq source not connected: %w", s.healthErr)
}

func (s *Source) setUnhealthy(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.healthErr = err
}

func (s *Source) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// Option adjusts a Source beyond what the pipeline spec says.
type Option func(*settings)

type settings struct {
	backoffInitial time.Duration
	backoffMax     time.Duration
	ackBatch       int
	ackLinger      time.Duration
	recorder       Recorder
}

// Recorder receives the source's connection state. Implementations must be
// safe for concurrent use and must not block. The runtime's metrics package
// provides the Prometheus implementation; nil disables recording.
type Recorder interface {
	// Connected reports state changes: true once a session consumes, false
	// when it is lost (and at Close).
	Connected(connected bool)
}

// WithRecorder sets the metrics recorder (nil: none).
func WithRecorder(r Recorder) Option { return func(s *settings) { s.recorder = r } }

func (s settings) connected(ok bool) {
	if s.recorder != nil {
		s.recorder.Connected(ok)
	}
}

func defaultSettings() settings {
	return settings{
		backoffInitial: 250 * time.Millisecond, backoffMax: 10 * time.Second,
		ackBatch: DefaultAckBatch, ackLinger: DefaultAckLinger,
	}
}

// WithAckCoalescing sets how acknowledgements are coalesced (default
// DefaultAckBatch, DefaultAckLinger): a flush is due once batch messages
// are done (at most half the prefetch), or linger after the first
// one; batch 1 sends every ack at once. Values ≤ 0 keep the default.
func WithAckCoalescing(batch int, linger time.Duration) Option {
	return func(s *settings) {
		if batch > 0 {
			s.ackBatch = batch
		}
		if linger > 0 {
			s.ackLinger = linger
		}
	}
}

// WithReconnectBackoff sets the first and the largest delay between
// connection attempts (default 250 ms growing to 10 s, with jitter).
func WithReconnectBackoff(initial, maxDelay time.Duration) Option {
	return func(s *settings) {
		if initial > 0 {
			s.backoffInitial = initial
		}
		if maxDelay >= s.backoffInitial {
			s.backoffMax = maxDelay
		}
	}
}

func (s settings) newBackoff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = s.backoffInitial
	bo.MaxInterval = s.backoffMax
	return bo
}
