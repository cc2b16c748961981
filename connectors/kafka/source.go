// Package kafka is the Kafka source: a sarama consumer group whose
// partitions become lanes, with a bounded window of unacknowledged messages
// per partition and commits of the contiguous acknowledged prefix only.
//
// See docs/connectors/kafka.md for settings, the record → CloudEvent mapping,
// guarantees, the memory bound and rebalance behaviour.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/kafka/kafkaconf"
	"github.com/sluicehq/sluice/pipelines"
)

// DefaultWindow is the per-partition window when connectors.Options.Window is 0.
const DefaultWindow = 1024

// Buffering below the window (see "Memory bound" in docs/connectors/kafka.md).
const (
	maxChannelBuffer = 64        // records sarama queues per partition ahead of us
	fetchDefault     = 256 << 10 // bytes asked per partition per fetch
	fetchMaxBytes    = 16 << 20  // bytes per fetch response (all partitions of a broker)
	// maxProcessingTime is how long sarama waits for a partition we are
	// not reading (its lane is at its credit share) before fetching
	// without it. sarama issues a broker's next fetch only once every
	// partition of the last one has been handed over or has timed out, so
	// with the default 100 ms one full lane stalled all the others: with a
	// 5 ms function and the read-ahead following the credit, B1 ran at 0.3
	// of its rate. But a partition that times out is dropped from the fetch
	// and re-added only on sarama's next 100 ms subscription tick, so when
	// the subscribed topics have a single partition — nothing to stall —
	// the source keeps sarama's default (soloProcessingTime): with 5 ms a
	// one-partition pipeline at its credit sat idle a third of the time (B3).
	maxProcessingTime  = 5 * time.Millisecond
	soloProcessingTime = 100 * time.Millisecond
	backoffMax         = 10 * time.Second
	// finalGrace is how long Close lets the final commits run once its ctx
	// has ended.
	finalGrace = 5 * time.Second
)

var _ connectors.Source = (*Source)(nil)
var _ connectors.Health = (*Source)(nil)

// Source consumes the spec's topics with a consumer group. Each owned
// partition is a lane named "topic/partition".
//
// Ownership: Connect starts two goroutines (the consumer group loop and the
// error watcher), plus, per session, one committer and one goroutine per
// claimed partition owned by sarama; Close stops and waits for all of them.
// Concurrency follows connectors.Source; Health may be called at any time.
type Source struct {
	spec   pipelines.KafkaSource
	cfg    *sarama.Config
	window int
	credit *credit // window per lane under the runtime's credit
	set    settings
	rec    recorder
	mapper mapper
	logger *slog.Logger

	// deliveries hands messages from partition goroutines to Read. It is
	// unbuffered so that a message is either in the runtime's hands or
	// still owned by its lane.
	deliveries chan delivery
	stopping   chan struct{} // closed by Close
	ready      chan struct{} // closed once the first session consumes all its claims
	readyOnce  sync.Once
	fatal      chan struct{} // closed when the loop stopped on a permanent error
	fatalErr   error         // written before fatal is closed
	sessions   atomic.Int64  // sessions set up so far
	healthy    atomic.Bool
	abandoned  atomic.Int64 // messages left unacknowledged by Close

	mu         sync.Mutex
	closeCtx   context.Context // Close's ctx; set before stopping is closed
	connecting bool
	started    bool // the goroutines below run
	client     sarama.Client
	group      sarama.ConsumerGroup
	loopCancel context.CancelFunc
	loopDone   chan struct{}
	errorsDone chan struct{}
	healthErr  error

	closeOnce sync.Once
	closeErr  error
}

type delivery struct {
	msg *connectors.Message
	ack connectors.AckFunc
}

// New validates spec and returns an unconnected Source. opts.Window bounds
// the messages read but not yet committable per partition (default
// DefaultWindow). Errors wrap kafkaconf.ErrConfig.
func New(spec pipelines.KafkaSource, opts connectors.Options, logger *slog.Logger, options ...Option) (*Source, error) {
	if len(spec.Topics) == 0 {
		return nil, fmt.Errorf("%w: topics: at least one is required", kafkaconf.ErrConfig)
	}
	for i, t := range spec.Topics {
		if t == "" {
			return nil, fmt.Errorf("%w: topics[%d]: empty", kafkaconf.ErrConfig, i)
		}
	}
	if spec.Group == "" {
		return nil, fmt.Errorf("%w: group is required", kafkaconf.ErrConfig)
	}
	var initial int64
	switch spec.Start {
	case "", "earliest":
		initial = sarama.OffsetOldest
	case "latest":
		initial = sarama.OffsetNewest
	default:
		return nil, fmt.Errorf("%w: start %q: want earliest or latest", kafkaconf.ErrConfig, spec.Start)
	}
	window := opts.Window
	if window == 0 {
		window = DefaultWindow
	}
	if window < 0 {
		return nil, fmt.Errorf("%w: window %d: must be positive", kafkaconf.ErrConfig, window)
	}
	clientID := spec.ClientID
	if clientID == "" && opts.Name != "" {
		clientID = kafkaconf.DefaultClientID + "-" + opts.Name
	}
	cfg, err := kafkaconf.New(kafkaconf.Common{
		Brokers: spec.Brokers, ClientID: clientID, Version: spec.Version, TLS: spec.TLS, SASL: spec.SASL,
	})
	if err != nil {
		return nil, err
	}
	set := defaultSettings()
	for _, o := range options {
		o(&set)
	}
	cfg.ChannelBufferSize = min(window, maxChannelBuffer)
	cfg.Consumer.Fetch.Default = fetchDefault
	cfg.Consumer.Fetch.MaxBytes = fetchMaxBytes
	cfg.Consumer.MaxProcessingTime = maxProcessingTime
	// A consumer must not create the topics it subscribes to by mistake.
	cfg.Metadata.AllowAutoTopicCreation = false
	// Metadata of the subscribed topics only: sarama's default keeps every
	// topic of the cluster (1–1.5 MiB of live heap with the ~5,000 topics
	// of the shared test broker, twice that in Go's heap target — B5).
	cfg.Metadata.Full = false
	if set.tune != nil {
		set.tune(cfg)
	}
	// A drain longer than the rebalance timeout gets this member evicted
	// and its final commit refused.
	if limit := cfg.Consumer.Group.Rebalance.Timeout * 3 / 4; set.revokeGrace > limit {
		set.revokeGrace = limit
	}
	// What the source's guarantees rest on, whatever the tuning said.
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Offsets.Initial = initial
	cfg.Consumer.Return.Errors = true
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", kafkaconf.ErrConfig, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Source{
		spec:       spec,
		cfg:        cfg,
		window:     window,
		credit:     newCredit(window),
		set:        set,
		rec:        recorder{set.recorder},
		mapper:     newMapper(spec.Brokers, spec.EventType),
		logger:     logger.With("connector", "kafka", "group", spec.Group),
		deliveries: make(chan delivery),
		stopping:   make(chan struct{}),
		ready:      make(chan struct{}),
		fatal:      make(chan struct{}),
		healthErr:  errors.New("kafka source not connected"),
	}, nil
}

// Connect connects to the cluster, retrying with backoff while no broker is
// reachable, starts the consumer group loop and waits until the first group
// session consumes every partition assigned to it (so that with start:
// latest, a record produced after Connect returns is delivered). It returns nil once consuming, ctx's error,
// connectors.ErrClosed, or a permanent error (bad configuration,
// authentication or authorization refused). On error nothing keeps running.
func (s *Source) Connect(ctx context.Context) error {
	s.mu.Lock()
	if s.connecting {
		s.mu.Unlock()
		return errors.New("kafka source: Connect called twice")
	}
	s.connecting = true
	s.mu.Unlock()

	client, err := s.dial(ctx)
	if err != nil {
		return err
	}
	// Before any partition consumer exists, which is when sarama reads it.
	if s.singlePartition(client) {
		s.cfg.Consumer.MaxProcessingTime = soloProcessingTime
	}
	group, err := sarama.NewConsumerGroupFromClient(s.spec.Group, client)
	if err != nil {
		_ = client.Close()
		return fmt.Errorf("kafka source: consumer group: %w", err)
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	select {
	case <-s.stopping:
		s.mu.Unlock()
		cancel()
		_ = group.Close()
		_ = client.Close()
		return connectors.ErrClosed
	default:
	}
	s.client, s.group, s.loopCancel = client, group, cancel
	s.loopDone, s.errorsDone = make(chan struct{}), make(chan struct{})
	s.started = true
	s.mu.Unlock()
	go s.watchErrors(group.Errors())
	go s.run(loopCtx)

	select {
	case <-s.ready:
		return nil
	case <-s.stopping:
		return connectors.ErrClosed
	case <-s.fatal:
		_ = s.Close(context.Background())
		return s.fatalErr
	case <-ctx.Done():
		s.mu.Lock()
		last := s.healthErr
		s.mu.Unlock()
		// ctx is done, so Close does not wait for anything.
		_ = s.Close(ctx)
		return fmt.Errorf("kafka source: waiting for the first group session (last error: %v): %w", last, ctx.Err())
	}
}

// dial creates the sarama client, retrying with backoff.
func (s *Source) dial(ctx context.Context) (sarama.Client, error) {
	bo := newBackoff()
	for attempt := 1; ; attempt++ {
		client, err := s.newClient()
		if err == nil {
			return client, nil
		}
		if isPermanent(err) {
			return nil, fmt.Errorf("kafka source: connect: %w", err)
		}
		delay := bo.NextBackOff()
		s.setDisconnected(err)
		s.logger.Warn("kafka connect failed", "attempt", attempt, "next_delay", delay.String(), "err", err)
		if err := s.sleep(ctx, delay); err != nil {
			return nil, err
		}
	}
}

// newClient creates the sarama client and fetches the subscribed topics'
// metadata. With Metadata.Full off sarama.NewClient contacts no broker, so
// this first request is what finds an unreachable cluster or refused
// credentials, as NewClient's fetch of the whole cluster did. A topic that
// does not exist (yet) or has no leader right now is not an error here
// (sarama retries it for ~0.75 s first): the group session waits for it, as
// before.
func (s *Source) newClient() (sarama.Client, error) {
	client, err := sarama.NewClient(s.spec.Brokers, s.cfg)
	if err != nil || s.cfg.Metadata.Full {
		return client, err
	}
	err = client.RefreshMetadata(s.spec.Topics...)
	if err == nil || errors.Is(err, sarama.ErrUnknownTopicOrPartition) ||
		errors.Is(err, sarama.ErrLeaderNotAvailable) || errors.Is(err, sarama.ErrReplicaNotAvailable) {
		return client, nil
	}
	_ = client.Close()
	return nil, err
}

// singlePartition reports whether the subscribed topics have one partition
// in all (false when the metadata cannot tell: the safe choice for several).
func (s *Source) singlePartition(client sarama.Client) bool {
	n := 0
	for _, topic := range s.spec.Topics {
		parts, err := client.Partitions(topic)
		if err != nil {
			return false
		}
		n += len(parts)
	}
	return n == 1
}

// sleep waits d unless ctx ends or the source closes.
func (s *Source) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kafka source: %w", ctx.Err())
	case <-s.stopping:
		return connectors.ErrClosed
	}
}

// run is the consumer group loop: one Consume call per group generation.
// Started by Connect; ends when ctx is cancelled (Close) or on a permanent
// error; Close waits for loopDone.
func (s *Source) run(ctx context.Context) {
	defer close(s.loopDone)
	h := &groupHandler{s: s}
	bo := newBackoff()
	attempt := 0
	for {
		before := s.sessions.Load()
		err := s.group.Consume(ctx, s.spec.Topics, h)
		if ctx.Err() != nil || errors.Is(err, sarama.ErrClosedConsumerGroup) {
			return
		}
		if err == nil && s.sessions.Load() != before {
			bo.Reset()
			attempt = 0
			continue
		}
		if err == nil {
			err = errors.New("group session ended before it was set up")
		}
		if isPermanent(err) {
			s.fatalErr = fmt.Errorf("kafka source: %w", err)
			s.setDisconnected(err)
			s.logger.Error("kafka consumer group stopped", "err", err)
			close(s.fatal)
			return
		}
		attempt++
		delay := bo.NextBackOff()
		s.setDisconnected(err)
		s.logger.Warn("kafka consumer group failed", "attempt", attempt, "next_delay", delay.String(), "err", err)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// watchErrors logs the group's asynchronous errors and tracks health. It
// ends when the group closes the channel (group.Close).
func (s *Source) watchErrors(errs <-chan error) {
	defer close(s.errorsDone)
	for err := range errs {
		s.logger.Warn("kafka consumer error", "err", err)
		if isConnectionError(err) {
			s.setDisconnected(err)
		}
	}
}

// Read returns the next message of any owned partition. It blocks while every
// partition is at its window or has nothing new.
func (s *Source) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	select {
	case <-s.stopping:
		return nil, nil, connectors.ErrClosed
	default:
	}
	select {
	case d := <-s.deliveries:
		return d.msg, d.ack, nil
	case <-s.stopping:
		return nil, nil, connectors.ErrClosed
	case <-s.fatal:
		return nil, nil, s.fatalErr
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// Close stops reading, waits until every delivered message is acknowledged or
// ctx is done, commits each partition's contiguous acknowledged prefix,
// leaves the group and closes the connections. Idempotent. It returns an
// error when messages were left unacknowledged (they will be redelivered).
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closeCtx = ctx
		close(s.stopping)
		started := s.started
		s.mu.Unlock()
		if !started {
			return
		}
		// Ends the session: partition goroutines drain (bounded by ctx) and
		// commit before sarama lets the session go.
		s.loopCancel()
		select {
		case <-s.loopDone:
		case <-ctx.Done():
			// The drains gave up at ctx's end; the final commits and the
			// session release still get finalGrace before the client is
			// closed under them (which fails them fast).
			t := time.NewTimer(finalGrace)
			select {
			case <-s.loopDone:
			case <-t.C:
				_ = s.client.Close()
				<-s.loopDone
			}
			t.Stop()
		}
		var errs []error
		if err := s.group.Close(); err != nil {
			errs = append(errs, fmt.Errorf("leave group: %w", err))
		}
		if err := s.client.Close(); err != nil && !errors.Is(err, sarama.ErrClosedClient) {
			errs = append(errs, fmt.Errorf("close client: %w", err))
		}
		<-s.errorsDone
		if n := s.abandoned.Load(); n > 0 {
			errs = append(errs, fmt.Errorf("%d messages left unacknowledged (they will be redelivered): %w", n, context.Cause(ctx)))
		}
		if len(errs) > 0 {
			s.closeErr = fmt.Errorf("kafka source close: %w", errors.Join(errs...))
		}
		s.healthy.Store(false)
		s.rec.connected(false)
	})
	return s.closeErr
}

// Health returns nil while a group session is established and the brokers
// answer; otherwise the last connection error.
func (s *Source) Health() error {
	select {
	case <-s.stopping:
		return connectors.ErrClosed
	default:
	}
	if s.healthy.Load() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Errorf("kafka source not connected: %w", s.healthErr)
}

func (s *Source) setConnected() {
	if s.healthy.Swap(true) {
		return
	}
	s.mu.Lock()
	s.healthErr = nil
	s.mu.Unlock()
	s.rec.connected(true)
	s.logger.Info("kafka consumer connected")
}

func (s *Source) setDisconnected(err error) {
	s.mu.Lock()
	s.healthErr = err
	s.mu.Unlock()
	if s.healthy.Swap(false) {
		s.rec.connected(false)
	}
}

func (s *Source) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// closeDone is Close's ctx.Done(); valid once stopping is closed.
func (s *Source) closeDone() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeCtx.Done()
}

func newBackoff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 250 * time.Millisecond
	bo.MaxInterval = backoffMax
	return bo
}

// isPermanent tells configuration and authorization failures, which retrying
// cannot fix, from transient ones.
func isPermanent(err error) bool {
	var ce sarama.ConfigurationError
	if errors.As(err, &ce) || errors.Is(err, kafkaconf.ErrConfig) {
		return true
	}
	for _, k := range []sarama.KError{
		sarama.ErrSASLAuthenticationFailed,
		sarama.ErrUnsupportedSASLMechanism,
		sarama.ErrTopicAuthorizationFailed,
		sarama.ErrGroupAuthorizationFailed,
		sarama.ErrClusterAuthorizationFailed,
		sarama.ErrInvalidGroupId,
	} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// isConnectionError reports errors that mean a broker is unreachable.
func isConnectionError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, sarama.ErrOutOfBrokers) ||
		errors.Is(err, sarama.ErrNotConnected) ||
		errors.Is(err, sarama.ErrBrokerNotAvailable) ||
		errors.Is(err, sarama.ErrConsumerCoordinatorNotAvailable)
}
