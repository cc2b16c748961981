// Package rocketmq is the RocketMQ source: a clustering push consumer of
// github.com/apache/rocketmq-client-go/v2 whose message queues become lanes
// named "topic/brokerName/queueId", bridged to Sluice's pull-style Read and
// per-message AckFunc without weakening at-least-once.
//
// The bridge (docs/connectors/rocketmq.md, "How the consumer is bridged"):
//
//   - The client pulls each queue in its own goroutine and passes every
//     pulled batch, in queue order, through a filter hook before caching
//     it. The hook records the messages in the queue's lane, in order; Read
//     hands them out from there, so order per queue holds although the
//     client runs its consume callbacks in unordered goroutines.
//   - The client commits, per queue, the lowest offset whose consume
//     callback has not returned ConsumeSuccess (one message per callback
//     here). The callback parks until Sluice acknowledges its message, so
//     the committed offset never passes an unacknowledged message.
//   - An ack with an error leaves the callback parked (retry: sluice; the
//     message comes back when its queue is next read), or returns
//     ConsumeRetryLater (retry: broker; the client sends it to the group's
//     %RETRY% topic).
//   - Queues rebalanced away are noticed by polling the client's process
//     queue table; their lanes are revoked and their parked callbacks
//     released (the client ignores results of dropped queues).
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
	"time"

	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/hooks"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/cenkalti/backoff/v5"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/offsets"
	"github.com/sluicehq/sluice/connectors/rocketmq/rmqlog"
	"github.com/sluicehq/sluice/connectors/rocketmq/rmqwire"
	"github.com/sluicehq/sluice/pipelines"
)

// DefaultWindow is the per-queue window when connectors.Options.Window is 0.
const DefaultWindow = pipelines.DefaultWindow

// ErrConfig is wrapped by New and Connect for settings that cannot work;
// retrying does not help.
var ErrConfig = errors.New("rocketmq source: invalid configuration")

const (
	// maxPullBatch caps messages per pull request (the client's default).
	maxPullBatch = 32
	// consumeGoroutines is the client's per-topic limit of concurrent
	// consume callbacks (its maximum). Each pulled message parks one
	// callback until acknowledged; the pull window keeps their number at
	// about (window + pull batch) per owned queue, and this limit must
	// stay above that so that one queue's parked callbacks never hold up
	// another queue's.
	consumeGoroutines = 100000
	// maxSpan is the largest ConsumeConcurrentlyMaxSpan the client accepts.
	maxSpan = 65535
	// holdMax bounds how long the pull window holds a queue's pull in the
	// hook. The client drops and recreates a process queue whose last pull
	// began over 120 s ago (a long poll takes up to 20 s of that); past
	// holdMax the batch is taken, one pull batch over the window.
	holdMax = 60 * time.Second
	// goneTTL is how long a released lane's process queue is remembered,
	// to ignore its late pulls.
	goneTTL      = 2 * time.Minute
	probeTimeout = 3 * time.Second
	backoffMax   = 10 * time.Second
	// landWait bounds how long Close waits for batches that passed the
	// hook to reach their callbacks before shutting the client down.
	landWait = 2 * time.Second
)

var (
	_ connectors.Source        = (*Source)(nil)
	_ connectors.BrokerRetrier = (*Source)(nil)
)
var _ connectors.Health = (*Source)(nil)
var _ connectors.CreditFollower = (*Source)(nil)

// pushConsumer is the part of the client's push consumer the source uses.
type pushConsumer interface {
	Subscribe(topic string, selector consumer.MessageSelector, f func(context.Context, ...*primitive.MessageExt) (consumer.ConsumeResult, error)) error
	Start() error
	Shutdown() error
}

// Source consumes one topic with a clustering consumer group.
//
// Ownership: Connect starts the client's push consumer (whose goroutines
// the client owns and stops on Shutdown) and one poller goroutine (revokes
// lanes, probes health); Close stops both and waits for the poller. The
// client's pull goroutines call onPulled; its consume goroutines call
// onConsume and park there until the message is acknowledged, its lane is
// revoked or the source is closed. Concurrency follows connectors.Source;
// Health may be called at any time.
type Source struct {
	spec     pipelines.RocketMQSource
	window   int  // per queue; SetCredit's share lowers it
	broker   bool // retry: broker
	set      settings
	rec      recorder
	mapper   mapper
	rmt      remoting
	logger   *slog.Logger
	instance string // client instance name, unique per Source

	stopping chan struct{} // closed when Close begins: Read returns ErrClosed
	// clientDown is closed once a started client has been shut down:
	// held pulls and parked callbacks return (the client ignores their
	// results by then).
	clientDown chan struct{}
	wake       chan struct{} // one pending signal: a lane got messages or room

	mu         sync.Mutex
	connecting bool
	consumer   pushConsumer
	owned      func() map[primitive.MessageQueue]int64 // queue → committed offset in the client's memory
	lanes      map[*primitive.MessageQueue]*lane       // live lanes by the client's queue (one per process queue)
	byName     map[string]*lane
	gone       map[*primitive.MessageQueue]time.Time // released lanes → when: late pulls of dropped process queues
	order      []*lane                               // live lanes, for round-robin reads
	next       int
	laneSeq    uint64
	closing    bool // pulls are held until released
	healthy    bool
	healthErr  error
	pollCancel context.CancelFunc
	pollDone   chan struct{}
	parked     int // consume callbacks waiting (for tests)
	credit     int // SetCredit's credit; 0 until set

	closeOnce sync.Once
	closeErr  error
}

// lane is one owned message queue for the life of one client process queue.
// Its fields are guarded by Source.mu.
type lane struct {
	name    string
	mq      *primitive.MessageQueue
	seq     uint64        // creation order, to tell lanes from after an ownership snapshot
	revoked chan struct{} // closed on release; Message.Revoked
	entries map[int64]*entry
	queue   []*entry // pulled, not delivered yet, in queue order
	tracker offsets.Tracker
	landing int           // entries whose consume callback has not started yet
	room    chan struct{} // one pending signal: an entry was collected
	// released: revoked or closed; acks fail with reason, nothing more is
	// delivered.
	released bool
	reason   error
}

// entry is one pulled message from the hook until its callback collected
// the outcome.
type entry struct {
	offset int64
	msg    *connectors.Message
	done   chan struct{} // closed once result is set
	result consumer.ConsumeResult
	landed bool
	acked  bool
}

// New validates spec and returns an unconnected Source. opts.Window bounds
// the messages read but not yet committable per queue (default
// DefaultWindow). Errors wrap ErrConfig. The first RocketMQ source or sink
// built in a process routes the client library's logs to logger (see
// package rmqlog).
func New(spec pipelines.RocketMQSource, opts connectors.Options, logger *slog.Logger, options ...Option) (*Source, error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	window := opts.Window
	if window == 0 {
		window = DefaultWindow
	}
	if window < 0 {
		return nil, fmt.Errorf("%w: window %d: must be positive", ErrConfig, window)
	}
	set := defaultSettings()
	for _, o := range options {
		o(&set)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rmqlog.Install(logger)
	instance, err := instanceName(opts.Name)
	if err != nil {
		return nil, err
	}
	return &Source{
		spec:       spec,
		window:     window,
		broker:     spec.Retry == pipelines.RocketMQRetryBroker,
		set:        set,
		rec:        recorder{set.recorder},
		mapper:     newMapper(spec),
		rmt:        newRemoting(spec.ACL),
		logger:     logger.With("connector", "rocketmq", "pipeline", opts.Name, "group", spec.Group, "topic", spec.Topic),
		instance:   instance,
		stopping:   make(chan struct{}),
		clientDown: make(chan struct{}),
		wake:       make(chan struct{}, 1),
		lanes:      map[*primitive.MessageQueue]*lane{},
		byName:     map[string]*lane{},
		gone:       map[*primitive.MessageQueue]time.Time{},
		healthErr:  errors.New("rocketmq source not connected"),
	}, nil
}

func checkSpec(spec pipelines.RocketMQSource) error {
	switch {
	case len(spec.NameServers) == 0:
		return fmt.Errorf("%w: nameServers: at least one is required", ErrConfig)
	case spec.Topic == "":
		return fmt.Errorf("%w: topic is required", ErrConfig)
	case spec.Group == "":
		return fmt.Errorf("%w: group is required", ErrConfig)
	case spec.Tags != "" && spec.SQL != "":
		return fmt.Errorf("%w: tags and sql cannot both be set", ErrConfig)
	}
	switch spec.Start {
	case "", pipelines.StartEarliest, pipelines.StartLatest:
	default:
		return fmt.Errorf("%w: start %q: want earliest or latest", ErrConfig, spec.Start)
	}
	switch spec.Retry {
	case "", pipelines.RocketMQRetrySluice, pipelines.RocketMQRetryBroker:
	default:
		return fmt.Errorf("%w: retry %q: want sluice or broker", ErrConfig, spec.Retry)
	}
	if spec.ACL != nil && (spec.ACL.AccessKey.Value() == "" || spec.ACL.SecretKey.Value() == "") {
		return fmt.Errorf("%w: acl: accessKey and secretKey are both required", ErrConfig)
	}
	return nil
}

// instanceName makes the client instance name unique per Source. The client
// shares one connection manager per instance name in the process: two
// consumers sharing it would look like one member to the broker's
// rebalancing, and shutting one down would close the other's connections.
func instanceName(pipeline string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("rocketmq source: instance name: %w", err)
	}
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, pipeline)
	return "sluice-" + clean + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:]), nil
}

// consumerOptions is the client configuration the bridge relies on.
func (s *Source) consumerOptions() []consumer.Option {
	from := consumer.ConsumeFromFirstOffset
	if s.spec.Start == pipelines.StartLatest {
		from = consumer.ConsumeFromLastOffset
	}
	maxRecon := s.spec.MaxReconsumeTimes
	if maxRecon <= 0 {
		maxRecon = pipelines.DefaultRocketMQMaxReconsumeTimes
	}
	timeout := s.spec.ConsumeTimeout.D()
	if timeout <= 0 {
		timeout = pipelines.DefaultRocketMQConsumeTimeout
	}
	opts := []consumer.Option{
		consumer.WithGroupName(s.spec.Group),
		consumer.WithNsResolver(primitive.NewPassthroughResolver(s.spec.NameServers)),
		consumer.WithInstance(s.instance),
		consumer.WithConsumerModel(consumer.Clustering),
		consumer.WithConsumeFromWhere(from),
		// One message per callback: the client then commits per message.
		consumer.WithConsumeMessageBatchMaxSize(1),
		consumer.WithPullBatchSize(int32(min(s.window, maxPullBatch))),
		// The pull window is kept by the hook (onPulled). The client's own
		// flow control (count and size thresholds, which it recomputes
		// from per-topic defaults on every rebalance, and the offset span)
		// only backs it up: it updates counters shared by all pull
		// goroutines without synchronisation.
		consumer.WithConsumeConcurrentlyMaxSpan(maxSpan),
		consumer.WithConsumeGoroutineNums(consumeGoroutines),
		consumer.WithMaxReconsumeTimes(int32(maxRecon)),
		consumer.WithConsumeTimeout(timeout),
		consumer.WithFilterMessageHook([]hooks.FilterMessageHook{s.onPulled}),
	}
	if a := s.spec.ACL; a != nil {
		opts = append(opts, consumer.WithCredentials(primitive.Credentials{
			AccessKey: a.AccessKey.Value(), SecretKey: a.SecretKey.Value(),
		}))
	}
	return opts
}

func (s *Source) selector() consumer.MessageSelector {
	if s.spec.SQL != "" {
		return consumer.MessageSelector{Type: consumer.SQL92, Expression: s.spec.SQL}
	}
	expr := strings.TrimSpace(s.spec.Tags)
	if expr == "" {
		expr = "*"
	}
	return consumer.MessageSelector{Type: consumer.TAG, Expression: expr}
}

// Connect probes the name servers and brokers, starts the push consumer,
// and waits (bounded by WithAssignWait) until the group assigns it a queue
// of the topic, so that with start: latest a message sent after Connect
// returns is delivered. While the name servers, the topic's route or its
// brokers do not answer it retries with backoff, logging each failure and
// reporting it through Health. It returns nil once consuming, ctx's error,
// connectors.ErrClosed, or an error wrapping ErrConfig.
func (s *Source) Connect(ctx context.Context) error {
	s.mu.Lock()
	if s.connecting {
		s.mu.Unlock()
		return errors.New("rocketmq source: Connect called twice")
	}
	s.connecting = true
	s.mu.Unlock()

	bo := newBackoff()
	for attempt := 1; ; attempt++ {
		err := s.connectOnce(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, connectors.ErrClosed) || errors.Is(err, ErrConfig) {
			return err
		}
		s.setHealth(err)
		delay := bo.NextBackOff()
		s.logger.Warn("rocketmq connect failed", "attempt", attempt, "next_delay", delay, "err", err)
		if err := s.sleep(ctx, delay); err != nil {
			return err
		}
	}
	return s.awaitAssignment(ctx)
}

// connectOnce makes one attempt: probe, then create and start the client.
func (s *Source) connectOnce(ctx context.Context) error {
	bqs, err := s.probe(ctx)
	if err != nil {
		return err
	}
	if s.spec.Start == pipelines.StartLatest {
		ictx, cancel := context.WithTimeout(ctx, probeTimeout)
		n, err := s.rmt.latestOffsets(ictx, bqs, s.spec.Group, s.spec.Topic)
		cancel()
		if err != nil {
			return fmt.Errorf("rocketmq source: start: latest: %w", err)
		}
		if n > 0 {
			s.logger.Info("rocketmq group starts at the end of the topic", "queues", n)
		}
	}
	pc, err := consumer.NewPushConsumer(s.consumerOptions()...)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := pc.Subscribe(s.spec.Topic, s.selector(), s.onConsume); err != nil {
		return fmt.Errorf("%w: subscribe: %v", ErrConfig, err)
	}
	if err := pc.Start(); err != nil {
		// When the topic has no route Start shuts the consumer down
		// itself; option validation failures start nothing.
		if strings.Contains(err.Error(), "validate fail") {
			return fmt.Errorf("%w: %v", ErrConfig, err)
		}
		return fmt.Errorf("rocketmq source: start consumer: %w", err)
	}
	owned := func() map[primitive.MessageQueue]int64 {
		info := pc.GetConsumerRunningInfo(false)
		out := make(map[primitive.MessageQueue]int64, len(info.MQTable))
		for mq, pq := range info.MQTable {
			out[mq] = pq.CommitOffset
		}
		return out
	}
	pollCtx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	if s.isStopping() {
		s.mu.Unlock()
		cancel()
		_ = pc.Shutdown()
		close(s.clientDown) // Close saw no client: this is the only closer
		return connectors.ErrClosed
	}
	s.consumer, s.owned, s.pollCancel, s.pollDone = pc, owned, cancel, make(chan struct{})
	s.mu.Unlock()
	go s.poll(pollCtx, s.pollDone)
	s.setHealth(nil)
	return nil
}

// awaitAssignment waits until the client owns a queue of the topic, the
// assign wait passes, or ctx ends or the source closes.
func (s *Source) awaitAssignment(ctx context.Context) error {
	deadline := time.NewTimer(s.set.assignWait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for mq := range s.owned() {
			if mq.Topic == s.spec.Topic {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			s.logger.Info("rocketmq consumer owns no queue of the topic yet (more group members than queues, or a slow rebalance)",
				"waited", s.set.assignWait)
			return nil
		case <-s.stopping:
			return connectors.ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("rocketmq source: waiting for a queue assignment: %w", ctx.Err())
		}
	}
}

// probe checks that a name server knows the topic's route, that its master
// brokers accept connections and the credentials (ACL) and, for an SQL92
// selector, that they accept it. It returns the route.
func (s *Source) probe(ctx context.Context) ([]rmqwire.BrokerQueues, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	bqs, err := s.rmt.Route(ctx, s.spec.NameServers, s.spec.Topic)
	if err != nil {
		return nil, fmt.Errorf("rocketmq source: %w", err)
	}
	if err := rmqwire.DialAll(ctx, bqs); err != nil {
		return nil, fmt.Errorf("rocketmq source: %w", err)
	}
	for _, bq := range bqs {
		if err := s.rmt.checkAuth(ctx, bq.Addr, s.spec.Topic); err != nil {
			return nil, fmt.Errorf("rocketmq source: %w", err)
		}
	}
	if s.spec.SQL != "" {
		for _, bq := range bqs {
			if err := s.rmt.checkSQL(ctx, bq.Addr, s.spec.Group, s.spec.Topic, s.spec.SQL); err != nil {
				return nil, fmt.Errorf("rocketmq source: %w", err)
			}
		}
	}
	return bqs, nil
}

// poll revokes lanes of queues the client no longer owns and probes health.
// Started by connectOnce; Close cancels ctx and waits for done.
func (s *Source) poll(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(s.set.pollInterval)
	defer t.Stop()
	lastProbe := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.revokeDropped()
		if time.Since(lastProbe) >= s.set.probeEvery {
			lastProbe = time.Now()
			_, err := s.probe(ctx)
			if ctx.Err() != nil {
				return
			}
			s.setHealth(err)
		}
	}
}

// revokeDropped releases the lanes whose process queue the client dropped
// (rebalanced away, or its pulls expired): the client has persisted the
// queue's committed offset and ignores the results of its callbacks.
func (s *Source) revokeDropped() {
	s.mu.Lock()
	seq := s.laneSeq
	s.mu.Unlock()
	// Lanes created after this point may belong to process queues the
	// snapshot does not show yet: only older ones are judged.
	owned := s.owned()
	s.mu.Lock()
	defer s.mu.Unlock()
	for mq, at := range s.gone {
		// A dropped process queue's last pull ends within the client's
		// 30 s pull timeout.
		if time.Since(at) > goneTTL {
			delete(s.gone, mq)
		}
	}
	for _, l := range append([]*lane(nil), s.order...) {
		if _, ok := owned[*l.mq]; ok || l.seq > seq {
			continue
		}
		pending := l.tracker.Pending()
		s.releaseLocked(l, connectors.ErrRevoked)
		s.logger.Info("rocketmq queue revoked", "lane", l.name, "unacknowledged", pending)
	}
}

// onPulled is the client's filter hook: it runs in the queue's pull
// goroutine for every pulled batch, in queue order, before the client
// caches the batch and starts its consume callbacks. It records the
// messages in the queue's lane and never filters anything out.
func (s *Source) onPulled(fc *hooks.FilterMessageContext) ([]*primitive.MessageExt, error) {
	msgs, mq := fc.Msg, fc.MQ
	if len(msgs) == 0 || mq == nil {
		return msgs, nil
	}
	s.mu.Lock()
	if s.closing {
		// Hold the pull until the client is shut down: the process queue
		// is dropped by then and the client discards the batch, so no
		// send on its message channel can race its shutdown
		// (apache/rocketmq-client-go#1051).
		s.mu.Unlock()
		<-s.clientDown
		return msgs, nil
	}
	if _, gone := s.gone[mq]; gone {
		// A late pull of a dropped process queue; the client discards it.
		s.mu.Unlock()
		return msgs, nil
	}
	l := s.lanes[mq]
	if l == nil {
		l = s.addLaneLocked(mq)
	}
	// The pull window: hold this queue's pull while its lane holds its
	// window (or credit share) of messages pulled and not yet collected by
	// their callbacks.
	var hold *time.Timer
	for len(l.entries) >= s.laneWindowLocked() && !l.released && !s.closing {
		if hold == nil {
			hold = time.NewTimer(holdMax)
			defer hold.Stop()
		}
		s.mu.Unlock()
		expired := false
		select {
		case <-l.room:
		case <-l.revoked:
		case <-s.clientDown:
		case <-hold.C:
			expired = true
		}
		s.mu.Lock()
		if expired {
			break
		}
	}
	if s.closing {
		s.mu.Unlock()
		<-s.clientDown
		return msgs, nil
	}
	if l.released {
		s.mu.Unlock()
		return msgs, nil
	}
	s.mu.Unlock()

	// Mapping reads the messages' properties; no other goroutine has
	// them yet, and the lock is not needed for it.
	now := time.Now()
	mapped := make([]*connectors.Message, len(msgs))
	for i, m := range msgs {
		mapped[i] = s.mapper.message(m, mq, l, now)
	}

	s.mu.Lock()
	if l.released {
		s.mu.Unlock()
		return msgs, nil
	}
	for i, m := range msgs {
		if _, dup := l.entries[m.QueueOffset]; dup {
			continue
		}
		e := &entry{offset: m.QueueOffset, msg: mapped[i], done: make(chan struct{})}
		l.entries[e.offset] = e
		l.queue = append(l.queue, e)
		l.landing++
	}
	s.signalLocked()
	s.mu.Unlock()
	return msgs, nil
}

// addLaneLocked starts the lane of a new process queue, revoking the
// previous lane of the same queue: the client only creates a process queue
// for a queue after dropping the old one.
func (s *Source) addLaneLocked(mq *primitive.MessageQueue) *lane {
	name := laneName(mq)
	if old := s.byName[name]; old != nil {
		s.releaseLocked(old, connectors.ErrRevoked)
		s.logger.Info("rocketmq queue reassigned", "lane", name)
	}
	s.laneSeq++
	l := &lane{name: name, mq: mq, seq: s.laneSeq, revoked: make(chan struct{}), room: make(chan struct{}, 1), entries: map[int64]*entry{}}
	s.lanes[mq], s.byName[name] = l, l
	s.order = append(s.order, l)
	return l
}

// releaseLocked revokes a lane: nothing more is delivered from it, acks
// fail with reason, and its parked callbacks return.
func (s *Source) releaseLocked(l *lane, reason error) {
	if l.released {
		return
	}
	l.released, l.reason = true, reason
	close(l.revoked)
	delete(s.lanes, l.mq)
	if s.byName[l.name] == l {
		delete(s.byName, l.name)
	}
	s.gone[l.mq] = time.Now()
	for i, o := range s.order {
		if o == l {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
	l.queue, l.entries = nil, nil
	s.signalLocked()
}

// onConsume is the client's consume callback (one message per call). It
// parks until the message's outcome is known.
func (s *Source) onConsume(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
	result := consumer.ConsumeSuccess
	for _, m := range msgs {
		if r := s.await(m); r != consumer.ConsumeSuccess {
			result = r
		}
	}
	return result, nil
}

// await waits for m's outcome: ConsumeSuccess once acknowledged (the client
// then commits past it), ConsumeRetryLater once nacked with retry: broker
// (the client sends it to %RETRY%). A nack with retry: sluice keeps it
// parked until its lane is released. Released lanes answer
// ConsumeRetryLater, which the client ignores for dropped process queues
// and which, anywhere else, hands the message back rather than losing it.
func (s *Source) await(m *primitive.MessageExt) consumer.ConsumeResult {
	s.mu.Lock()
	l := s.lanes[m.Queue]
	var e *entry
	if l != nil {
		e = l.entries[m.QueueOffset]
	}
	if e == nil {
		s.mu.Unlock()
		return consumer.ConsumeRetryLater
	}
	if !e.landed {
		e.landed = true
		l.landing--
	}
	s.parked++
	s.mu.Unlock()

	r, collected := consumer.ConsumeRetryLater, false
	select {
	case <-e.done:
		r, collected = e.result, true
	case <-l.revoked:
	case <-s.clientDown:
	}
	s.mu.Lock()
	s.parked--
	if collected && l.entries != nil {
		// A later callback for the same offset (the client retrying a
		// failed send-back) finds no entry and hands the message back.
		delete(l.entries, e.offset)
		select {
		case l.room <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	return r
}

// Read returns the next message of any owned queue. It blocks while every
// queue is at its window or has nothing new.
func (s *Source) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	for {
		s.mu.Lock()
		if s.isStopping() {
			s.mu.Unlock()
			return nil, nil, connectors.ErrClosed
		}
		msg, ack := s.nextLocked()
		s.mu.Unlock()
		if msg != nil {
			return msg, ack, nil
		}
		select {
		case <-s.wake:
		case <-s.stopping:
			return nil, nil, connectors.ErrClosed
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// nextLocked takes the next deliverable message, visiting lanes round robin.
func (s *Source) nextLocked() (*connectors.Message, connectors.AckFunc) {
	n := len(s.order)
	window := s.laneWindowLocked()
	for i := range n {
		idx := (s.next + i) % n
		l := s.order[idx]
		if len(l.queue) == 0 || l.tracker.Uncommitted() >= window {
			continue
		}
		e := l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		if err := l.tracker.Delivered(e.offset); err != nil {
			// Cannot happen: the hook records offsets in pull order.
			s.logger.Error("rocketmq message skipped", "lane", l.name, "offset", e.offset, "err", err)
			continue
		}
		s.next = idx + 1
		return e.msg, s.ackFunc(l, e)
	}
	return nil, nil
}

// SetCredit implements connectors.CreditFollower: each live lane's window
// becomes min(window, max(1, n/lanes)). It bounds both what Read hands out
// per queue and the pull window of the filter hook, which holds the
// queue's pull goroutine — the client fetches nothing more for a queue
// whose lane holds its share. The client's own settings stay as built
// (pull batch min(window, 32); its count and size thresholds, which back
// the hook up): it offers no way to change them on a running consumer.
func (s *Source) SetCredit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.credit = max(n, 1)
	for _, l := range s.order {
		select {
		case l.room <- struct{}{}:
		default:
		}
	}
	s.signalLocked()
}

// laneWindowLocked is each lane's window now: the configured window, or
// the lane's even share of the credit when smaller (at least 1). Lanes
// appear as their queues are first pulled, so shares shrink as they do.
func (s *Source) laneWindowLocked() int {
	if s.credit == 0 {
		return s.window
	}
	return min(s.window, max(1, s.credit/max(len(s.order), 1)))
}

// ackFunc resolves one delivered message.
func (s *Source) ackFunc(l *lane, e *entry) connectors.AckFunc {
	return func(_ context.Context, procErr error) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if l.released {
			return fmt.Errorf("rocketmq %s offset %d: %w", l.name, e.offset, l.reason)
		}
		done := procErr == nil || s.broker
		if err := l.tracker.Resolve(e.offset, done); err != nil {
			return fmt.Errorf("rocketmq %s: %w", l.name, err)
		}
		e.acked = true
		switch {
		case procErr == nil:
			e.result = consumer.ConsumeSuccess
			close(e.done)
		case s.broker:
			e.result = consumer.ConsumeRetryLater
			close(e.done)
		}
		s.signalLocked()
		return nil
	}
}

func (s *Source) signalLocked() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close stops reading, waits until every delivered message is acknowledged
// or ctx is done, lets the client's commits catch up with the acknowledged
// prefix (a few seconds at most, even past ctx), shuts the client down —
// which persists each queue's committed offset to the broker — and then
// releases every lane. Idempotent. It returns an error when messages were
// left unacknowledged (they will be redelivered).
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.close(ctx) })
	return s.closeErr
}

func (s *Source) close(ctx context.Context) error {
	s.mu.Lock()
	close(s.stopping)
	c := s.consumer
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	s.waitUntil(ctx.Done(), func() bool { return s.pendingLocked() == 0 })

	// The client commits a message after its callback returns; wait until
	// its offsets reflect every acknowledgement before it persists them.
	catchUp, cancel := context.WithTimeout(context.Background(), s.set.catchUpWait)
	s.waitUntil(catchUp.Done(), s.caughtUp)
	cancel()

	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	land, cancel := context.WithTimeout(context.Background(), landWait)
	s.waitUntil(land.Done(), func() bool { return s.landingLocked() == 0 })
	cancel()

	s.pollCancel()
	<-s.pollDone
	var errs []error
	if err := c.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("shutdown: %w", err))
	}

	s.mu.Lock()
	abandoned := s.pendingLocked()
	for _, l := range append([]*lane(nil), s.order...) {
		s.releaseLocked(l, connectors.ErrClosed)
	}
	s.healthy = false
	s.mu.Unlock()
	close(s.clientDown)
	s.rec.connected(false)
	if abandoned > 0 {
		errs = append(errs, fmt.Errorf("%d messages left unacknowledged (they will be redelivered): %w", abandoned, context.Cause(ctx)))
	}
	if len(errs) > 0 {
		return fmt.Errorf("rocketmq source close: %w", errors.Join(errs...))
	}
	return nil
}

// waitUntil polls cond (called with s.mu held) until it holds or stop fires.
func (s *Source) waitUntil(stop <-chan struct{}, cond func() bool) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-t.C:
		case <-stop:
			return
		}
	}
}

func (s *Source) pendingLocked() int {
	n := 0
	for _, l := range s.order {
		n += l.tracker.Pending()
	}
	return n
}

func (s *Source) landingLocked() int {
	n := 0
	for _, l := range s.order {
		n += l.landing
	}
	return n
}

// caughtUp reports whether the client's committed offset of every live
// lane has reached the lane's committable position. Called with s.mu held;
// it releases it around the call into the client.
func (s *Source) caughtUp() bool {
	s.mu.Unlock()
	owned := s.owned()
	s.mu.Lock()
	for _, l := range s.order {
		want, ok := l.tracker.Committable()
		if !ok {
			continue
		}
		if got, present := owned[*l.mq]; present && got < want {
			return false
		}
	}
	return true
}

// BrokerRetries reports retry: broker (connectors.BrokerRetrier): failed
// events go back to the broker's %RETRY% topic instead of Sluice's retries.
func (s *Source) BrokerRetries() bool { return s.broker }

// Health returns nil while the topic's route and brokers answer the probe;
// otherwise the last error.
func (s *Source) Health() error {
	if s.isStopping() {
		return connectors.ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.healthy {
		return nil
	}
	return fmt.Errorf("rocketmq source not connected: %w", s.healthErr)
}

func (s *Source) setHealth(err error) {
	s.mu.Lock()
	was := s.healthy
	s.healthy, s.healthErr = err == nil, err
	s.mu.Unlock()
	switch {
	case err == nil && !was:
		s.rec.connected(true)
		s.logger.Info("rocketmq consumer connected")
	case err != nil && was:
		s.rec.connected(false)
		s.logger.Warn("rocketmq consumer lost its brokers", "err", err)
	}
}

// sleep waits d unless ctx ends or the source closes.
func (s *Source) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("rocketmq source: %w", ctx.Err())
	case <-s.stopping:
		return connectors.ErrClosed
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

func newBackoff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 250 * time.Millisecond
	bo.MaxInterval = backoffMax
	return bo
}
