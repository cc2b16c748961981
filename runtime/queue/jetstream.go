package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/connectors"
)

// Defaults of Config.
const (
	DefaultStream          = "SLUICE_TASKS"
	DefaultSubjectPrefix   = "tasks"
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultAckWait         = 30 * time.Second
	DefaultMaxAckPending   = 4096
	DefaultPollWait        = 5 * time.Second
	DefaultMaxMessageBytes = 1 << 20
	// DefaultWindow is a Source's read-ahead when connectors.Options.Window
	// is zero.
	DefaultWindow = 256
)

// queueMetadata names the consumer metadata key holding the queue name.
const queueMetadata = "sluice.queue"

// movePause bounds how long Move keeps a queue's consumer paused, so that a
// process dying in the middle of Move does not leave the queue stalled.
const movePause = 5 * time.Minute

// Config holds the stream and consumer settings, the same for the embedded
// server and an external cluster. The zero value of each field means its
// default.
type Config struct {
	// Stream is the JetStream stream holding every queue. Default
	// DefaultStream.
	Stream string
	// SubjectPrefix: queue q is stored under the subject "<prefix>.<q>".
	// Default DefaultSubjectPrefix.
	SubjectPrefix string
	// MaxBytes caps the stream's size; Publish beyond it fails with ErrFull
	// (tasks are never discarded to make room). Zero means no cap other than
	// the server's storage limit.
	MaxBytes int64
	// MaxMessageBytes caps one message (body and headers). Default
	// DefaultMaxMessageBytes.
	MaxMessageBytes int32
	// DuplicateWindow is how long a Publish msgID is remembered for
	// deduplication. Default DefaultDuplicateWindow. Longer windows cost
	// server memory per message; long-term idempotency belongs to the task
	// store.
	DuplicateWindow time.Duration
	// AckWait is how long a delivered, unacknowledged message stays with a
	// reader that stopped sending progress (a crashed process) before it is
	// redelivered. Live Sources extend it while they hold a message, so it
	// does not bound invocation time. Default DefaultAckWait.
	AckWait time.Duration
	// MaxAckPending caps the unacknowledged messages of one queue across all
	// its readers (every process). Each Source's own bound is its Window.
	// Default DefaultMaxAckPending.
	MaxAckPending int
	// PollWait is how long one fetch waits on the server for messages.
	// Default DefaultPollWait.
	PollWait time.Duration
	// Replicas of the stream on a cluster. Default 1 (the embedded server).
	Replicas int
}

func (c Config) withDefaults() Config {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.PollWait == 0 {
		c.PollWait = DefaultPollWait
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.MaxBytes < 0:
		return fmt.Errorf("queue config: MaxBytes %d < 0", c.MaxBytes)
	case c.MaxMessageBytes < 0:
		return fmt.Errorf("queue config: MaxMessageBytes %d < 0", c.MaxMessageBytes)
	case c.DuplicateWindow < 0, c.AckWait < 0, c.PollWait < 0:
		return fmt.Errorf("queue config: negative duration")
	case c.AckWait < time.Second:
		// Progress is sent every AckWait/3; below a second that is chatter.
		return fmt.Errorf("queue config: AckWait %s < 1s", c.AckWait)
	case c.PollWait < 100*time.Millisecond:
		return fmt.Errorf("queue config: PollWait %s < 100ms", c.PollWait)
	case c.MaxAckPending < 1:
		return fmt.Errorf("queue config: MaxAckPending %d < 1", c.MaxAckPending)
	case !ValidName(c.SubjectPrefix):
		return fmt.Errorf("queue config: SubjectPrefix %q: %w", c.SubjectPrefix, ErrInvalidName)
	}
	return nil
}

// JetStream is a Queue on a NATS JetStream connection: OpenNATS returns one
// for an external cluster, and Embedded wraps one for its own server.
type JetStream struct {
	cfg    Config
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream

	mu     sync.Mutex
	closed bool
}

var _ Queue = (*JetStream)(nil)

// OpenNATS connects to the NATS server(s) at url (comma-separated) with opts
// (credentials, TLS: nats.UserCredentials, nats.Secure, ...), and creates or
// updates the stream. The server must have JetStream enabled and be NATS 2.11
// or newer (Move pauses consumers). Errors are permanent configuration
// problems or ctx's error; a server that is down fails the connect.
func OpenNATS(ctx context.Context, url string, cfg Config, log *slog.Logger, opts ...nats.Option) (*JetStream, error) {
	opts = append([]nats.Option{nats.Name("sluice"), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("queue: connect to NATS: %w", err)
	}
	q, err := newJetStream(ctx, nc, cfg, log)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return q, nil
}

// newJetStream sets up the stream on nc and takes ownership of nc.
func newJetStream(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*JetStream, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("queue: JetStream context: %w", err)
	}
	maxBytes := cfg.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "Sluice task queues (subject per queue)",
		Subjects:    []string{cfg.SubjectPrefix + ".>"},
		// Work-queue retention: a message is deleted once acknowledged, and
		// each subject has at most one consumer.
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
		// Never drop an accepted task to make room: refuse new ones.
		Discard:     jetstream.DiscardNew,
		MaxBytes:    maxBytes,
		MaxMsgs:     -1,
		MaxMsgSize:  cfg.MaxMessageBytes,
		Duplicates:  cfg.DuplicateWindow,
		Replicas:    cfg.Replicas,
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("queue: create stream %s: %w", cfg.Stream, err)
	}
	return &JetStream{cfg: cfg, log: log, nc: nc, js: js, stream: stream}, nil
}

func (q *JetStream) subject(queue string) string { return q.cfg.SubjectPrefix + "." + queue }

func (q *JetStream) checkOpen() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	return nil
}

// Publish implements Queue.
func (q *JetStream) Publish(ctx context.Context, queue, msgID string, data []byte, headers map[string]string) (Receipt, error) {
	if err := checkName(queue); err != nil {
		return Receipt{}, err
	}
	if err := q.checkOpen(); err != nil {
		return Receipt{}, err
	}
	msg := &nats.Msg{Subject: q.subject(queue), Data: data, Header: make(nats.Header, len(headers)+1)}
	for k, v := range headers {
		msg.Header[k] = []string{v}
	}
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(q.cfg.Stream)}
	if msgID != "" {
		msg.Header[MsgIDHeader] = []string{msgID}
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := q.js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return Receipt{}, q.publishError(queue, err)
	}
	return Receipt{Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// publishError classifies a failed publish.
func (q *JetStream) publishError(queue string, err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrConnectionClosed) && q.checkOpen() != nil:
		return ErrClosed
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum):
		return fmt.Errorf("queue %s: %w: %v", queue, ErrTooLarge, err)
	case errors.As(err, &apiErr) && isFullError(apiErr):
		return fmt.Errorf("queue %s: %w: %v", queue, ErrFull, err)
	}
	return fmt.Errorf("queue %s: publish: %w", queue, err)
}

// isFullError recognises the server's refusals for lack of room: the
// stream's MaxBytes with DiscardNew (a store failure whose description names
// the limit), or the server's or account's storage limits.
func isFullError(e *jetstream.APIError) bool {
	switch e.ErrorCode {
	case 10002, // resource limits exceeded for account
		10023, // insufficient resources
		10047: // insufficient storage resources available
		return true
	}
	return strings.Contains(e.Description, "maximum bytes exceeded") ||
		strings.Contains(e.Description, "maximum messages exceeded")
}

// CreateQueue implements Queue.
func (q *JetStream) CreateQueue(ctx context.Context, queue string) error {
	if err := checkName(queue); err != nil {
		return err
	}
	if err := q.checkOpen(); err != nil {
		return err
	}
	_, err := q.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       durableName(queue),
		Description:   "Sluice queue " + queue,
		FilterSubject: q.subject(queue),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       q.cfg.AckWait,
		// Retries, backoff and dead-lettering are Sluice's (runtime/retry):
		// the queue redelivers until a reader acknowledges or terminates.
		MaxDeliver:    -1,
		MaxAckPending: q.cfg.MaxAckPending,
		Replicas:      q.cfg.Replicas,
		Metadata:      map[string]string{queueMetadata: queue},
	})
	if err != nil {
		return fmt.Errorf("queue %s: create: %w", queue, err)
	}
	return nil
}

// DeleteQueue implements Queue.
func (q *JetStream) DeleteQueue(ctx context.Context, queue string) error {
	if err := checkName(queue); err != nil {
		return err
	}
	n, err := q.Depth(ctx, queue)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("queue %s: %w: %d messages stored", queue, ErrNotEmpty, n)
	}
	err = q.stream.DeleteConsumer(ctx, durableName(queue))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("queue %s: delete: %w", queue, err)
	}
	return nil
}

// Queues implements Queue.
func (q *JetStream) Queues(ctx context.Context) ([]string, error) {
	if err := q.checkOpen(); err != nil {
		return nil, err
	}
	lister := q.stream.ListConsumers(ctx)
	var out []string
	for info := range lister.Info() {
		if name, ok := info.Config.Metadata[queueMetadata]; ok {
			out = append(out, name)
		}
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("queue: list queues: %w", err)
	}
	return out, nil
}

// Depth implements Queue.
func (q *JetStream) Depth(ctx context.Context, queue string) (int, error) {
	if err := checkName(queue); err != nil {
		return 0, err
	}
	if err := q.checkOpen(); err != nil {
		return 0, err
	}
	subj := q.subject(queue)
	info, err := q.stream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, fmt.Errorf("queue %s: depth: %w", queue, err)
	}
	return int(info.State.Subjects[subj]), nil
}

// Move implements Queue.
func (q *JetStream) Move(ctx context.Context, from, to string, filter Filter) (int, error) {
	if err := checkName(from); err != nil {
		return 0, err
	}
	if err := checkName(to); err != nil {
		return 0, err
	}
	if from == to {
		return 0, fmt.Errorf("queue: move %s to itself", from)
	}
	if err := q.checkOpen(); err != nil {
		return 0, err
	}
	// Pause the source queue's consumer so that nothing is delivered while
	// Move decides what was never delivered: everything after the
	// consumer's delivered sequence.
	start := uint64(1)
	durable := durableName(from)
	cons, err := q.stream.Consumer(ctx, durable)
	switch {
	case err == nil:
		if _, err := q.stream.PauseConsumer(ctx, durable, time.Now().Add(movePause)); err != nil {
			return 0, fmt.Errorf("queue %s: move: pause: %w", from, err)
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if _, err := q.stream.ResumeConsumer(rctx, durable); err != nil {
				q.log.Error("queue: resume after move failed; it resumes by itself later",
					"queue", from, "after", movePause, "err", err)
			}
		}()
		info, err := cons.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("queue %s: move: %w", from, err)
		}
		start = info.Delivered.Stream + 1
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	default:
		return 0, fmt.Errorf("queue %s: move: %w", from, err)
	}
	sinfo, err := q.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("queue %s: move: %w", from, err)
	}
	// Bound the walk by the last sequence now, so that Move ends even while
	// messages keep arriving.
	last := sinfo.State.LastSeq
	subj, toSubj := q.subject(from), q.subject(to)
	moved := 0
	for seq := start; seq <= last; {
		raw, err := q.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return moved, fmt.Errorf("queue %s: move: read %d: %w", from, seq, err)
		}
		if raw.Sequence > last {
			break
		}
		seq = raw.Sequence + 1
		headers := flatten(raw.Header)
		if filter != nil && !filter(&Stored{
			Queue: from, Seq: raw.Sequence, MsgID: headers[MsgIDHeader],
			Headers: headers, Data: raw.Data, Time: raw.Time,
		}) {
			continue
		}
		msg := &nats.Msg{Subject: toSubj, Data: raw.Data, Header: make(nats.Header, len(headers))}
		for k, v := range headers {
			msg.Header[k] = []string{v}
		}
		// A msgID derived from the original sequence: a Move retried after
		// a failure does not copy the same message twice.
		moveID := "sluice-move-" + strconv.FormatUint(raw.Sequence, 10)
		if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(q.cfg.Stream), jetstream.WithMsgID(moveID)); err != nil {
			return moved, q.publishError(to, err)
		}
		if err := q.stream.DeleteMsg(ctx, raw.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return moved, fmt.Errorf("queue %s: move: delete %d after copying it to %s: %w", from, raw.Sequence, to, err)
		}
		moved++
	}
	return moved, nil
}

// Source implements Queue. See source for the acknowledgement semantics.
func (q *JetStream) Source(queue string, opts connectors.Options) connectors.Source {
	return newSource(q, queue, opts)
}

// Close implements Queue. Pending acknowledgements are flushed before the
// connection closes.
func (q *JetStream) Close(ctx context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	var err error
	if q.nc.IsConnected() {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second) // Flush needs a deadline
		defer cancel()
		if ferr := q.nc.FlushWithContext(fctx); ferr != nil {
			err = fmt.Errorf("queue: flush on close: %w", ferr)
		}
	}
	q.nc.Close()
	return err
}
