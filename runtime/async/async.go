// Package async is Sluice's asynchronous invocation service (DESIGN §7): the
// invoke API (POST /v1/functions/{name}/invocations) that durably queues
// each invocation as a task before answering 202, the task API (get, list,
// cancel, retry, delete, batch, pause/resume), and the dispatcher that runs
// the queued tasks through the engine — one engine pipeline per Function,
// fed from the tenant-level task queues — under a fair share of the
// workers across tenants.
//
// It assembles existing parts: runtime/tasks (the task store and state
// machine), runtime/queue (the durable queue), runtime/tenancy (API keys,
// quotas, shares, placement) and runtime/engine (delivery, retries, AIMD,
// result routes), steering the engine through engine.Hooks. docs/async.md
// describes the API, the dispatch design and the guarantees.
package async

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/flow"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tenancy"
)

// Config is what the service is built from. Store and Queue are owned by
// the caller, who closes them after Run returned.
type Config struct {
	// Tenants and Functions are the loaded configuration documents.
	Tenants   []*pipelines.Tenant
	Functions []*pipelines.Function

	// Store keeps the tasks; Queue carries them to the dispatcher.
	Store tasks.Store
	Queue queue.Queue
	// SharedQueue says the queue is shared with other Sluice instances (an
	// external NATS cluster): the reconciler then re-publishes any queued
	// task, not only those this instance queued.
	SharedQueue bool
	// Instance names this Sluice instance (stable across restarts); tasks
	// are labelled with the instance that queued them. Required.
	Instance string
	// StateDir keeps the reconciler's progress across restarts ("" keeps
	// it in memory only). Pause flags are kept in the Store.
	StateDir string

	// Metrics, Limiters, Log and Stdout are the process-wide pieces the
	// engine pipelines share with the others (Limiters: one AIMD limiter per
	// function URL). Components provides the result sinks (default
	// engine.DefaultComponents()).
	Metrics    *metrics.Registry
	Limiters   *flow.Registry
	Log        *slog.Logger
	Stdout     io.Writer
	Components *engine.Components

	// Workers is the runtime's worker budget — tasks in progress across all
	// tenants — divided among the tenants by weight (default 256).
	Workers int
	// DrainTimeout bounds how long running tasks may finish when the
	// service stops (default 30s); the rest go back to the queue.
	DrainTimeout time.Duration
	// QueueWindow is each queue reader's read-ahead (default queue.DefaultWindow).
	QueueWindow int

	// Placement tunes promotion of noisy functions to dedicated queues;
	// PlacementInterval is how often queue depths are sampled and
	// decisions taken (default 5s).
	Placement         tenancy.PlacementConfig
	PlacementInterval time.Duration
	// PauseSyncInterval is how often the functions' pause flags are read
	// from the store, so that a pause or resume made through another
	// instance sharing the store takes effect here (default 2s).
	PauseSyncInterval time.Duration
	// PausedRedelivery is how long the message of a paused task stays
	// away before it is looked at again (default 5s): resuming takes up to
	// this long to restart a function's backlog.
	PausedRedelivery time.Duration
	// ReconcileInterval and ReconcileGrace: every interval, queued tasks
	// last queued between the previous pass and Grace ago are published
	// again, in case a crash lost their publish (defaults 30s and 10s; the
	// queue's duplicate window must exceed their sum).
	ReconcileInterval, ReconcileGrace time.Duration
	// StatesInterval is how often the task-state gauge is sampled (default 5s).
	StatesInterval time.Duration
	// DepthCacheTTL is how long a tenant's backlog count, read from the store
	// for the maxQueueDepth quota, is reused (default 1s).
	DepthCacheTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DrainTimeout, 30*time.Second)
	def(&c.PlacementInterval, 5*time.Second)
	def(&c.PausedRedelivery, 5*time.Second)
	def(&c.PauseSyncInterval, 2*time.Second)
	def(&c.ReconcileInterval, 30*time.Second)
	def(&c.ReconcileGrace, 10*time.Second)
	def(&c.StatesInterval, 5*time.Second)
	def(&c.DepthCacheTTL, time.Second)
	if c.Workers <= 0 {
		c.Workers = 256
	}
	if c.QueueWindow <= 0 {
		c.QueueWindow = queue.DefaultWindow
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = metrics.New("")
	}
	if c.Limiters == nil {
		c.Limiters = flow.NewRegistry()
	}
	if c.Components == nil {
		comps := engine.DefaultComponents()
		c.Components = &comps
	}
	if c.Placement.Now == nil {
		c.Placement.Now = c.Now
	}
	return c
}

// Service is the asynchronous invocation service. Build it with New, serve
// Handler, and Run it; Run returns after the service drained.
type Service struct {
	cfg      Config
	log      *slog.Logger
	store    tasks.Store
	q        queue.Queue
	auth     *tenancy.Authenticator
	gate     *gate
	place    *tenancy.Placement
	fns      map[fnKey]*function
	tenants  []string // names of every tenant with functions or keys
	inflight *inflight
	rec      *metrics.Tasks
	depth    *depthCache

	// pauseMu serializes the changes of functions' pause flags: the API's
	// pause and resume, and the pause loop applying what other instances
	// changed in the store.
	pauseMu sync.Mutex

	// readers are the queue readers, by queue name; started by Run and by
	// placement decisions, stopped by reclaims and at the end of Run.
	readersMu sync.Mutex
	readers   map[string]*reader
	retiring  map[string]string // reclaimed queues not deleted yet → where their messages go
	readCtx   context.Context   // nil before Run; readers run under it
	readWG    sync.WaitGroup

	runOnce sync.Once
}

// New builds the service and one engine pipeline per function (sinks
// created, nothing connected). Errors are configuration errors.
func New(cfg Config) (*Service, error) {
	cfg = cfg.withDefaults()
	if cfg.Store == nil || cfg.Queue == nil {
		return nil, errors.New("async: Store and Queue are required")
	}
	if cfg.Instance == "" {
		return nil, errors.New("async: Instance is required")
	}
	tenants, fns, err := catalogOf(cfg.Tenants, cfg.Functions)
	if err != nil {
		return nil, err
	}
	auth, err := tenancy.NewAuthenticator(tenants)
	if err != nil {
		return nil, fmt.Errorf("async: %w", err)
	}
	s := &Service{
		cfg: cfg, log: cfg.Log.With("component", "async"), store: cfg.Store, q: cfg.Queue,
		auth: auth, gate: newGate(cfg.Workers, tenants), fns: fns, inflight: newInflight(),
		rec: cfg.Metrics.Tasks(), readers: map[string]*reader{}, retiring: map[string]string{},
	}
	s.depth = newDepthCache(s.store, cfg.DepthCacheTTL, cfg.Now)
	cfg.Placement.Recorder = placementRecorder{s}
	s.place = tenancy.NewPlacement(tenants, cfg.Placement)
	for _, t := range tenants {
		s.tenants = append(s.tenants, t.Name)
	}
	if err := s.loadPauseFlags(); err != nil {
		return nil, err
	}
	if err := s.buildPipelines(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Service) now() time.Time { return s.cfg.Now() }

// storeCtx bounds a task-store write made outside a request (a hook).
func (s *Service) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// Run runs the dispatcher until ctx is done: a reader per task queue, the
// function pipelines, the placement, reconcile, state-sampling and
// pause-flag loops.
// Then it stops reading, lets running tasks finish for up to
// DrainTimeout (the rest go back to the queue) and returns. Call it once.
func (s *Service) Run(ctx context.Context) error {
	err := errors.New("async: Run called twice")
	s.runOnce.Do(func() { err = s.run(ctx) })
	return err
}

func (s *Service) run(ctx context.Context) error {
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	if err := s.startReaders(readCtx); err != nil {
		stopReading()
		s.shutdownPipelines() // gives back what the readers handed over
		s.stopReaders()
		return err
	}
	var loops sync.WaitGroup
	background := []func(context.Context){s.reconcileLoop, s.statesLoop, s.pauseLoop}
	if queue.CanMove(s.q) {
		background = append(background, s.placementLoop)
	} else {
		// Promotion would leave a function's backlog behind and a reclaimed
		// queue could never be emptied into the shared one.
		s.log.Info("queue placement disabled: the task queue cannot move messages between queues (Kafka, RocketMQ)")
	}
	for _, loop := range background {
		loops.Add(1)
		go func() { defer loops.Done(); loop(ctx) }()
	}
	pipeErr := s.runPipelines(ctx)
	// The pipelines drained (ctx is done): stop the readers, whose Close
	// gives back what the pipelines never took.
	stopReading()
	s.stopReaders()
	loops.Wait()
	s.log.Info("async service stopped")
	return pipeErr
}
