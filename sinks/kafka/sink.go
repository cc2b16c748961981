// Package kafka is the Kafka sink: it produces events to one topic in the
// CloudEvents Kafka binary content mode with an idempotent, acks=all
// producer. Records written by it decode with kafkace.Decode (and are read by
// the Kafka source as the original CloudEvents).
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/kafka/kafkace"
	"github.com/sluicehq/sluice/connectors/kafka/kafkaconf"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks"
)

var _ sinks.Sink = (*Sink)(nil)
var _ connectors.Health = (*Sink)(nil)

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("kafka sink closed")

// ErrUnavailable is wrapped by Write when no broker could be reached. It is
// transient: the caller retries the write later.
var ErrUnavailable = errors.New("kafka sink: brokers unavailable")

// Option adjusts a Sink beyond what the spec says.
type Option func(*sarama.Config)

// WithSaramaConfig lets the caller adjust the sarama configuration (timeouts,
// retries, batching). Settings the delivery guarantee rests on — acks=all,
// idempotence, one request in flight per broker, success reporting — are
// re-applied afterwards.
func WithSaramaConfig(tune func(*sarama.Config)) Option { return Option(tune) }

// Sink produces events to spec.Topic.
//
// Ownership: the sarama client and async producer are created by the first
// Write (so New never blocks on the network and a sink for a broker that is
// down can still be built) and closed by Close. One goroutine, started with
// the producer and waited by Close, hands broker confirmations back to the
// waiting Writes. Write may be called concurrently; Close is called once
// every Write has returned (it is idempotent).
type Sink struct {
	spec   pipelines.KafkaSink
	cfg    *sarama.Config
	logger *slog.Logger

	dialMu sync.Mutex // serialises connection attempts

	mu       sync.Mutex // guards the fields below; never held across network calls
	closed   bool
	producer sarama.AsyncProducer
	client   sarama.Client
	done     chan struct{} // closed when the confirmation goroutine ends
	lastErr  error         // last connection error, for Health

	// produceErr is the last produce error, cleared by the next success.
	produceErr atomic.Pointer[error]
}

// batch collects the broker confirmations of one Write.
type batch struct {
	mu      sync.Mutex
	pending int
	errs    []error
	done    chan struct{}
}

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

// New validates spec and returns a Sink. It does not connect. Errors wrap
// kafkaconf.ErrConfig.
func New(spec pipelines.KafkaSink, logger *slog.Logger, options ...Option) (*Sink, error) {
	if spec.Topic == "" {
		return nil, fmt.Errorf("%w: topic is required", kafkaconf.ErrConfig)
	}
	cfg, err := kafkaconf.New(kafkaconf.Common{
		Brokers: spec.Brokers, ClientID: spec.ClientID, Version: spec.Version, TLS: spec.TLS, SASL: spec.SASL,
	})
	if err != nil {
		return nil, err
	}
	// Retries inside sarama keep a transient leader change invisible; the
	// backoff grows so a restarting broker is not hammered. The total stays
	// bounded so that Write fails (and the caller's policy takes over)
	// instead of hanging.
	cfg.Producer.Retry.Max = 5
	cfg.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		return min(100*time.Millisecond<<retries, 2*time.Second)
	}
	cfg.Producer.Timeout = 10 * time.Second
	cfg.Metadata.AllowAutoTopicCreation = false
	for _, o := range options {
		o(cfg)
	}
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1 // sarama's requirement for idempotence
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", kafkaconf.ErrConfig, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Sink{spec: spec, cfg: cfg, logger: logger.With("sink", "kafka", "topic", spec.Topic)}, nil
}

// Write produces events in order and returns nil once the broker has
// acknowledged every one of them (acks=all). On error some may have been
// written; the caller retries the whole slice. Errors wrap ErrUnavailable
// (no broker reachable), ErrClosed, sinks.ErrRejected (an event that cannot
// be encoded, or that the broker refuses for good: too large, invalid,
// unauthorised), a sarama produce error, or ctx's error.
func (s *Sink) Write(ctx context.Context, events []cloudevents.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	msgs := make([]*sarama.ProducerMessage, len(events))
	b := &batch{pending: len(events), done: make(chan struct{})}
	for i, ev := range events {
		rec, err := kafkace.Encode(ev, s.spec.Key)
		if err != nil {
			return sinks.Rejected(fmt.Errorf("kafka sink: event %q: %w", ev.ID(), err))
		}
		m := &sarama.ProducerMessage{
			Topic:    s.spec.Topic,
			Headers:  rec.Headers,
			Metadata: b,
		}
		if rec.Key != nil {
			m.Key = sarama.ByteEncoder(rec.Key)
		}
		if rec.Value != nil {
			m.Value = sarama.ByteEncoder(rec.Value)
		}
		msgs[i] = m
	}
	if len(msgs) == 0 {
		return nil
	}
	p, err := s.connect()
	if err != nil {
		return err
	}
	for i, m := range msgs {
		select {
		case p.Input() <- m:
		case <-ctx.Done():
			// Messages already handed over still complete (into b, which
			// nobody waits for any more).
			return fmt.Errorf("kafka sink: %d of %d events not sent: %w", len(msgs)-i, len(msgs), ctx.Err())
		}
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		return fmt.Errorf("kafka sink: waiting for acknowledgements: %w", ctx.Err())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errs) > 0 {
		err := fmt.Errorf("kafka sink: %w", errors.Join(b.errs...))
		for _, e := range b.errs {
			if isRejection(e) {
				return sinks.Rejected(err)
			}
		}
		return err
	}
	return nil
}

// isRejection reports broker errors that the same record would meet again.
func isRejection(err error) bool {
	for _, kerr := range []sarama.KError{
		sarama.ErrMessageSizeTooLarge, sarama.ErrInvalidMessage, sarama.ErrInvalidMessageSize,
		sarama.ErrMessageSetSizeTooLarge, sarama.ErrInvalidRecord, sarama.ErrTopicAuthorizationFailed,
		sarama.ErrInvalidTopic, sarama.ErrPolicyViolation,
	} {
		if errors.Is(err, kerr) {
			return true
		}
	}
	// sarama refuses records over Producer.MaxMessageBytes itself, before
	// any broker sees them.
	var ce sarama.ConfigurationError
	return errors.As(err, &ce) && strings.Contains(string(ce), "larger than configured Producer.MaxMessageBytes")
}

// connect returns the producer, creating it on first use. A failed attempt
// is reported (ErrUnavailable) rather than retried here: the caller's retry
// policy decides when to try again. Attempts are serialised by dialMu so
// that Health and Close never wait for a dial.
func (s *Sink) connect() (sarama.AsyncProducer, error) {
	if p, err := s.current(); p != nil || err != nil {
		return p, err
	}
	s.dialMu.Lock()
	defer s.dialMu.Unlock()
	if p, err := s.current(); p != nil || err != nil {
		return p, err
	}
	client, err := sarama.NewClient(s.spec.Brokers, s.cfg)
	if err != nil {
		s.setLastErr(err)
		s.logger.Warn("kafka sink connect failed", "err", err)
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	p, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		s.setLastErr(err)
		return nil, fmt.Errorf("%w: producer: %w", ErrUnavailable, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = p.Close()
		_ = client.Close()
		return nil, ErrClosed
	}
	s.client, s.producer, s.lastErr = client, p, nil
	s.done = make(chan struct{})
	go s.confirm(p, s.done)
	return p, nil
}

// current returns the producer if connected, or ErrClosed.
func (s *Sink) current() (sarama.AsyncProducer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	return s.producer, nil
}

func (s *Sink) setLastErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err
}

// confirm routes each broker confirmation to its Write. It ends when the
// producer closes both channels (Close).
func (s *Sink) confirm(p sarama.AsyncProducer, done chan struct{}) {
	defer close(done)
	successes, errs := p.Successes(), p.Errors()
	for successes != nil || errs != nil {
		select {
		case m, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			if s.produceErr.Load() != nil {
				s.produceErr.Store(nil)
			}
			m.Metadata.(*batch).resolve(nil)
		case pe, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			err := pe.Err
			s.produceErr.Store(&err)
			pe.Msg.Metadata.(*batch).resolve(err)
		}
	}
}

// Close flushes buffered records, waits for their confirmations and closes
// the connections. Idempotent; ctx bounds the flush (the producer is then
// closed without waiting further).
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	p, client, done := s.producer, s.client, s.done
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	p.AsyncClose() // flushes, then closes Successes and Errors
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		// Fail the flush fast: the records are reported as errors.
		_ = client.Close()
		<-done
		err = fmt.Errorf("kafka sink close: flush: %w", ctx.Err())
	}
	if cerr := client.Close(); cerr != nil && !errors.Is(cerr, sarama.ErrClosedClient) && err == nil {
		err = fmt.Errorf("kafka sink close: %w", cerr)
	}
	return err
}

// Health returns nil unless the sink is closed, the last connection attempt
// failed, or the last record produced failed (until one succeeds again).
func (s *Sink) Health() error {
	s.mu.Lock()
	closed, lastErr := s.closed, s.lastErr
	s.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case lastErr != nil:
		return fmt.Errorf("%w: %w", ErrUnavailable, lastErr)
	}
	if perr := s.produceErr.Load(); perr != nil {
		return fmt.Errorf("kafka sink: last produce failed: %w", *perr)
	}
	return nil
}
