// Package rocketmq is the RocketMQ sink: it sends each event synchronously
// (SendSync, one message per event, in order) to one topic, in the
// CloudEvents binding of connectors/rocketmq/rocketmqce, and counts a send
// as written only when the broker answers SEND_OK. Messages written by it
// are read by the RocketMQ source as the original CloudEvents.
package rocketmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rocketmq/rmqlog"
	"github.com/sluicehq/sluice/connectors/rocketmq/rmqsend"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/sinks"
)

var _ sinks.Sink = (*Sink)(nil)
var _ connectors.Health = (*Sink)(nil)

// Errors returned by New and Write.
var (
	// ErrConfig is wrapped by New for settings that cannot work.
	ErrConfig = errors.New("rocketmq sink: invalid configuration")
	// ErrClosed is returned by Write after Close.
	ErrClosed = errors.New("rocketmq sink closed")
	// ErrNotStored is wrapped by Write when the broker answered a send
	// with a status other than SEND_OK (flush or replication timeouts,
	// slave not available): the message may or may not be durable, so the
	// write counts as failed and is retried (at-least-once).
	ErrNotStored = errors.New("rocketmq sink: broker did not confirm the message as stored")
)

// Sink sends events to spec.Topic.
//
// Ownership: the client's producer is created and started by the first
// Write (so New never touches the network and a sink for a broker that is
// down can still be built) and shut down by Close; its background
// goroutines belong to the client, which stops them on Shutdown. Write may
// be called concurrently; Close is called once every Write has returned (it
// is idempotent).
type Sink struct {
	spec     pipelines.RocketMQSink
	logger   *slog.Logger
	instance string

	startMu sync.Mutex // serialises producer creation

	mu       sync.Mutex // guards the fields below; never held across sends
	closed   bool
	producer rmqsend.Producer

	// sendErr is the last send error, cleared by the next success.
	sendErr atomic.Pointer[error]
}

// New validates spec and returns a Sink. It does not connect. Errors wrap
// ErrConfig. The first RocketMQ source or sink built in a process routes
// the client library's logs to logger (see package rmqlog).
func New(spec pipelines.RocketMQSink, logger *slog.Logger) (*Sink, error) {
	switch {
	case spec.Topic == "":
		return nil, fmt.Errorf("%w: topic is required", ErrConfig)
	case len(spec.NameServers) == 0:
		return nil, fmt.Errorf("%w: nameServers: at least one is required", ErrConfig)
	case spec.Retries < 0:
		return nil, fmt.Errorf("%w: retries must not be negative", ErrConfig)
	case spec.ACL != nil && (spec.ACL.AccessKey.Value() == "" || spec.ACL.SecretKey.Value() == ""):
		return nil, fmt.Errorf("%w: acl: accessKey and secretKey are both required", ErrConfig)
	}
	if spec.ProducerGroup == "" {
		spec.ProducerGroup = pipelines.DefaultRocketMQProducerGroup
	}
	if spec.Key == "" {
		spec.Key = pipelines.DefaultSinkKey
	}
	if spec.SendTimeout <= 0 {
		spec.SendTimeout = pipelines.Duration(pipelines.DefaultRocketMQSendTimeout)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rmqlog.Install(logger)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("rocketmq sink: instance name: %w", err)
	}
	return &Sink{
		spec:   spec,
		logger: logger.With("sink", "rocketmq", "topic", spec.Topic),
		// Unique per sink: the client shares connections per instance name
		// in the process, and shutting one client down closes them.
		instance: "sluice-sink-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:]),
	}, nil
}

// Write sends events in order, one synchronous send each, and returns nil
// once the broker has answered SEND_OK for every one. On error the events
// before the failed one were written; the caller retries the whole slice.
// Errors wrap sinks.ErrRejected (permanent: an event that cannot be encoded,
// wrapping rocketmqce.ErrInvalidCloudEvent, or one the broker refuses as
// illegal, e.g. over its maximum message size), ErrNotStored, ErrClosed, a
// client error (no route, broker unreachable), or ctx's error.
func (s *Sink) Write(ctx context.Context, events []cloudevents.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	msgs := make([]*primitive.Message, len(events))
	for i, ev := range events {
		m, err := s.message(ev)
		if err != nil {
			return sinks.Rejected(fmt.Errorf("rocketmq sink: event %q: %w", ev.ID(), err))
		}
		msgs[i] = m
	}
	if len(msgs) == 0 {
		return nil
	}
	p, err := s.start()
	if err != nil {
		return err
	}
	for i, m := range msgs {
		res, err := rmqsend.SendSync(ctx, p, m)
		if err == nil && res.Status != primitive.SendOK {
			err = fmt.Errorf("%w: status %s", ErrNotStored, statusName(res.Status))
		}
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				err = fmt.Errorf("%w (%v)", cerr, err)
			}
			s.sendErr.Store(&err)
			err = fmt.Errorf("rocketmq sink: event %q (%d of %d): %w", events[i].ID(), i+1, len(msgs), err)
			if rmqsend.Illegal(err) {
				return sinks.Rejected(err)
			}
			return err
		}
	}
	s.sendErr.Store(nil)
	return nil
}

// message encodes ev with its key, sharding key and tag.
func (s *Sink) message(ev cloudevents.Event) (*primitive.Message, error) {
	enc, err := rocketmqce.Encode(ev, s.spec.Key)
	if err != nil {
		return nil, err
	}
	tag := s.spec.Tag
	if s.spec.TagAttribute != "" {
		v, ok, err := rocketmqce.Attribute(ev, s.spec.TagAttribute)
		if err != nil {
			return nil, err
		}
		if ok {
			tag = v
		}
	}
	if strings.ContainsAny(tag, "|\x01\x02") {
		return nil, fmt.Errorf("%w: tag %q: a tag cannot contain '|', 0x01 or 0x02", rocketmqce.ErrInvalidCloudEvent, tag)
	}
	if strings.ContainsAny(enc.Key, "\x01\x02") {
		return nil, fmt.Errorf("%w: key contains a byte 0x01 or 0x02", rocketmqce.ErrInvalidCloudEvent)
	}
	m := primitive.NewMessage(s.spec.Topic, enc.Body)
	m.WithProperties(enc.Properties)
	if enc.Key != "" {
		m.WithKeys([]string{enc.Key})
		// The same key goes to the same queue (hash selector), so that
		// a downstream consumer sees one key's events in order.
		m.WithShardingKey(enc.Key)
	}
	if tag != "" {
		m.WithTag(tag)
	}
	return m, nil
}

// start returns the producer, creating and starting it on first use. Start
// does not contact the brokers, so it only fails on local problems.
func (s *Sink) start() (rmqsend.Producer, error) {
	if p, err := s.current(); p != nil || err != nil {
		return p, err
	}
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if p, err := s.current(); p != nil || err != nil {
		return p, err
	}
	opts := []producer.Option{
		producer.WithNsResolver(primitive.NewPassthroughResolver(s.spec.NameServers)),
		producer.WithGroupName(s.spec.ProducerGroup),
		producer.WithInstanceName(s.instance),
		producer.WithRetry(s.spec.Retries),
		producer.WithSendMsgTimeout(s.spec.SendTimeout.D()),
		producer.WithQueueSelector(producer.NewHashQueueSelector()),
	}
	if a := s.spec.ACL; a != nil {
		opts = append(opts, producer.WithCredentials(primitive.Credentials{
			AccessKey: a.AccessKey.Value(), SecretKey: a.SecretKey.Value(),
		}))
	}
	p, err := producer.NewDefaultProducer(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: producer: %v", ErrConfig, err)
	}
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("rocketmq sink: start producer: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = p.Shutdown()
		return nil, ErrClosed
	}
	s.producer = p
	return p, nil
}

// current returns the producer if started, or ErrClosed.
func (s *Sink) current() (rmqsend.Producer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	return s.producer, nil
}

// Close shuts the producer down. Sends are synchronous, so nothing is
// buffered; ctx is not needed. Idempotent.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	p := s.producer
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.Shutdown(); err != nil {
		return fmt.Errorf("rocketmq sink close: %w", err)
	}
	return nil
}

// Health returns nil unless the sink is closed or its last send failed
// (until one succeeds again).
func (s *Sink) Health() error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if perr := s.sendErr.Load(); perr != nil {
		return fmt.Errorf("rocketmq sink: last send failed: %w", *perr)
	}
	return nil
}

func statusName(st primitive.SendStatus) string {
	switch st {
	case primitive.SendOK:
		return "SEND_OK"
	case primitive.SendFlushDiskTimeout:
		return "FLUSH_DISK_TIMEOUT"
	case primitive.SendFlushSlaveTimeout:
		return "FLUSH_SLAVE_TIMEOUT"
	case primitive.SendSlaveNotAvailable:
		return "SLAVE_NOT_AVAILABLE"
	default:
		return "UNKNOWN(" + strconv.Itoa(int(st)) + ")"
	}
}
