// Package bus is Sluice's event bus (DESIGN §1): an EventBridge-like router.
// Events put on a bus — by its HTTP API, by the {bus: {name}} result routes
// of pipelines, or by bus targets of other buses — are stored durably
// first, then every rule whose pattern (sinks/bus/pattern) or filter
// matches delivers them to each of its targets: functions, sinks or other
// buses.
//
// Every (rule, target) pair has its own durable cursor, so a slow or failing
// target never holds back the others, and a restarted Sluice resumes each
// target where it stopped:
//
//   - embedded storage: the bus's ingress is a queue of the embedded queue
//     (runtime/queue); a dispatcher reads it, matches the rules and copies
//     each event into the queue of every matching target before
//     acknowledging it; each target's queue is consumed by its own engine
//     pipeline.
//   - Kafka storage: the bus's ingress is a topic; each target is a consumer
//     group of its own on that topic that skips the events its rule does
//     not match.
//
// Each target runs as an engine pipeline (runtime/engine): a function
// target with its delivery policy (AIMD concurrency, retries, results); a
// sink or bus target through an in-process function that writes the sink,
// with its retry policy and onFailure routes. Transforms (path, template)
// rewrite the data a target receives. An archive keeps the matching events
// for a retention period, and replays put a time window of it back on the
// bus, marked with the ExtReplay extension. docs/bus.md has the details.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/sinks"
)

// Queue is the embedded queue the buses keep their events in: the queues
// of embedded storage and of targets, and the archives.
type Queue interface {
	queue.Queue
	OpenArchive(ctx context.Context, name string, retention time.Duration) (*queue.Archive, error)
}

// Recorder receives the buses' metrics (runtime/metrics implements it).
// bus is "tenant/name", rule a rule name: both bounded by configuration.
// Methods are called concurrently and must return quickly.
type Recorder interface {
	// Received counts n events stored on a bus.
	Received(bus string, n int)
	// Matched counts an event dispatched to a rule's targets.
	Matched(bus, rule string)
	// Delivered counts an event a target of rule took, with how long the
	// target took from reading it (including retries).
	Delivered(bus, rule string, seconds float64)
	// Failed counts an event a target of rule gave up on (after its
	// attempts, or permanently refused); DeadLettered counts those of
	// them written to the target's onFailure routes (the others were
	// discarded: the target has none).
	Failed(bus, rule string)
	DeadLettered(bus, rule string)
}

// Errors callers branch on (the ingress API maps them to HTTP statuses).
var (
	// ErrNotFound: no bus of that name for the tenant.
	ErrNotFound = errors.New("no such bus")
	// ErrInvalidEvent: an event is not a valid CloudEvent.
	ErrInvalidEvent = errInvalidEvent
	// ErrTooLarge: an event is larger than the storage accepts.
	ErrTooLarge = errors.New("event too large for the bus")
	// ErrFull: the storage is full; nothing more is accepted until targets
	// catch up. Retry later.
	ErrFull = errors.New("bus storage full")
	// ErrClosed: the buses were closed.
	ErrClosed = errors.New("bus closed")
)

// Deps are what the buses need from the process.
type Deps struct {
	// Queue holds embedded storage, target queues and archives. Required
	// when a bus has embedded storage or an archive.
	Queue Queue
	// Engine are the engine dependencies of the target pipelines (metrics,
	// limiters shared with pipelines calling the same functions, log,
	// stdout, drain timeout). Its Function and Hooks are ignored.
	Engine engine.Deps
	// Components build the targets' sinks and the function targets'
	// result routes; the "bus" kind is added (WithBuses).
	Components engine.Components
	// Recorder receives bus metrics; nil records nothing.
	Recorder Recorder
}

// Set is every bus of a configuration. Build it with New, run it with Run,
// and Close it after Run returned. Put (and the sinks of bus routes) work
// from New until Close, also while Run is not running: events wait in
// storage.
type Set struct {
	deps  Deps
	log   *slog.Logger
	rec   Recorder
	comps engine.Components
	buses []*Bus
	byID  map[string]*Bus

	// bg is the context of background work that outlives requests
	// (replays); Close cancels it and waits for bgWG.
	bg     context.Context
	stopBg context.CancelFunc
	bgWG   sync.WaitGroup

	mu     sync.Mutex
	ran    bool
	closed bool
}

// Bus is one bus: its storage, rules, targets and archive.
type Bus struct {
	set    *Set
	spec   *pipelines.Bus
	id     string // tenant/name
	tenant string
	name   string
	router *router
	store  storage
	// targets by rule index, in configuration order.
	targets [][]*target
	// dispatchers read the ingress (embedded: fan-out and archive; Kafka:
	// archive only).
	dispatchers []*dispatcher
	archive     *queue.Archive
	archFilter  *archiveFilter
	replays     *replays
}

// New builds every bus: it opens their storage (creating queues, topics
// and archives as needed) and builds the target pipelines without starting
// them. ctx bounds the set-up only. On error nothing is left open.
func New(ctx context.Context, specs []*pipelines.Bus, deps Deps) (s *Set, err error) {
	log := deps.Engine.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
		deps.Engine.Log = log
	}
	rec := deps.Recorder
	if rec == nil {
		rec = nopRecorder{}
	}
	bg, stop := context.WithCancel(context.Background())
	s = &Set{deps: deps, log: log, rec: rec, byID: make(map[string]*Bus, len(specs)), bg: bg, stopBg: stop}
	s.comps = deps.Components.WithBuses(s.Sink)
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	// Every bus's storage first: targets and routes of one bus may put
	// events on another.
	for _, spec := range specs {
		b, err := s.newBus(ctx, spec)
		if err != nil {
			return nil, fmt.Errorf("bus %s: %w", spec.ID(), err)
		}
		s.buses = append(s.buses, b)
		s.byID[b.id] = b
	}
	for _, b := range s.buses {
		if err := b.build(ctx); err != nil {
			return nil, fmt.Errorf("bus %s: %w", b.id, err)
		}
	}
	return s, nil
}

func (s *Set) newBus(ctx context.Context, spec *pipelines.Bus) (*Bus, error) {
	tenant := spec.Metadata.Tenant
	if tenant == "" {
		tenant = pipelines.DefaultTenant
	}
	b := &Bus{set: s, spec: spec, id: tenant + "/" + spec.Metadata.Name, tenant: tenant, name: spec.Metadata.Name}
	var err error
	if b.router, err = newRouter(spec.Spec.Rules); err != nil {
		return nil, err
	}
	b.replays = newReplays()
	switch st := spec.Spec.Storage; {
	case st.Kafka != nil:
		b.store, err = newKafkaStorage(ctx, *st.Kafka, s.log.With("bus", b.id))
	default:
		if s.deps.Queue == nil {
			return nil, errors.New("embedded storage needs the embedded queue")
		}
		b.store, err = newEmbeddedStorage(ctx, s.deps.Queue, b.queueName())
	}
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	if err := b.openArchive(ctx); err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.store.close(cctx)
		return nil, err
	}
	return b, nil
}

// openArchive opens the bus's archive, if it has one.
func (b *Bus) openArchive(ctx context.Context) error {
	s, spec := b.set, b.spec
	var err error
	if a := spec.Spec.Archive; a != nil {
		if s.deps.Queue == nil {
			return errors.New("an archive needs the embedded queue")
		}
		if b.archFilter, err = newArchiveFilter(a.Pattern); err != nil {
			return err
		}
		retention := a.Retention.D()
		if retention <= 0 {
			retention = pipelines.DefaultArchiveRetention
		}
		if b.archive, err = s.deps.Queue.OpenArchive(ctx, b.queueName(), retention); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
	}
	return nil
}

// queueName is the bus's name in the embedded queue: its ingress queue and
// its archive ("bus.TENANT.NAME"); target queues add ".RULE.INDEX".
func (b *Bus) queueName() string { return "bus." + b.tenant + "." + b.name }

// build creates the targets' pipelines and the dispatchers.
func (b *Bus) build(ctx context.Context) error {
	for i, r := range b.spec.Spec.Rules {
		ru := b.router.rules[i]
		// Appended one by one, so that a failure releases those built.
		b.targets = append(b.targets, nil)
		for j := range r.Targets {
			t, err := b.newTarget(ctx, ru, j, &r.Targets[j])
			if err != nil {
				return fmt.Errorf("rule %s target %d: %w", r.Name, j, err)
			}
			b.targets[i] = append(b.targets[i], t)
		}
	}
	d, err := b.store.dispatcher(ctx, b)
	if err != nil {
		return err
	}
	if d != nil {
		b.dispatchers = append(b.dispatchers, d)
	}
	return nil
}

// Run runs every bus's dispatchers and target pipelines until ctx is
// done, then stops them softly (each target drains within the engine's
// drain timeout; what is left is redelivered after a restart). A target
// that fails is logged while the others keep running; Run returns the
// failures joined.
func (s *Set) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.closed || s.ran {
		s.mu.Unlock()
		return errors.New("bus: Run after Close, or twice")
	}
	s.ran = true
	s.mu.Unlock()
	var g errgroup.Group
	var mu sync.Mutex
	var errs []error
	fail := func(what string, err error) {
		s.log.Error("bus component failed", "component", what, "err", err)
		mu.Lock()
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
		mu.Unlock()
	}
	for _, b := range s.buses {
		for _, d := range b.dispatchers {
			g.Go(func() error {
				if err := d.run(ctx); err != nil {
					fail(d.name, err)
				}
				return nil
			})
		}
		for _, ts := range b.targets {
			for _, t := range ts {
				g.Go(func() error {
					if err := t.run(ctx); err != nil {
						fail(t.id, err)
					}
					return nil
				})
			}
		}
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

// Close stops replays and releases storage. Call it after Run returned (or
// instead of Run). Puts after Close fail with ErrClosed. Idempotent.
func (s *Set) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ran := s.ran
	s.mu.Unlock()
	s.stopBg()
	s.bgWG.Wait()
	if !ran {
		s.releaseTargets()
	}
	var errs []error
	for _, b := range s.buses {
		if err := b.store.close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("bus %s: %w", b.id, err))
		}
	}
	return errors.Join(errs...)
}

// release undoes a failed New.
func (s *Set) release() {
	s.stopBg()
	s.releaseTargets()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, b := range s.buses {
		_ = b.store.close(ctx)
	}
}

// releaseTargets frees the resources of targets that never ran: running
// a pipeline with a done context releases its source and sinks at once.
func (s *Set) releaseTargets() {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, b := range s.buses {
		for _, ts := range b.targets {
			for _, t := range ts {
				_ = t.run(done)
			}
		}
		for _, d := range b.dispatchers {
			_ = d.run(done)
		}
	}
}

// Buses lists the buses in configuration order.
func (s *Set) Buses() []*Bus { return s.buses }

// Lookup returns the bus name of tenant, or ErrNotFound.
func (s *Set) Lookup(tenant, name string) (*Bus, error) {
	if tenant == "" {
		tenant = pipelines.DefaultTenant
	}
	b, ok := s.byID[tenant+"/"+name]
	if !ok {
		return nil, fmt.Errorf("%w: %q of tenant %q", ErrNotFound, name, tenant)
	}
	return b, nil
}

// Sink returns a sink putting events on the bus name of tenant: what a
// {bus: {name}} route writes to (it is the engine.BusOpener of the set).
func (s *Set) Sink(tenant, name string) (sinks.Sink, error) {
	b, err := s.Lookup(tenant, name)
	if err != nil {
		return nil, err
	}
	return busSink{b: b}, nil
}

// Components returns c with the "bus" sink kind writing to these buses.
func (s *Set) Components(c engine.Components) engine.Components { return c.WithBuses(s.Sink) }

// Ready reports, per target ("tenant/bus/rule/index") and dispatcher, why
// it is not ready; an empty map means every part runs.
func (s *Set) Ready() map[string]string {
	out := map[string]string{}
	for _, b := range s.buses {
		for _, d := range b.dispatchers {
			if err := d.ready(); err != nil {
				out[d.name] = err.Error()
			}
		}
		for _, ts := range b.targets {
			for _, t := range ts {
				if err := t.pipe.Ready(); err != nil {
					out[t.id] = err.Error()
				}
			}
		}
	}
	return out
}

// ID is the bus's "tenant/name".
func (b *Bus) ID() string { return b.id }

// Tenant owns the bus.
func (b *Bus) Tenant() string { return b.tenant }

// Name is the bus's name.
func (b *Bus) Name() string { return b.name }

// Put stores events on the bus and returns nil only once every one is
// durable (then they are delivered to the matching rules' targets, at
// least once). On error some may have been stored; putting the same
// events again is safe: with embedded storage, an event (source and id)
// put again within the queue's duplicate window is stored once. Errors
// wrap ErrInvalidEvent, ErrTooLarge, ErrFull, ErrClosed, ctx's error, or
// a storage error (retry).
func (b *Bus) Put(ctx context.Context, events []cloudevents.Event) error {
	for i := range events {
		if err := events[i].Validate(); err != nil {
			return fmt.Errorf("%w: event %d: %v", ErrInvalidEvent, i, err)
		}
	}
	b.set.mu.Lock()
	closed := b.set.closed
	b.set.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if err := b.store.put(ctx, events); err != nil {
		return fmt.Errorf("bus %s: %w", b.id, err)
	}
	b.set.rec.Received(b.id, len(events))
	return nil
}

// busSink is the sink of {bus: {name}} routes and bus targets.
type busSink struct{ b *Bus }

var _ sinks.Sink = busSink{}

// Write puts events on the bus. Invalid and too large events are
// sinks.ErrRejected: putting them again cannot succeed.
func (s busSink) Write(ctx context.Context, events []cloudevents.Event) error {
	err := s.b.Put(ctx, events)
	if errors.Is(err, ErrInvalidEvent) || errors.Is(err, ErrTooLarge) {
		return sinks.Rejected(err)
	}
	return err
}

// Close does nothing: the bus belongs to its Set.
func (busSink) Close(context.Context) error { return nil }

type nopRecorder struct{}

func (nopRecorder) Received(string, int)              {}
func (nopRecorder) Matched(string, string)            {}
func (nopRecorder) Delivered(string, string, float64) {}
func (nopRecorder) Failed(string, string)             {}
func (nopRecorder) DeadLettered(string, string)       {}

// BusStatus describes a bus and the state of its targets.
type BusStatus struct {
	ID      string       `json:"id"`
	Storage string       `json:"storage"` // embedded | kafka
	Archive bool         `json:"archive"`
	Rules   []RuleStatus `json:"rules"`
}

// RuleStatus describes a rule's targets.
type RuleStatus struct {
	Name    string         `json:"name"`
	Targets []TargetStatus `json:"targets"`
}

// TargetStatus is one target's pipeline state and, with embedded storage,
// the events waiting in its queue (Backlog, -1 when unknown).
type TargetStatus struct {
	Pipeline string `json:"pipeline"`
	Kind     string `json:"kind"` // function | sink | bus
	State    string `json:"state"`
	Error    string `json:"error,omitempty"`
	Backlog  int    `json:"backlog"`
}

// Status reports the bus's targets; ctx bounds the backlog queries.
func (b *Bus) Status(ctx context.Context) BusStatus {
	st := BusStatus{ID: b.id, Storage: "embedded", Archive: b.archive != nil, Rules: []RuleStatus{}}
	emb, embedded := b.store.(*embeddedStorage)
	if !embedded {
		st.Storage = "kafka"
	}
	for i, ru := range b.router.rules {
		rs := RuleStatus{Name: ru.name, Targets: []TargetStatus{}}
		for _, t := range b.targets[i] {
			ts := TargetStatus{Pipeline: t.id, Kind: t.kind, Backlog: -1}
			var err error
			ts.State, err = t.pipe.Status()
			if rerr := t.pipe.Ready(); rerr != nil && err == nil {
				err = rerr
			}
			if err != nil {
				ts.Error = err.Error()
			}
			if embedded {
				if n, err := emb.q.Depth(ctx, t.queue); err == nil {
					ts.Backlog = n
				}
			}
			rs.Targets = append(rs.Targets, ts)
		}
		st.Rules = append(st.Rules, rs)
	}
	return st
}
