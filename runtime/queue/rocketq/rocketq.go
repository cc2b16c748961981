// Package rocketq is the task queue (runtime/queue.Queue) on RocketMQ: one
// topic and one consumer group per queue, read by the RocketMQ connector's
// source.
//
// RocketMQ cannot delete a single message, so Move is not supported
// (queue.ErrUnsupported) and the async service runs without placement
// promotion on it, as on Kafka. RocketMQ does not deduplicate either:
// Publish never reports a Duplicate and a repeated msgID stores the message
// twice; the task store makes the second delivery a no-op.
// docs/queues.md ("RocketMQ") describes the topics, groups and guarantees.
//
// The package links rocketmq-client-go, whose consumer has a data race of
// its own (see the Makefile): its tests run without the race detector.
package rocketq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/cebinding"
	"github.com/sluicehq/sluice/connectors/rocketmq/rmqlog"
	"github.com/sluicehq/sluice/connectors/rocketmq/rmqsend"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
	"github.com/sluicehq/sluice/runtime/queue"
)

// Defaults of Config.
const (
	DefaultPrefix = "sluice_tasks"
	// DefaultQueues is the number of message queues of each topic the
	// queue creates (RocketMQ's own defaultTopicQueueNums). They are the
	// unit of parallelism between instances (a group member reads whole
	// queues) and of commit: a message held by a long task or a retry
	// delay holds back its queue's committed offset only.
	DefaultQueues = 4
	// DefaultMaxMessageBytes is the broker's default maxMessageSize;
	// larger messages fail with queue.ErrTooLarge.
	DefaultMaxMessageBytes = 4 << 20
	// DefaultSendTimeout bounds one send attempt.
	DefaultSendTimeout = 10 * time.Second
	// DefaultConsumeTimeout is how long a message may stay delivered and
	// unacknowledged before the client sends it to the group's %RETRY%
	// topic (the connector's consumeTimeout). Longer than the connector's
	// 15 minutes: a task may run for long, and a message that goes the
	// %RETRY% way while its task runs is delivered a second time.
	DefaultConsumeTimeout = time.Hour
)

// maxTopicLen is the longest topic the queue makes: RocketMQ allows 127
// characters, and the group's retry topic "%RETRY%<topic>" must fit too.
const maxTopicLen = 127 - len("%RETRY%")

// ErrConfig is wrapped by Open for settings that cannot work.
var ErrConfig = errors.New("rocketmq queue: invalid configuration")

// Config configures a RocketMQ queue.
type Config struct {
	// NameServers are the name servers, "host:port". Required.
	NameServers []string
	// Prefix names the topics and groups: queue q is topic and consumer
	// group "<Prefix>_<q>" with every '.' of q written '|' (see Topic).
	// ASCII letters, digits, '-' and '_' (default DefaultPrefix).
	Prefix string
	// Queues of each topic CreateQueue or Publish creates (default
	// DefaultQueues). Existing topics are left as they are.
	Queues int
	// MaxMessageBytes bounds a message's body (default
	// DefaultMaxMessageBytes); keep it at most the brokers' maxMessageSize.
	MaxMessageBytes int
	// SendTimeout bounds one send (default DefaultSendTimeout).
	SendTimeout time.Duration
	// ConsumeTimeout: see DefaultConsumeTimeout.
	ConsumeTimeout time.Duration
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func (c Config) withDefaults() (Config, error) {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Queues <= 0 {
		c.Queues = DefaultQueues
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = DefaultSendTimeout
	}
	if c.ConsumeTimeout <= 0 {
		c.ConsumeTimeout = DefaultConsumeTimeout
	}
	switch {
	case len(c.NameServers) == 0:
		return c, fmt.Errorf("%w: at least one name server is required", ErrConfig)
	case !prefixRE.MatchString(c.Prefix) || len(c.Prefix) > maxTopicLen-2:
		return c, fmt.Errorf("%w: prefix %q: want ASCII letters, digits, '-' and '_' (at most %d)", ErrConfig, c.Prefix, maxTopicLen-2)
	}
	return c, nil
}

// Queue is a queue.Queue on RocketMQ. Safe for concurrent use; see
// queue.Queue for the ownership of Close.
//
// Ownership: administration (topics, groups, offsets) goes through short
// requests of its own (admin) that leave nothing running. The client's
// producer is created by the first Publish — so a Queue used only for
// Depth and Queues starts none of the client's goroutines — and shut down
// by Close; its goroutines belong to the client.
type Queue struct {
	cfg      Config
	log      *slog.Logger
	adm      admin
	instance string // the producer's client instance name, unique per Queue

	startMu sync.Mutex // serialises the producer's creation

	mu       sync.Mutex // guards the fields below; never held across requests
	closed   bool
	producer rmqsend.Producer
	topics   map[string]bool // topics known to exist (created or seen)
}

var _ queue.Queue = (*Queue)(nil)

// Open checks cfg and returns the queue; it asks a name server for the
// cluster's brokers, so that a wrong address fails here. The caller owns
// the Queue and closes it. Errors wrap ErrConfig for a bad configuration;
// others are connection errors.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Queue, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rmqlog.Install(log)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("rocketmq queue: instance name: %w", err)
	}
	q := &Queue{
		cfg: cfg, log: log.With("component", "queue", "queue_kind", "rocketmq"),
		adm: admin{nameServers: cfg.NameServers},
		// Unique per Queue: the client shares connections per instance
		// name in the process, and shutting one client down closes them.
		instance: "sluice-queue-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:]),
		topics:   map[string]bool{},
	}
	if _, err := q.adm.masters(ctx); err != nil {
		return nil, fmt.Errorf("rocketmq queue: connect: %w", err)
	}
	return q, nil
}

// Topic is the topic (and the consumer group) of queue name:
// "<Prefix>_<name>" with each '.' written '|'. RocketMQ names allow
// letters, digits, '-', '_', '|' and '%' but no '.', and '|' cannot occur
// in a queue name, so the mapping is one to one.
func (q *Queue) Topic(name string) string {
	return q.cfg.Prefix + "_" + strings.ReplaceAll(name, ".", "|")
}

// queueName inverts Topic; ok is false for topics of other prefixes.
func (q *Queue) queueName(topic string) (string, bool) {
	rest, ok := strings.CutPrefix(topic, q.cfg.Prefix+"_")
	if !ok {
		return "", false
	}
	name := strings.ReplaceAll(rest, "|", ".")
	return name, queue.ValidName(name)
}

// CanMove reports false: see queue.CanMove.
func (q *Queue) CanMove() bool { return false }

// check validates name (a queue name whose topic fits RocketMQ's length
// limit) and that the queue is open.
func (q *Queue) check(name string) error {
	if err := q.validName(name); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("rocketmq queue: %w", queue.ErrClosed)
	}
	return nil
}

// validName accepts a queue name whose topic fits RocketMQ's length limit.
func (q *Queue) validName(name string) error {
	if !queue.ValidName(name) || len(q.Topic(name)) > maxTopicLen {
		return fmt.Errorf("%w: %q", queue.ErrInvalidName, name)
	}
	return nil
}

// ensureTopic creates name's topic unless it is known to exist or has a
// route (an existing topic is left as it is; CreateQueue adds the group). It
// returns once the name servers route the topic, so that the producer and
// readers find it, bounded by ctx and routeWait.
func (q *Queue) ensureTopic(ctx context.Context, name string) error {
	topic := q.Topic(name)
	q.mu.Lock()
	known := q.topics[topic]
	q.mu.Unlock()
	if known {
		return nil
	}
	bqs, err := q.adm.route(ctx, topic)
	if err != nil {
		return fmt.Errorf("queue %s: route of %s: %w", name, topic, err)
	}
	if bqs == nil {
		if err := q.adm.createTopic(ctx, topic, q.cfg.Queues); err != nil {
			return fmt.Errorf("queue %s: %w", name, err)
		}
		if err := q.awaitRoute(ctx, topic); err != nil {
			return fmt.Errorf("queue %s: %w", name, err)
		}
	}
	q.mu.Lock()
	q.topics[topic] = true
	q.mu.Unlock()
	return nil
}

// routeWait bounds the wait for a created topic's route: brokers register
// it with the name servers at once, but a slow registration must not hang
// a Publish.
const routeWait = 30 * time.Second

func (q *Queue) awaitRoute(ctx context.Context, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, routeWait)
	defer cancel()
	for {
		bqs, err := q.adm.route(ctx, topic)
		if err == nil && bqs != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s created but not routed by the name servers: %w (last error: %v)", topic, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (q *Queue) forget(name string) {
	q.mu.Lock()
	delete(q.topics, q.Topic(name))
	q.mu.Unlock()
}

// Publish implements queue.Queue. The message is sent synchronously and
// counts as stored only when the broker answers SEND_OK; msgID travels as
// the property queue.MsgIDHeader (what the source reads) and as the
// message key (KEYS, so that tools find a task's message by its id;
// omitted when msgID holds a space, KEYS' separator), and the headers are
// written as properties in the binding of
// connectors/rocketmq/rocketmqce ("ce-x" → "ce_x"). A message without a
// body (which brokers refuse) is written as a structured JSON CloudEvent.
// The Receipt's Seq is the message's offset in its queue (increasing per
// queue only); Duplicate is never set: RocketMQ does not deduplicate.
//
// Errors: queue.ErrInvalidName, queue.ErrTooLarge (body over
// MaxMessageBytes, properties over RocketMQ's 32 KiB, or the broker's
// MESSAGE_ILLEGAL), queue.ErrFull (the broker refuses writes because its
// disk is full), queue.ErrClosed, ErrNotStored (an answer other than
// SEND_OK: the message may or may not be durable), or a transport error.
func (q *Queue) Publish(ctx context.Context, name, msgID string, data []byte, headers map[string]string) (queue.Receipt, error) {
	if err := q.check(name); err != nil {
		return queue.Receipt{}, err
	}
	if err := ctx.Err(); err != nil {
		return queue.Receipt{}, err
	}
	if len(data) > q.cfg.MaxMessageBytes {
		return queue.Receipt{}, fmt.Errorf("queue %s: %w: %d bytes, the limit is %d", name, queue.ErrTooLarge, len(data), q.cfg.MaxMessageBytes)
	}
	m, err := q.message(name, msgID, data, headers)
	if err != nil {
		return queue.Receipt{}, fmt.Errorf("queue %s: %w", name, err)
	}
	if err := q.ensureTopic(ctx, name); err != nil {
		return queue.Receipt{}, err
	}
	p, err := q.start()
	if err != nil {
		return queue.Receipt{}, err
	}
	res, err := rmqsend.SendSync(ctx, p, m)
	if err == nil && res.Status != primitive.SendOK {
		err = fmt.Errorf("%w: status %s", ErrNotStored, statusName(res.Status))
	}
	if err != nil {
		return queue.Receipt{}, q.publishError(ctx, name, err)
	}
	return queue.Receipt{Seq: uint64(max(res.QueueOffset, 0))}, nil
}

// ErrNotStored is wrapped by Publish when the broker answered a send with
// a status other than SEND_OK (flush or replication timeouts, slave not
// available): the message may or may not be durable, so the publish
// counts as failed; a retry may store it twice, which the task store
// makes harmless.
var ErrNotStored = errors.New("rocketmq queue: broker did not confirm the message as stored")

// message builds the RocketMQ message of a Publish.
func (q *Queue) message(name, msgID string, data []byte, headers map[string]string) (*primitive.Message, error) {
	props := make(map[string]string, len(headers))
	if len(data) == 0 {
		// Brokers refuse an empty body: store the CloudEvent in
		// structured mode, which the source reads back the same.
		ev, ok, err := eventOf(headers)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: RocketMQ cannot store an empty message that is not a CloudEvent", queue.ErrInvalidCloudEvent)
		}
		body, err := ev.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", queue.ErrInvalidCloudEvent, err)
		}
		data = body
		props[rocketmqce.ContentTypeProperty] = rocketmqce.StructuredContentType
	} else {
		for k, v := range headers {
			if len(k) > len(queue.HeaderPrefix) && strings.EqualFold(k[:len(queue.HeaderPrefix)], queue.HeaderPrefix) {
				k = rocketmqce.PropertyPrefix + k[len(queue.HeaderPrefix):]
			}
			props[k] = v
		}
	}
	if msgID != "" {
		props[queue.MsgIDHeader] = msgID
	}
	size := len(msgID) // KEYS
	for k, v := range props {
		if strings.ContainsAny(k, "\x01\x02") || strings.ContainsAny(v, "\x01\x02") {
			return nil, fmt.Errorf("%w: header %q: RocketMQ properties cannot carry the bytes 0x01 and 0x02", queue.ErrInvalidCloudEvent, k)
		}
		size += len(k) + len(v) + 2
	}
	if strings.ContainsAny(msgID, "\x01\x02") {
		return nil, fmt.Errorf("%w: msgID %q: RocketMQ properties cannot carry the bytes 0x01 and 0x02", queue.ErrInvalidCloudEvent, msgID)
	}
	if size > rocketmqce.MaxPropertiesSize {
		return nil, fmt.Errorf("%w: headers take %d bytes as RocketMQ properties, more than %d", queue.ErrTooLarge, size, rocketmqce.MaxPropertiesSize)
	}
	m := primitive.NewMessage(q.Topic(name), data)
	m.WithProperties(props)
	if msgID != "" && !strings.Contains(msgID, primitive.PropertyKeySeparator) {
		m.WithKeys([]string{msgID}) // KEYS are space-separated: lookups only
	}
	return m, nil
}

// eventOf rebuilds the CloudEvent EncodeEvent rendered as headers; ok is
// false when the headers are not one (no ce-specversion).
func eventOf(headers map[string]string) (cloudevents.Event, bool, error) {
	var spec string
	has := false
	for k, v := range headers {
		if strings.EqualFold(k, queue.HeaderPrefix+"specversion") {
			spec, has = v, true
		}
	}
	if !has {
		return cloudevents.Event{}, false, nil
	}
	ev, err := cebinding.NewEvent(spec)
	if err != nil {
		return cloudevents.Event{}, true, fmt.Errorf("%w: %v", queue.ErrInvalidCloudEvent, err)
	}
	ct, hasCT := headers[queue.ContentTypeHeader]
	for k, v := range headers {
		if len(k) <= len(queue.HeaderPrefix) || !strings.EqualFold(k[:len(queue.HeaderPrefix)], queue.HeaderPrefix) {
			continue
		}
		if err := cebinding.SetAttribute(&ev, strings.ToLower(k[len(queue.HeaderPrefix):]), v, hasCT); err != nil {
			return cloudevents.Event{}, true, fmt.Errorf("%w: %v", queue.ErrInvalidCloudEvent, err)
		}
	}
	if hasCT {
		ev.SetDataContentType(ct)
	}
	return ev, true, nil
}

// Broker answers the client reports only as text ("CODE: n DESC: …").
var (
	// SERVICE_NOT_AVAILABLE because the store refuses writes.
	diskFullRE = regexp.MustCompile(`(?i)\bCODE: 14\b.*disk (is )?full`)
	// TOPIC_NOT_EXIST: deleted meanwhile.
	noTopicRE = regexp.MustCompile(`\bCODE: 17\b`)
)

func (q *Queue) publishError(ctx context.Context, name string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("queue %s: publish: %w (%v)", name, cerr, err)
	}
	msg := err.Error()
	switch {
	case rmqsend.Illegal(err):
		return fmt.Errorf("queue %s: %w: %v", name, queue.ErrTooLarge, err)
	case diskFullRE.MatchString(msg):
		return fmt.Errorf("queue %s: %w: %v", name, queue.ErrFull, err)
	case noTopicRE.MatchString(msg), rmqsend.RouteUnknown(err):
		q.forget(name) // deleted meanwhile: the next Publish creates it again
	}
	return fmt.Errorf("queue %s: publish: %w", name, err)
}

// start returns the producer, creating and starting it on first use. Start
// does not contact the brokers, so it only fails on local problems.
func (q *Queue) start() (rmqsend.Producer, error) {
	if p, err := q.current(); p != nil || err != nil {
		return p, err
	}
	q.startMu.Lock()
	defer q.startMu.Unlock()
	if p, err := q.current(); p != nil || err != nil {
		return p, err
	}
	p, err := producer.NewDefaultProducer(
		producer.WithNsResolver(primitive.NewPassthroughResolver(q.cfg.NameServers)),
		producer.WithGroupName("sluice-queue"),
		producer.WithInstanceName(q.instance),
		producer.WithRetry(2),
		producer.WithSendMsgTimeout(q.cfg.SendTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: producer: %v", ErrConfig, err)
	}
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("rocketmq queue: start producer: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		_ = p.Shutdown()
		return nil, fmt.Errorf("rocketmq queue: %w", queue.ErrClosed)
	}
	q.producer = p
	return p, nil
}

// current returns the producer if started, or ErrClosed.
func (q *Queue) current() (rmqsend.Producer, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, fmt.Errorf("rocketmq queue: %w", queue.ErrClosed)
	}
	return q.producer, nil
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

// CreateQueue implements queue.Queue: it creates the topic with
// Config.Queues queues on every master broker unless it exists, and
// creates (or updates) the consumer group. The group's readers start at
// the topic's earliest message when the group has no offset, so messages
// published before are read.
func (q *Queue) CreateQueue(ctx context.Context, name string) error {
	if err := q.check(name); err != nil {
		return err
	}
	if err := q.ensureTopic(ctx, name); err != nil {
		return err
	}
	if err := q.adm.createGroup(ctx, q.Topic(name)); err != nil {
		return fmt.Errorf("queue %s: %w", name, err)
	}
	return nil
}

// DeleteQueue implements queue.Queue: it refuses with queue.ErrNotEmpty
// while Depth is not zero, else deletes the group and the topic (with the
// group's %RETRY% and %DLQ% topics) on every master broker and on the name
// servers. A Publish racing the deletion can be lost with the topic; the
// async service never deletes a queue on RocketMQ (it cannot Move).
func (q *Queue) DeleteQueue(ctx context.Context, name string) error {
	n, err := q.Depth(ctx, name)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("queue %s: %w: %d messages stored", name, queue.ErrNotEmpty, n)
	}
	topic := q.Topic(name)
	q.forget(name)
	if err := q.adm.deleteTopic(ctx, topic, topic, "%RETRY%"+topic, "%DLQ%"+topic); err != nil {
		return fmt.Errorf("queue %s: %w", name, err)
	}
	return nil
}

// Queues implements queue.Queue: the queues whose topic the name servers
// know (created by CreateQueue or by a Publish).
func (q *Queue) Queues(ctx context.Context) ([]string, error) {
	q.mu.Lock()
	closed := q.closed
	q.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("rocketmq queue: %w", queue.ErrClosed)
	}
	topics, err := q.adm.topics(ctx)
	if err != nil {
		return nil, fmt.Errorf("rocketmq queue: list topics: %w", err)
	}
	var out []string
	for _, t := range topics {
		if name, ok := q.queueName(t); ok {
			out = append(out, name)
		}
	}
	return out, nil
}

// Depth implements queue.Queue: the group's lag over the topic's queues —
// max offset minus the group's committed offset (the earliest stored
// offset where the group committed nothing) — plus the same over the
// group's %RETRY% topic, where the client puts messages held past
// ConsumeTimeout. Messages in flight count (the client commits below
// them); acknowledged ones count until the client next persists its
// offsets (every 5 s). A message waiting in the broker's schedule topic on
// its way to %RETRY% is not counted for that delay. Every message whose
// Publish returned before Depth was called is counted: Depth first waits
// until the topic's brokers indexed what their commit logs held (see
// admin.settle).
func (q *Queue) Depth(ctx context.Context, name string) (int, error) {
	if err := q.check(name); err != nil {
		return 0, err
	}
	topic := q.Topic(name)
	settled := map[string]bool{}
	n, err := q.adm.lag(ctx, topic, topic, settled)
	if err != nil {
		return 0, fmt.Errorf("queue %s: depth: %w", name, err)
	}
	r, err := q.adm.lag(ctx, "%RETRY%"+topic, topic, settled)
	if err != nil {
		return 0, fmt.Errorf("queue %s: depth of the retry topic: %w", name, err)
	}
	return int(n + r), nil
}

// Move implements queue.Queue: it always fails with queue.ErrUnsupported,
// since RocketMQ cannot delete single messages.
func (q *Queue) Move(_ context.Context, from, to string, _ queue.Filter) (int, error) {
	return 0, fmt.Errorf("rocketmq queue: move %s to %s: %w", from, to, queue.ErrUnsupported)
}

// Close implements queue.Queue: it shuts the producer down (sends are
// synchronous, nothing is buffered). Idempotent.
func (q *Queue) Close(context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	p := q.producer
	q.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.Shutdown(); err != nil {
		return fmt.Errorf("rocketmq queue: close: %w", err)
	}
	return nil
}
