// Package rabbitmq is the RabbitMQ sink: it publishes events in the
// CloudEvents AMQP binary content mode as persistent, mandatory messages on
// a channel in confirm mode, and reports a write durable only once the
// broker confirmed every message of it and returned none as unroutable.
// Messages written by it decode with amqpce.Decode (and are read by the
// RabbitMQ source as the original CloudEvents).
//
// See docs/connectors/rabbitmq.md.
package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/cebinding"
	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpce"
	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpconf"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks"
)

var _ sinks.Sink = (*Sink)(nil)
var _ connectors.Health = (*Sink)(nil)

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("rabbitmq sink closed")

// ErrUnavailable is wrapped by Write when the broker could not be reached
// or the channel closed before confirming. It is transient: the caller
// retries the write later.
var ErrUnavailable = errors.New("rabbitmq sink: broker unavailable")

// ErrUnroutable is wrapped by Write when the broker returned a message
// (mandatory publishing): no queue is bound for its routing key. Retrying
// helps only once a binding exists.
var ErrUnroutable = errors.New("rabbitmq sink: message unroutable")

// ErrNacked is wrapped by Write when the broker refused a message (a
// publisher-confirm nack, e.g. a full queue with overflow reject-publish).
var ErrNacked = errors.New("rabbitmq sink: message nacked by the broker")

// MaxMessageSize is the largest body the sink publishes: RabbitMQ's
// default max_message_size (128 MiB). A larger event is rejected for good
// (sinks.ErrRejected) before anything is sent; the broker would close the
// channel, failing every write sharing it.
const MaxMessageSize = 128 << 20

// closeTimeout bounds the connection close handshake.
const closeTimeout = 2 * time.Second

// confirmBuffer is the capacity of the confirmation channel; the listener
// drains it continuously, so it only smooths bursts.
const confirmBuffer = 256

// Sink publishes to spec.Exchange.
//
// Ownership: the connection and its confirm-mode channel (a "publisher")
// are opened by the first Write (so New never blocks on the network) and
// again by the first Write after the channel was lost; Close closes them.
// Each publisher has one listener goroutine, which hands confirmations and
// returns back to the waiting Writes and ends when the channel closes;
// Close waits for it. Write may be called concurrently: publishes are
// serialised on the channel (so delivery tags follow publish order) while
// the confirmations are awaited concurrently. Close is called once every
// Write has returned (it is idempotent).
type Sink struct {
	spec   pipelines.RabbitMQSink
	dialer amqpconf.Dialer
	logger *slog.Logger

	dialMu sync.Mutex // serialises connection attempts

	mu      sync.Mutex // guards the fields below; never held across network calls
	closed  bool
	pub     *publisher // nil until connected, and after a loss
	lastErr error      // last connection or channel error, for Health
}

// publisher is one connection and confirm-mode channel.
type publisher struct {
	conn *amqp.Connection
	ch   *amqp.Channel

	pubMu sync.Mutex // held while publishing

	mu      sync.Mutex // guards the fields below
	pending map[uint64]*pendingMsg
	cause   error // why the channel closed; set when dead
	dead    bool

	done chan struct{} // closed when the listener has ended
}

type pendingMsg struct {
	b        *batch
	msgID    string
	returned *amqp.Return
}

// batch collects the confirmations of one Write.
type batch struct {
	mu      sync.Mutex
	pending int
	errs    []error
	done    chan struct{}
}

func newBatch(n int) *batch { return &batch{pending: n, done: make(chan struct{})} }

func (b *batch) resolve(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil && len(b.errs) < 8 { // a few examples are enough
		b.errs = append(b.errs, err)
	}
	b.pending--
	if b.pending == 0 {
		close(b.done)
	}
}

func (b *batch) err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errs) == 0 {
		return nil
	}
	return fmt.Errorf("rabbitmq sink: %w", errors.Join(b.errs...))
}

// New validates spec and returns a Sink. It does not connect. Errors wrap
// amqpconf.ErrConfig.
func New(spec pipelines.RabbitMQSink, logger *slog.Logger) (*Sink, error) {
	if spec.Exchange == "" && spec.RoutingKey == "" && spec.RoutingKeyFrom == "" {
		return nil, fmt.Errorf("%w: the default exchange needs a routingKey (the queue name) or routingKeyFrom", amqpconf.ErrConfig)
	}
	if _, err := routingKeyOf(cloudevents.NewEvent(), spec); err != nil {
		return nil, err
	}
	heartbeat := spec.Heartbeat.D()
	if heartbeat == 0 {
		heartbeat = pipelines.DefaultRabbitHeartbeat
	}
	// The connection name shows in the broker's tools (and lets tests find
	// the connection).
	dialer, err := amqpconf.New(spec.URL.Value(), heartbeat, spec.TLS, "sluice sink "+spec.Exchange+"/"+spec.RoutingKey)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Sink{spec: spec, dialer: dialer, logger: logger.With("sink", "rabbitmq", "exchange", spec.Exchange)}, nil
}

// routingKeyOf returns the routing key of ev: the routingKeyFrom attribute
// when ev has it, else spec.RoutingKey.
func routingKeyOf(ev cloudevents.Event, spec pipelines.RabbitMQSink) (string, error) {
	name := spec.RoutingKeyFrom
	switch name {
	case "":
		return spec.RoutingKey, nil
	case "type", "subject", "source", "id":
	default:
		ext, ok := strings.CutPrefix(name, pipelines.RabbitRoutingKeyFromExtensionPrefix)
		if !ok || ext == "" {
			return "", fmt.Errorf("%w: routingKeyFrom %q: want type, subject, source, id or extension:NAME", amqpconf.ErrConfig, name)
		}
		name = ext
	}
	v, ok, err := cebinding.Attribute(ev, name)
	if err != nil {
		return "", fmt.Errorf("%w: %v", amqpce.ErrInvalidCloudEvent, err)
	}
	if !ok {
		return spec.RoutingKey, nil
	}
	return v, nil
}

// Write publishes events in order and returns nil once the broker has
// confirmed every one of them and returned none. On error some may have
// been written; the caller retries the whole slice. Errors wrap
// ErrUnavailable (broker unreachable or channel lost: transient), ErrClosed,
// ErrUnroutable, ErrNacked (both transient: a binding or room may appear),
// sinks.ErrRejected (an event that cannot be encoded, wrapping
// amqpce.ErrInvalidCloudEvent, or is larger than MaxMessageSize:
// permanent), or ctx's error.
func (s *Sink) Write(ctx context.Context, events []cloudevents.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	type out struct {
		key string
		msg amqp.Publishing
	}
	msgs := make([]out, len(events))
	for i, ev := range events {
		m, err := amqpce.Encode(ev)
		if err == nil {
			msgs[i].key, err = routingKeyOf(ev, s.spec)
		}
		if err == nil && len(m.Body) > MaxMessageSize {
			err = fmt.Errorf("%d bytes exceed the broker's message size limit of %d", len(m.Body), MaxMessageSize)
		}
		if err != nil {
			return sinks.Rejected(fmt.Errorf("rabbitmq sink: event %q: %w", ev.ID(), err))
		}
		msgs[i].msg = m
	}
	if len(msgs) == 0 {
		if _, err := s.current(); err != nil {
			return err
		}
		return nil
	}
	p, err := s.connect(ctx)
	if err != nil {
		return err
	}
	b := newBatch(len(msgs))
	p.pubMu.Lock()
	for i, m := range msgs {
		if err := ctx.Err(); err != nil {
			p.pubMu.Unlock()
			// Messages already published still resolve (into b, which
			// nobody waits for any more).
			return fmt.Errorf("rabbitmq sink: %d of %d events not sent: %w", len(msgs)-i, len(msgs), err)
		}
		seq := p.ch.GetNextPublishSeqNo()
		if err := p.register(seq, b, m.msg.MessageId); err != nil {
			p.pubMu.Unlock()
			return err
		}
		if err := p.ch.PublishWithContext(ctx, s.spec.Exchange, m.key, true, false, m.msg); err != nil {
			p.unregister(seq)
			p.pubMu.Unlock()
			s.lost(p, err)
			return fmt.Errorf("%w: publish: %w", ErrUnavailable, err)
		}
	}
	p.pubMu.Unlock()
	select {
	case <-b.done:
		return b.err()
	case <-ctx.Done():
		return fmt.Errorf("rabbitmq sink: waiting for confirms: %w", ctx.Err())
	}
}

// register records an unconfirmed publish. It fails when the channel is
// already gone.
func (p *publisher) register(seq uint64, b *batch, msgID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return fmt.Errorf("%w: channel closed: %w", ErrUnavailable, p.cause)
	}
	p.pending[seq] = &pendingMsg{b: b, msgID: msgID}
	return nil
}

func (p *publisher) unregister(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pending, seq)
}

// listen resolves pending publishes from the channel's confirmations and
// returns. It ends when the channel closes (both notification channels are
// closed then), failing every publish still unconfirmed.
//
// The broker sends basic.return before the basic.ack of the same message,
// and the library hands both over from one reader goroutine, blocking on
// the unbuffered returns channel: so a return is always recorded here
// before the confirmation it precedes.
func (p *publisher) listen(confirms <-chan amqp.Confirmation, returns <-chan amqp.Return, chClosed <-chan *amqp.Error, onDead func(error)) {
	defer close(p.done)
	for confirms != nil || returns != nil {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			p.markReturned(r)
		case c, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			p.confirm(c)
		}
	}
	var cause error = errors.New("channel closed")
	select {
	case e, ok := <-chClosed:
		if ok && e != nil {
			cause = e
		}
	default:
	}
	p.mu.Lock()
	p.dead, p.cause = true, cause
	left := p.pending
	p.pending = nil
	p.mu.Unlock()
	// Forgotten before the waiting Writes learn of the failure, so that
	// their retry reconnects and Health already reports it.
	onDead(cause)
	for _, m := range left {
		m.b.resolve(fmt.Errorf("%w: channel closed before the broker confirmed: %w", ErrUnavailable, cause))
	}
	// A channel error leaves the connection open.
	_ = p.conn.CloseDeadline(time.Now().Add(closeTimeout))
}

// markReturned marks the oldest unconfirmed publish with the returned
// message's id. Returns carry no delivery tag, and ids are unique per
// event, so the oldest one is the right one (or an equivalent duplicate).
func (p *publisher) markReturned(r amqp.Return) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var oldest uint64
	for seq, m := range p.pending {
		if m.msgID == r.MessageId && m.returned == nil && (oldest == 0 || seq < oldest) {
			oldest = seq
		}
	}
	if oldest != 0 {
		p.pending[oldest].returned = &r
	}
}

func (p *publisher) confirm(c amqp.Confirmation) {
	p.mu.Lock()
	m, ok := p.pending[c.DeliveryTag]
	delete(p.pending, c.DeliveryTag)
	p.mu.Unlock()
	if !ok {
		return // a publish abandoned by its Write
	}
	var err error
	switch {
	case !c.Ack:
		err = fmt.Errorf("%w: message %q", ErrNacked, m.msgID)
	case m.returned != nil:
		err = fmt.Errorf("%w: message %q to exchange %q with routing key %q: %d %s",
			ErrUnroutable, m.msgID, m.returned.Exchange, m.returned.RoutingKey, m.returned.ReplyCode, m.returned.ReplyText)
	}
	m.b.resolve(err)
}

// current returns the live publisher (nil if none), or ErrClosed.
func (s *Sink) current() (*publisher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	return s.pub, nil
}

// connect returns the live publisher, opening one if there is none. A
// failed attempt is reported (ErrUnavailable) rather than retried here: the
// caller's retry policy decides when to try again. Attempts are serialised
// by dialMu so that Health and Close never wait for a dial.
func (s *Sink) connect(ctx context.Context) (*publisher, error) {
	if p, err := s.current(); p != nil || err != nil {
		return p, err
	}
	s.dialMu.Lock()
	defer s.dialMu.Unlock()
	if p, err := s.current(); p != nil || err != nil {
		return p, err
	}
	p, err := s.open(ctx)
	if err != nil {
		s.setLastErr(err)
		s.logger.Warn("rabbitmq sink connect failed", "err", err)
		if amqpconf.IsPermanent(err) {
			return nil, fmt.Errorf("rabbitmq sink: %w", err)
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		p.close()
		return nil, ErrClosed
	}
	s.pub, s.lastErr = p, nil
	s.mu.Unlock()
	return p, nil
}

// open dials and puts a channel in confirm mode.
func (s *Sink) open(ctx context.Context) (*publisher, error) {
	conn, err := s.dialer.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
		return nil, fmt.Errorf("confirm-mode channel: %w", err)
	}
	p := &publisher{conn: conn, ch: ch, pending: map[uint64]*pendingMsg{}, done: make(chan struct{})}
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
	returns := ch.NotifyReturn(make(chan amqp.Return))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, confirmBuffer))
	go p.listen(confirms, returns, chClosed, func(cause error) { s.forget(p, cause) })
	return p, nil
}

// forget drops p after its channel failed, so that the next Write opens a
// new one. It reports whether p was the live publisher.
func (s *Sink) forget(p *publisher, cause error) bool {
	s.mu.Lock()
	mine := s.pub == p
	if mine {
		s.pub = nil
		s.lastErr = cause
	}
	s.mu.Unlock()
	if mine {
		s.logger.Warn("rabbitmq sink channel lost; the next write reconnects", "err", cause)
	}
	return mine
}

// lost forgets p after a publish failed and closes its connection (which
// ends its listener).
func (s *Sink) lost(p *publisher, cause error) {
	if s.forget(p, cause) {
		_ = p.conn.CloseDeadline(time.Now().Add(closeTimeout))
	}
}

// close closes the connection and waits for the listener.
func (p *publisher) close() {
	_ = p.conn.CloseDeadline(time.Now().Add(closeTimeout))
	<-p.done
}

// Close closes the channel and connection. Idempotent. Writes have all
// returned (the Sink contract), so nothing is waiting for confirms.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	p := s.pub
	s.pub = nil
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	deadline := time.Now().Add(closeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	err := p.conn.CloseDeadline(deadline)
	<-p.done
	if err != nil && !errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("rabbitmq sink close: %w", err)
	}
	return nil
}

// Health returns nil unless the sink is closed or the last connection
// attempt or channel failed (until a connection succeeds again).
func (s *Sink) Health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.lastErr != nil:
		return fmt.Errorf("%w: %w", ErrUnavailable, s.lastErr)
	}
	return nil
}

func (s *Sink) setLastErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err
}
