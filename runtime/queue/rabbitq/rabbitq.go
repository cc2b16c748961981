// Package rabbitq is the task queue (runtime/queue.Queue) on a RabbitMQ
// broker: one durable queue per task queue, written with publisher
// confirms and read by the RabbitMQ connector's source.
//
// RabbitMQ does not deduplicate: Publish never reports a Duplicate and a
// repeated msgID stores the message twice; the task store makes the second
// delivery a no-op. AMQP 0-9-1 cannot list queues nor count unacknowledged
// messages, so Queues reads a registry stream the queue keeps, and Depth
// adds the deliveries this process holds to the broker's ready counts.
// docs/queues.md ("RabbitMQ") describes the queues, the retry queues, the
// registry and the guarantees.
package rabbitq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpce"
	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpconf"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/queue"
)

// Defaults and limits of Config.
const (
	DefaultPrefix = "sluice.tasks"
	// DefaultQueueType: quorum queues are RabbitMQ's replicated durable
	// queue type (Raft, fsync before the confirm); classic queues are
	// single-node.
	DefaultQueueType = pipelines.RabbitQueueQuorum
	// DefaultMaxMessageBytes is the largest message Publish accepts, the
	// same as the JetStream and Kafka queues' default, so that switching
	// queues does not change which tasks are accepted (RabbitMQ itself
	// takes up to 128 MiB, but large messages slow a quorum queue's log).
	DefaultMaxMessageBytes = 1 << 20
	// maxRabbitName is RabbitMQ's limit on queue names, in bytes. A queue
	// whose retry queue's name would exceed it is refused with
	// queue.ErrInvalidName.
	maxRabbitName = 255
)

// Names derived from a queue's RabbitMQ name. '~' never occurs in a valid
// queue name, so these never collide with a task queue.
const (
	retrySuffix    = "~retry"
	registrySuffix = "~queues"
)

// publishChannels bounds the confirm channels used at once: Publish holds
// one for the duration of one confirm, so this many publishes overlap.
const publishChannels = 64

// closeTimeout bounds the connection's close handshake.
const closeTimeout = 2 * time.Second

// Config configures a RabbitMQ queue.
type Config struct {
	// URL is the broker, amqp://user:pass@host:5672/vhost or amqps://…
	// Required.
	URL string
	// Prefix names the RabbitMQ queues: queue q is "<Prefix>.<q>" (default
	// DefaultPrefix). Queue names are limited to what fits RabbitMQ's
	// 255-byte names with the prefix.
	Prefix string
	// QueueType is quorum or classic (default DefaultQueueType). Queues
	// that exist already must have this type (the broker refuses the
	// declaration otherwise).
	QueueType string
	// MaxMessageBytes bounds a message body (default DefaultMaxMessageBytes).
	MaxMessageBytes int
	// Heartbeat is the AMQP heartbeat (default 10 s): how fast a dead
	// connection is noticed.
	Heartbeat time.Duration
	// TLS secures the connection beyond what an amqps:// URL gives (a CA
	// file, a client certificate). Optional.
	TLS *pipelines.TLSSpec
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.QueueType == "" {
		c.QueueType = DefaultQueueType
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = pipelines.DefaultRabbitHeartbeat
	}
	return c
}

// Queue is a queue.Queue on RabbitMQ. Safe for concurrent use; see
// queue.Queue for the ownership of Close.
//
// It owns one AMQP connection for publishing and administration, opened
// again by the first call after it was lost (see connection for the
// backoff), and one goroutine per connection that follows the broker's
// connection.blocked notices; it ends when its connection closes, and
// Close waits for it. Sources have connections of their own.
type Queue struct {
	cfg    Config
	log    *slog.Logger
	dialer amqpconf.Dialer
	args   amqp.Table    // the task queues' x-arguments
	pubSem chan struct{} // one token per confirm channel in use

	// dialSem (capacity 1) is held while (re)connecting; it guards
	// dialBackoff, dialErr and nextDial.
	dialSem     chan struct{}
	dialBackoff *backoff.ExponentialBackOff
	dialErr     error     // the last failed dial's error
	nextDial    time.Time // no dial before this after a failure
	watchers    sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	conn    *amqp.Connection
	blocked bool            // the broker blocked conn's publishers (resource alarm)
	idle    []*pubChan      // confirm channels not in use
	known   map[string]bool // RabbitMQ queues declared (task queues: and registered) by this Queue
	held    map[string]int  // queue → deliveries handed to this Queue's readers, not settled
}

var _ queue.Queue = (*Queue)(nil)

// Open checks cfg and connects, retrying with backoff while the broker is
// unreachable, until ctx ends. The caller owns the Queue and closes it.
// Errors wrap amqpconf.ErrConfig for a bad configuration; others are
// connection errors (refused credentials fail at once, see
// amqpconf.IsPermanent).
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Queue, error) {
	cfg = cfg.withDefaults()
	if cfg.URL == "" {
		return nil, fmt.Errorf("%w: url is required", amqpconf.ErrConfig)
	}
	if !queue.ValidName(cfg.Prefix) || len(cfg.Prefix)+len(".x"+retrySuffix) > maxRabbitName {
		return nil, fmt.Errorf("%w: prefix %q: %w", amqpconf.ErrConfig, cfg.Prefix, queue.ErrInvalidName)
	}
	var args amqp.Table
	switch cfg.QueueType {
	case pipelines.RabbitQueueQuorum:
		args = amqp.Table{"x-queue-type": pipelines.RabbitQueueQuorum}
	case pipelines.RabbitQueueClassic:
		// No x-queue-type, as the connector declares classic queues.
	default:
		return nil, fmt.Errorf("%w: queue type %q: want quorum or classic", amqpconf.ErrConfig, cfg.QueueType)
	}
	dialer, err := amqpconf.New(cfg.URL, cfg.Heartbeat, cfg.TLS, "sluice task queue")
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host, vhost := dialer.Endpoint()
	q := &Queue{
		cfg: cfg, dialer: dialer, args: args,
		log:    log.With("component", "queue", "queue_kind", "rabbitmq", "broker", host, "vhost", vhost),
		pubSem: make(chan struct{}, publishChannels),
		known:  map[string]bool{}, held: map[string]int{},
		dialSem: make(chan struct{}, 1), dialBackoff: backoff.NewExponentialBackOff(),
	}
	q.dialBackoff.InitialInterval, q.dialBackoff.MaxInterval = 250*time.Millisecond, 10*time.Second
	if err := q.connectRetrying(ctx); err != nil {
		_ = q.Close(context.Background())
		return nil, err
	}
	return q, nil
}

// QueueName is the RabbitMQ queue of queue name.
func (q *Queue) QueueName(name string) string { return q.cfg.Prefix + "." + name }

func (q *Queue) retryName(name string) string { return q.QueueName(name) + retrySuffix }
func (q *Queue) registryName() string         { return q.cfg.Prefix + registrySuffix }

// validName reports whether name is a valid queue name whose RabbitMQ
// names fit.
func (q *Queue) validName(name string) bool {
	return queue.ValidName(name) && len(q.retryName(name)) <= maxRabbitName
}

func (q *Queue) check(name string) error {
	if !q.validName(name) {
		return fmt.Errorf("%w: %q", queue.ErrInvalidName, name)
	}
	return q.checkOpen()
}

func (q *Queue) checkOpen() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("rabbitmq queue: %w", queue.ErrClosed)
	}
	return nil
}

// connection returns the live connection, or dials a new one when there
// is none. One caller dials at a time; the others wait for it as long as
// their ctx allows. After a failed dial, calls fail at once with its error
// until the backoff delay (250 ms growing to 10 s) has passed, so that a
// broker that is down costs each caller no more than its own attempt.
func (q *Queue) connection(ctx context.Context) (*amqp.Connection, error) {
	select {
	case q.dialSem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("rabbitmq queue: connect: %w", ctx.Err())
	}
	defer func() { <-q.dialSem }()
	q.mu.Lock()
	c, closed := q.conn, q.closed
	q.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("rabbitmq queue: %w", queue.ErrClosed)
	}
	if c != nil && !c.IsClosed() {
		return c, nil
	}
	if wait := time.Until(q.nextDial); wait > 0 {
		return nil, &dialError{err: q.dialErr, retryIn: wait}
	}
	c, err := q.dialer.Dial(ctx)
	if err != nil && ctx.Err() != nil {
		return nil, &dialError{err: err} // the caller gave up: says nothing of the broker
	}
	if err != nil {
		delay := q.dialBackoff.NextBackOff()
		q.dialErr, q.nextDial = err, time.Now().Add(delay)
		q.log.Warn("rabbitmq queue: connect failed", "next_attempt_in", delay, "err", err)
		return nil, &dialError{err: err}
	}
	q.dialBackoff.Reset()
	return q.adopt(c)
}

// dialError is a failed (or, within the backoff delay, skipped) connect.
type dialError struct {
	err     error
	retryIn time.Duration // > 0: no attempt was made; the next one after this
}

func (e *dialError) Error() string {
	if e.retryIn > 0 {
		return fmt.Sprintf("rabbitmq queue: not connected (next attempt in %s; last error: %v)", e.retryIn.Round(time.Millisecond), e.err)
	}
	return fmt.Sprintf("rabbitmq queue: connect: %v", e.err)
}

func (e *dialError) Unwrap() error { return e.err }

// connectRetrying is connection for Open: it waits out the backoff delays
// until it connects, the error is permanent (amqpconf.IsPermanent), or ctx
// ends.
func (q *Queue) connectRetrying(ctx context.Context) error {
	for {
		_, err := q.connection(ctx)
		var de *dialError
		if err == nil || !errors.As(err, &de) || amqpconf.IsPermanent(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		wait := de.retryIn
		if wait <= 0 {
			wait = time.Until(q.nextDialTime())
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		}
	}
}

func (q *Queue) nextDialTime() time.Time {
	q.dialSem <- struct{}{}
	defer func() { <-q.dialSem }()
	return q.nextDial
}

// adopt makes c the connection, unless the queue was closed meanwhile, and
// starts following its blocked notices.
func (q *Queue) adopt(c *amqp.Connection) (*amqp.Connection, error) {
	blocks := c.NotifyBlocked(make(chan amqp.Blocking, 4))
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		_ = c.Close()
		return nil, fmt.Errorf("rabbitmq queue: %w", queue.ErrClosed)
	}
	q.conn, q.blocked, q.idle = c, false, nil
	q.watchers.Add(1)
	q.mu.Unlock()
	go func() {
		defer q.watchers.Done()
		// The library closes blocks when the connection closes.
		for b := range blocks {
			q.mu.Lock()
			if q.conn == c {
				q.blocked = b.Active
			}
			q.mu.Unlock()
			q.log.Warn("rabbitmq queue: broker flow control", "blocked", b.Active, "reason", b.Reason)
		}
	}()
	return c, nil
}

// withChannel runs fn on a channel of its own, closed afterwards (a
// channel error such as 404 closes only that channel).
func (q *Queue) withChannel(ctx context.Context, fn func(*amqp.Channel) error) error {
	conn, err := q.connection(ctx)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq queue: open channel: %w", err)
	}
	defer func() { _ = ch.Close() }()
	return fn(ch)
}

// pubChan is a channel in confirm mode used by one publish at a time, so
// that a basic.return seen before the confirm belongs to that publish.
type pubChan struct {
	ch      *amqp.Channel
	returns chan amqp.Return
	closes  chan *amqp.Error
}

func (q *Queue) acquire(ctx context.Context) (*pubChan, error) {
	select {
	case q.pubSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	q.mu.Lock()
	for len(q.idle) > 0 {
		pc := q.idle[len(q.idle)-1]
		q.idle = q.idle[:len(q.idle)-1]
		if !pc.ch.IsClosed() {
			q.mu.Unlock()
			return pc, nil
		}
	}
	q.mu.Unlock()
	pc, err := q.newPubChan(ctx)
	if err != nil {
		<-q.pubSem
		return nil, err
	}
	return pc, nil
}

func (q *Queue) newPubChan(ctx context.Context) (*pubChan, error) {
	conn, err := q.connection(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq queue: open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("rabbitmq queue: confirm mode: %w", err)
	}
	// Buffers of one: a channel has one publish in flight, and the library
	// blocks its reader on a full notification channel.
	return &pubChan{
		ch:      ch,
		returns: ch.NotifyReturn(make(chan amqp.Return, 1)),
		closes:  ch.NotifyClose(make(chan *amqp.Error, 1)),
	}, nil
}

// release puts pc back for reuse, or closes it after an unclear outcome.
func (q *Queue) release(pc *pubChan, reuse bool) {
	q.mu.Lock()
	if reuse && !q.closed && !pc.ch.IsClosed() {
		q.idle = append(q.idle, pc)
		reuse = true
	} else {
		reuse = false
	}
	q.mu.Unlock()
	if !reuse {
		_ = pc.ch.Close()
	}
	<-q.pubSem
}

// errUnroutable: the broker returned a mandatory publish (the queue does
// not exist, e.g. deleted by another process since it was declared).
var errUnroutable = errors.New("unroutable: no such queue")

// publish sends msg and waits for the broker's confirm: for a persistent
// message on a durable queue, the broker confirms once it is on disk (and,
// for a quorum queue, on a majority of its replicas).
func (q *Queue) publish(ctx context.Context, routingKey string, msg amqp.Publishing) error {
	q.mu.Lock()
	blocked := q.blocked
	q.mu.Unlock()
	if blocked {
		// A resource alarm (memory or disk) holds every publish until it
		// clears: say so now instead of hanging.
		return fmt.Errorf("%w: the broker blocks publishers (memory or disk alarm)", queue.ErrFull)
	}
	pc, err := q.acquire(ctx)
	if err != nil {
		return err
	}
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, "", routingKey, true, false, msg)
	if err != nil {
		q.release(pc, false)
		return fmt.Errorf("publish: %w", err)
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		q.release(pc, false) // the outcome is unknown
		return fmt.Errorf("publish: waiting for the confirm: %w", err)
	}
	if acked {
		// A return precedes the confirm of its message, and the library
		// hands it over before it reads the confirm.
		select {
		case r, ok := <-pc.returns:
			if ok {
				q.release(pc, true)
				return fmt.Errorf("publish: %w (%d %s)", errUnroutable, r.ReplyCode, r.ReplyText)
			}
		default:
		}
		q.release(pc, true)
		return nil
	}
	q.release(pc, false)
	select {
	case e, ok := <-pc.closes:
		if ok && e != nil {
			if e.Code == amqp.PreconditionFailed && strings.Contains(e.Reason, "max size") {
				return fmt.Errorf("%w: %v", queue.ErrTooLarge, e)
			}
			return fmt.Errorf("publish: channel closed: %w", e)
		}
	default:
	}
	if pc.ch.IsClosed() {
		return errors.New("publish: channel closed before the confirm; the message may or may not be stored")
	}
	return fmt.Errorf("%w: the broker refused the message (basic.nack: a length limit or an internal error)", queue.ErrFull)
}

// ensureQueue declares name's RabbitMQ queue and records it in the
// registry, once per Queue (Publish finds out through an unroutable
// publish when the queue was deleted since).
func (q *Queue) ensureQueue(ctx context.Context, name string) error {
	qn := q.QueueName(name)
	q.mu.Lock()
	known := q.known[qn]
	q.mu.Unlock()
	if known {
		return nil
	}
	err := q.withChannel(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(qn, true, false, false, false, q.args)
		return err
	})
	if err != nil {
		return fmt.Errorf("queue %s: declare %s: %w", name, qn, err)
	}
	if err := q.record(ctx, "+"+name); err != nil {
		return fmt.Errorf("queue %s: %w", name, err)
	}
	q.mu.Lock()
	q.known[qn] = true
	q.mu.Unlock()
	return nil
}

// ensureRetryQueue declares name's retry queue: a durable queue of the
// configured type without readers whose messages, each with its own
// expiration, are dead-lettered back to name's queue when they expire. A
// quorum retry queue dead-letters at least once (it keeps a message until
// name's queue confirmed it); a classic one at most once.
func (q *Queue) ensureRetryQueue(ctx context.Context, name string) error {
	rn := q.retryName(name)
	q.mu.Lock()
	known := q.known[rn]
	q.mu.Unlock()
	if known {
		return nil
	}
	args := amqp.Table{
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": q.QueueName(name),
	}
	if q.cfg.QueueType == pipelines.RabbitQueueQuorum {
		args["x-queue-type"] = pipelines.RabbitQueueQuorum
		args["x-dead-letter-strategy"] = "at-least-once"
		args["x-overflow"] = "reject-publish" // required by at-least-once
	}
	err := q.withChannel(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(rn, true, false, false, false, args)
		return err
	})
	if err != nil {
		return fmt.Errorf("queue %s: declare retry queue %s: %w", name, rn, err)
	}
	q.mu.Lock()
	q.known[rn] = true
	q.mu.Unlock()
	return nil
}

func (q *Queue) forget(name string) {
	q.mu.Lock()
	delete(q.known, q.QueueName(name))
	delete(q.known, q.retryName(name))
	q.mu.Unlock()
}

// Publish implements queue.Queue. The message is persistent and mandatory
// and Publish returns once the broker confirmed it. msgID becomes the
// message-id property; the CloudEvents headers are written as the AMQP
// binding's ("ce-x" → "cloudEvents_x", content-type as the property).
// Receipt.Seq is 0 (RabbitMQ has no store position) and Duplicate is never
// set: RabbitMQ does not deduplicate.
func (q *Queue) Publish(ctx context.Context, name, msgID string, data []byte, headers map[string]string) (queue.Receipt, error) {
	if err := q.check(name); err != nil {
		return queue.Receipt{}, err
	}
	if len(data) > q.cfg.MaxMessageBytes {
		return queue.Receipt{}, fmt.Errorf("queue %s: %w: %d bytes, limit %d", name, queue.ErrTooLarge, len(data), q.cfg.MaxMessageBytes)
	}
	msg := publishing(msgID, data, headers)
	for attempt := 0; ; attempt++ {
		if err := q.ensureQueue(ctx, name); err != nil {
			return queue.Receipt{}, err
		}
		err := q.publish(ctx, q.QueueName(name), msg)
		if errors.Is(err, errUnroutable) && attempt == 0 {
			q.forget(name) // deleted meanwhile: declare it again
			continue
		}
		if err != nil {
			return queue.Receipt{}, fmt.Errorf("queue %s: %w", name, err)
		}
		return queue.Receipt{}, nil
	}
}

// publishing renders a message given to Publish.
func publishing(msgID string, data []byte, headers map[string]string) amqp.Publishing {
	h := make(amqp.Table, len(headers))
	var contentType string
	for k, v := range headers {
		switch {
		case strings.EqualFold(k, queue.ContentTypeHeader):
			contentType = v
		case len(k) > len(queue.HeaderPrefix) && strings.EqualFold(k[:len(queue.HeaderPrefix)], queue.HeaderPrefix):
			h[amqpce.Prefix+strings.ToLower(k[len(queue.HeaderPrefix):])] = v
		default:
			h[k] = v
		}
	}
	return amqp.Publishing{
		Headers: h, ContentType: contentType, DeliveryMode: amqp.Persistent,
		MessageId: msgID, Timestamp: time.Now(), Body: data,
	}
}

// storedHeaders turns a stored message's headers back into the form
// Publish was given (values that are not strings, such as the broker's
// x-death, are left out).
func storedHeaders(d *amqp.Delivery) map[string]string {
	out := make(map[string]string, len(d.Headers)+1)
	for k, v := range d.Headers {
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case []byte:
			s = string(x)
		default:
			continue
		}
		if len(k) > len(amqpce.Prefix) && strings.EqualFold(k[:len(amqpce.Prefix)], amqpce.Prefix) {
			k = queue.HeaderPrefix + strings.ToLower(k[len(amqpce.Prefix):])
		}
		out[k] = s
	}
	if d.ContentType != "" {
		out[queue.ContentTypeHeader] = d.ContentType
	}
	return out
}

// CreateQueue implements queue.Queue: it declares the durable queue and
// records it in the registry Queues reads.
func (q *Queue) CreateQueue(ctx context.Context, name string) error {
	if err := q.check(name); err != nil {
		return err
	}
	return q.ensureQueue(ctx, name)
}

// count is a queue's ready messages and consumers, from a passive
// declaration; a missing queue counts as empty.
func (q *Queue) count(ctx context.Context, rn string) (ready, consumers int, err error) {
	err = q.withChannel(ctx, func(ch *amqp.Channel) error {
		st, err := ch.QueueDeclarePassive(rn, true, false, false, false, nil)
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return nil
		}
		ready, consumers = st.Messages, st.Consumers
		return err
	})
	return ready, consumers, err
}

// Depth implements queue.Queue: the queue's ready messages and its retry
// queue's (both as the broker counts them), plus the deliveries this
// Queue's Sources handed out and have not settled. AMQP 0-9-1 does not
// tell unacknowledged messages, so messages held by readers in other
// processes, and those prefetched by a reader but not yet handed to Read,
// are not counted.
func (q *Queue) Depth(ctx context.Context, name string) (int, error) {
	if err := q.check(name); err != nil {
		return 0, err
	}
	ready, _, err := q.count(ctx, q.QueueName(name))
	if err != nil {
		return 0, fmt.Errorf("queue %s: depth: %w", name, err)
	}
	delayed, _, err := q.count(ctx, q.retryName(name))
	if err != nil {
		return 0, fmt.Errorf("queue %s: depth of the retry queue: %w", name, err)
	}
	q.mu.Lock()
	held := q.held[name]
	q.mu.Unlock()
	return ready + delayed + held, nil
}

// DeleteQueue implements queue.Queue. It refuses with queue.ErrNotEmpty
// while the queue or its retry queue holds messages, this process's
// Sources hold deliveries, or any reader is attached (a reader in another
// process may hold deliveries nobody can count). Then it deletes the retry
// queue and the queue: classic ones only if still empty (and the queue
// unused), which the broker checks atomically; quorum queues support no
// such condition, so a publish or a reader racing the deletion of a quorum
// queue can lose messages (the async service neither publishes to nor
// reads a queue it deletes).
func (q *Queue) DeleteQueue(ctx context.Context, name string) error {
	if err := q.check(name); err != nil {
		return err
	}
	qn, rn := q.QueueName(name), q.retryName(name)
	ready, consumers, err := q.count(ctx, qn)
	if err != nil {
		return fmt.Errorf("queue %s: delete: %w", name, err)
	}
	delayed, _, err := q.count(ctx, rn)
	if err != nil {
		return fmt.Errorf("queue %s: delete: %w", name, err)
	}
	q.mu.Lock()
	held := q.held[name]
	q.mu.Unlock()
	if n := ready + delayed + held; n > 0 || consumers > 0 {
		return fmt.Errorf("queue %s: %w: %d messages stored, %d readers attached", name, queue.ErrNotEmpty, n, consumers)
	}
	q.forget(name)
	// Quorum queues (a quorum queue's retry queue is one too) support
	// neither if-unused nor if-empty: the broker closes the connection.
	classic := q.cfg.QueueType == pipelines.RabbitQueueClassic
	for _, d := range []struct {
		name              string
		ifUnused, ifEmpty bool
	}{
		{rn, false, classic},
		{qn, classic, classic},
	} {
		err := q.withChannel(ctx, func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(d.name, d.ifUnused, d.ifEmpty, false)
			return err
		})
		var ae *amqp.Error
		switch {
		case errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed:
			return fmt.Errorf("queue %s: %w: %v", name, queue.ErrNotEmpty, ae)
		case err != nil:
			return fmt.Errorf("queue %s: delete %s: %w", name, d.name, err)
		}
	}
	if err := q.record(ctx, "-"+name); err != nil {
		return fmt.Errorf("queue %s: deleted, but %w", name, err)
	}
	return nil
}

// The registry is a stream ("<Prefix>~queues"): CreateQueue appends
// "+name", DeleteQueue "-name"; Queues replays it up to a marker it
// appends first. Streams are read without consuming, so every process
// sees every record.

// ensureRegistry declares the registry stream once per Queue.
func (q *Queue) ensureRegistry(ctx context.Context) error {
	reg := q.registryName()
	q.mu.Lock()
	known := q.known[reg]
	q.mu.Unlock()
	if known {
		return nil
	}
	err := q.withChannel(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(reg, true, false, false, false, amqp.Table{"x-queue-type": "stream"})
		return err
	})
	if err != nil {
		return fmt.Errorf("declare the registry stream %s: %w", reg, err)
	}
	q.mu.Lock()
	q.known[reg] = true
	q.mu.Unlock()
	return nil
}

// record appends one record to the registry.
func (q *Queue) record(ctx context.Context, rec string) error {
	if err := q.ensureRegistry(ctx); err != nil {
		return err
	}
	err := q.publish(ctx, q.registryName(), amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(rec)})
	if err != nil {
		return fmt.Errorf("record %q in the registry: %w", rec, err)
	}
	return nil
}

// Queues implements queue.Queue: the queues created (by CreateQueue or a
// Publish) and not deleted since, by any process using the same prefix,
// as the registry stream records them.
func (q *Queue) Queues(ctx context.Context) ([]string, error) {
	if err := q.checkOpen(); err != nil {
		return nil, err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	marker := "=" + hex.EncodeToString(rnd[:])
	if err := q.record(ctx, marker); err != nil {
		return nil, fmt.Errorf("rabbitmq queue: list: %w", err)
	}
	live := map[string]bool{}
	err := q.withChannel(ctx, func(ch *amqp.Channel) error {
		if err := ch.Qos(512, 0, false); err != nil { // streams need a prefetch
			return err
		}
		ds, err := ch.Consume(q.registryName(), "", false, false, false, false, amqp.Table{"x-stream-offset": "first"})
		if err != nil {
			return err
		}
		for {
			select {
			case d, ok := <-ds:
				if !ok {
					return errors.New("registry consumer ended")
				}
				if err := d.Ack(false); err != nil {
					return err
				}
				rec := string(d.Body)
				switch {
				case rec == marker:
					return nil
				case strings.HasPrefix(rec, "+"):
					live[rec[1:]] = true
				case strings.HasPrefix(rec, "-"):
					delete(live, rec[1:])
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("rabbitmq queue: list: read the registry: %w", err)
	}
	out := make([]string, 0, len(live))
	for name := range live {
		if queue.ValidName(name) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Move implements queue.Queue: it takes from's ready messages one by one
// (basic.get), republishes each one filter accepts to to with a confirm
// and then acknowledges it; the others are held until Move ends and then
// go back to from (requeued by the broker asynchronously, just after Move
// returns). Ready messages include ones a reader gave back
// (nack); messages held by readers, and those waiting in from's retry
// queue, stay. RabbitMQ does not deduplicate: a Move interrupted between
// the confirm and the ack leaves a copy in both queues (the task store
// makes the second delivery a no-op).
func (q *Queue) Move(ctx context.Context, from, to string, filter queue.Filter) (int, error) {
	if err := q.check(from); err != nil {
		return 0, err
	}
	if err := q.check(to); err != nil {
		return 0, err
	}
	fn, tn := q.QueueName(from), q.QueueName(to)
	if ready, _, err := q.count(ctx, fn); err != nil || ready == 0 {
		if err != nil {
			return 0, fmt.Errorf("queue %s: move: %w", from, err)
		}
		return 0, nil // missing or nothing ready
	}
	if err := q.ensureQueue(ctx, to); err != nil {
		return 0, err
	}
	moved := 0
	// Closing the channel at the end gives the rejected messages back.
	err := q.withChannel(ctx, func(ch *amqp.Channel) error {
		for ctx.Err() == nil {
			d, ok, err := ch.Get(fn, false)
			if err != nil {
				return fmt.Errorf("basic.get: %w", err)
			}
			if !ok {
				return nil
			}
			st := &queue.Stored{
				Queue: from, Seq: d.DeliveryTag, MsgID: d.MessageId,
				Headers: storedHeaders(&d), Data: d.Body, Time: d.Timestamp,
			}
			if filter != nil && !filter(st) {
				continue
			}
			if err := q.publish(ctx, tn, republishing(&d)); err != nil {
				if errors.Is(err, errUnroutable) {
					q.forget(to) // deleted meanwhile: the next Move declares it again
				}
				return fmt.Errorf("to %s: %w", to, err)
			}
			if err := d.Ack(false); err != nil {
				return fmt.Errorf("ack after the copy: %w", err)
			}
			moved++
		}
		return ctx.Err()
	})
	if err != nil {
		return moved, fmt.Errorf("queue %s: move to %s: %w", from, to, err)
	}
	return moved, nil
}

// republishing is a stored message as it is published again: the same
// properties, persistent, without the expiration (a retry copy's) and the
// user-id (the broker checks it against the connection's user).
func republishing(d *amqp.Delivery) amqp.Publishing {
	return amqp.Publishing{
		Headers: d.Headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: amqp.Persistent, Priority: d.Priority, CorrelationId: d.CorrelationId,
		ReplyTo: d.ReplyTo, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type,
		AppId: d.AppId, Body: d.Body,
	}
}

// retryLater stores a copy of a message in name's retry queue, expiring
// after d, when it is dead-lettered back to name's queue.
func (q *Queue) retryLater(ctx context.Context, name string, msg amqp.Publishing, d time.Duration) error {
	msg.Expiration = strconv.FormatInt(max(d.Milliseconds(), 0), 10)
	for attempt := 0; ; attempt++ {
		if err := q.ensureRetryQueue(ctx, name); err != nil {
			return err
		}
		err := q.publish(ctx, q.retryName(name), msg)
		if errors.Is(err, errUnroutable) && attempt == 0 {
			q.forget(name) // deleted by DeleteQueue elsewhere: declare it again
			continue
		}
		if err != nil {
			return fmt.Errorf("queue %s: retry later: %w", name, err)
		}
		return nil
	}
}

// addHeld counts deliveries handed to (n > 0) or settled by (n < 0) a
// reader of name.
func (q *Queue) addHeld(name string, n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.held[name] += n
	if q.held[name] == 0 {
		delete(q.held, name)
	}
}

// Close implements queue.Queue: it closes the connection and waits for its
// watcher.
func (q *Queue) Close(context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	c := q.conn
	q.conn, q.idle = nil, nil
	q.mu.Unlock()
	var err error
	if c != nil && !c.IsClosed() {
		// Bounded: a broker that does not answer must not hang the owner.
		err = c.CloseDeadline(time.Now().Add(closeTimeout))
	}
	q.watchers.Wait()
	if err != nil && !errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("rabbitmq queue: close: %w", err)
	}
	return nil
}
