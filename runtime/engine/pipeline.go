// Package engine builds and runs pipelines: source → filter → ordering
// scheduler → function (under AIMD flow control, with retries) → result
// routes, acknowledging each message only when its outcome is durable.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/consumer"
	"github.com/sluicehq/sluice/runtime/filter"
	"github.com/sluicehq/sluice/runtime/flow"
	"github.com/sluicehq/sluice/runtime/invoke"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/retry"
	"github.com/sluicehq/sluice/sinks"
)

// Dead-letter extension attributes set on events routed to onFailure.
const (
	ExtReason    = "sluicereason"    // human-readable failure reason
	ExtClass     = "sluiceclass"     // permanent | exhausted | expired | undecodable
	ExtAttempts  = "sluiceattempts"  // invocations made
	ExtStatus    = "sluicestatus"    // last HTTP status (0 = transport error)
	ExtPipeline  = "sluicepipeline"  // tenant/name of the pipeline
	ExtTopic     = "sluicetopic"     // original topic or queue
	ExtPartition = "sluicepartition" // original partition or queue id
	ExtOffset    = "sluiceoffset"    // original offset (-1 if none)
	ExtMessageID = "sluicemsgid"     // original broker message id, where offsets do not exist
	// ExtDataDropped is set, with the route's reason, on a dead letter
	// written without its data because the route refused it with data.
	ExtDataDropped = "sluicedatadropped"
)

// Deps are process-wide pieces shared by all pipelines.
type Deps struct {
	Metrics  *metrics.Registry
	Limiters *flow.Registry
	Log      *slog.Logger
	Stdout   io.Writer // log sinks write here; default os.Stdout
	// DrainTimeout bounds the soft stop: how long in-flight events may
	// take to finish after a stop is requested before they are abandoned
	// (and redelivered later). Default 30s.
	DrainTimeout time.Duration
	// Function overrides the HTTP function client (embedding, tests).
	Function invoke.Function
	// Hooks, when set, follow and steer every event (see Hooks).
	Hooks Hooks
}

// Pipeline is one running binding. Build it with Build, run it with Run.
type Pipeline struct {
	spec     *pipelines.Pipeline
	id       string
	src      connectors.Source
	fn       invoke.Function
	limiter  flow.Limiter
	policy   *retry.Policy
	attempts int
	// retryAfterMax caps how long a Retry-After may pause the limiter.
	retryAfterMax time.Duration
	filter        filter.Filter
	onSuccess     []route
	onFailure     []route
	ordering      consumer.Ordering
	sched         *consumer.Scheduler[*item]
	rec           *metrics.Pipeline
	log           *slog.Logger
	drain         time.Duration
	maxEvents     int           // batch mode: events per invocation (1 otherwise)
	linger        time.Duration // batch mode: how long a batch waits to fill
	hooks         Hooks
	brokerRetry   bool // the source's broker retries failures (connectors.BrokerRetrier)
	// pool runs single-event mode's workers (nil in batch mode); set by Run
	// before any worker starts.
	pool *workerPool
	// delayed counts events waiting out a retry delay (single-event mode);
	// followLimit widens the credit by them.
	delayed atomic.Int64

	stateMu sync.Mutex
	state   string
	lastErr error
}

type route struct {
	name string // kind#index, e.g. "kafka#0", for logs and metrics
	sink sinks.Sink
}

// item is one message travelling through the pipeline.
type item struct {
	msg  *connectors.Message
	ack  connectors.AckFunc
	read time.Time
	// results and reason are what Hooks.Finished reports.
	results []cloudevents.Event
	reason  string
	// in is the single-event mode's invocation input, a copy of msg.Event
	// kept here so that it needs no allocation of its own.
	in [1]cloudevents.Event
}

// Pipeline states reported by Status.
const (
	StateStarting   = "starting"
	StateConnecting = "connecting"
	StateRunning    = "running"
	StateDraining   = "draining"
	StateStopped    = "stopped"
	StateFailed     = "failed"
)

// Build constructs a pipeline. It creates (but does not connect) the
// source and sinks; Run connects. On error nothing is left open.
func Build(spec *pipelines.Pipeline, deps Deps, comps Components) (p *Pipeline, err error) {
	id := spec.ID()
	log := deps.Log.With("pipeline", id)
	p = &Pipeline{spec: spec, id: id, log: log, rec: deps.Metrics.Pipeline(id), drain: deps.DrainTimeout, state: StateStarting}
	if p.drain <= 0 {
		p.drain = 30 * time.Second
	}
	d := spec.Spec.Delivery
	if p.ordering, err = consumer.ParseOrdering(d.Ordering); err != nil {
		return nil, fmt.Errorf("pipeline %s: %w", id, err)
	}
	if p.filter, err = filter.Compile(spec.Spec.Filter); err != nil {
		return nil, fmt.Errorf("pipeline %s: filter: %w", id, err)
	}
	p.policy = retry.NewPolicy(d.Retry, d.MaxEventAge.D())
	p.attempts = d.Retry.Attempts
	p.retryAfterMax = d.Retry.RetryAfterMax.D()

	p.maxEvents = 1
	p.hooks = deps.Hooks
	c := d.Concurrency
	if fnSpec := spec.Spec.Function; fnSpec == nil {
		if len(spec.Spec.Results.OnSuccess) == 0 {
			return nil, fmt.Errorf("pipeline %s: %w", id, ErrNoFunction)
		}
		// No function: every event is its own result (identity). There is
		// no target to overload, so the limit is fixed at the configured
		// maximum instead of shared AIMD state keyed by a URL.
		p.fn = deps.Function
		if p.fn == nil {
			p.fn = Identity{}
		}
		p.limiter = flow.NewAIMD(flow.Config{Initial: c.Max, Min: c.Max, Max: c.Max})
	} else {
		if fnSpec.Mode == pipelines.ModeBatch && fnSpec.Batch != nil {
			p.maxEvents, p.linger = max(fnSpec.Batch.MaxEvents, 1), fnSpec.Batch.Linger.D()
		}
		if p.hooks != nil && fnSpec.Mode == pipelines.ModeBatch {
			return nil, fmt.Errorf("pipeline %s: hooks are not available in batch mode", id)
		}
		p.fn = deps.Function
		if p.fn == nil {
			fn, err := invoke.NewHTTP(invoke.HTTPConfig{
				URL: fnSpec.URL, Mode: fnSpec.Mode, Timeout: fnSpec.Timeout.D(), Headers: secretMap(fnSpec.Headers),
			})
			if err != nil {
				return nil, fmt.Errorf("pipeline %s: function: %w", id, err)
			}
			p.fn = fn
		}
		p.limiter = deps.Limiters.For(fnSpec.URL, flow.Config{
			Initial: c.Initial, Min: c.Min, Max: c.Max, Backoff: c.Backoff, LatencyThreshold: c.LatencyThreshold.D(),
			Recorder: deps.Metrics.Limiter(fnSpec.URL),
		})
	}
	p.sched = consumer.NewScheduler[*item](p.ordering, p.creditFor(p.limiter.Limit()))

	kind, err := SourceKind(spec.Spec.Source)
	if err != nil {
		return nil, fmt.Errorf("pipeline %s: %w", id, err)
	}
	newSource, ok := comps.Sources[kind]
	if !ok {
		return nil, fmt.Errorf("pipeline %s: source kind %q is not available", id, kind)
	}
	if p.src, err = newSource(spec.Spec.Source, connectors.Options{Window: d.Window, Name: id}, SourceEnv{Log: log, Metrics: p.rec}); err != nil {
		return nil, fmt.Errorf("pipeline %s: source %s: %w", id, kind, err)
	}
	built := p // the error returns below set p to nil
	defer func() {
		if err != nil {
			built.closeSinks(context.Background())
			_ = built.src.Close(context.Background())
		}
	}()
	if br, ok := p.src.(connectors.BrokerRetrier); ok {
		p.brokerRetry = br.BrokerRetries()
	}
	stdout := deps.Stdout
	if stdout == nil {
		stdout = os.Stdout
	}
	env := SinkEnv{Log: log, Stdout: stdout, Tenant: spec.Metadata.Tenant}
	if p.onSuccess, err = buildRoutes(spec.Spec.Results.OnSuccess, "onSuccess", comps, env); err != nil {
		return nil, fmt.Errorf("pipeline %s: %w", id, err)
	}
	if p.onFailure, err = buildRoutes(spec.Spec.Results.OnFailure, "onFailure", comps, env); err != nil {
		return nil, fmt.Errorf("pipeline %s: %w", id, err)
	}
	return p, nil
}

func buildRoutes(specs []pipelines.RouteSpec, list string, comps Components, env SinkEnv) ([]route, error) {
	var out []route
	for i, r := range specs {
		kind, err := RouteKind(r)
		if err != nil {
			return out, fmt.Errorf("results.%s[%d]: %w", list, i, err)
		}
		newSink, ok := comps.Sinks[kind]
		if !ok {
			return out, fmt.Errorf("results.%s[%d]: sink kind %q is not available", list, i, kind)
		}
		s, err := newSink(r, env)
		if err != nil {
			return out, fmt.Errorf("results.%s[%d] (%s): %w", list, i, kind, err)
		}
		out = append(out, route{name: list + "/" + kind + "#" + strconv.Itoa(i), sink: s})
	}
	return out, nil
}

// creditFor is the read-ahead allowed for a concurrency limit: about twice
// the limit's worth of events (the limit counts invocations, each of up to
// maxEvents events), so the function never waits for the broker and memory
// stays bounded whatever the backlog (DESIGN §6).
func (p *Pipeline) creditFor(limit int) int { return max(2*limit*p.maxEvents, 2) }

// creditNow is creditFor the current limit, widened by the events waiting
// out a retry delay — up to as many again, so memory stays bounded if
// every call is refused. Those events hold their place in the scheduler
// and in the source's window for the whole delay (a second for B2's 429s
// with Retry-After: 1) without being read-ahead for the function; counted
// against the credit, a burst of refusals left the function short of
// events until their delays ran out.
func (p *Pipeline) creditNow() int {
	c := p.creditFor(p.limiter.Limit())
	return c + min(int(p.delayed.Load()), c)
}

// ID is the pipeline's tenant/name.
func (p *Pipeline) ID() string { return p.id }

// Status reports the pipeline's state and its last error, if any.
func (p *Pipeline) Status() (state string, err error) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	return p.state, p.lastErr
}

func (p *Pipeline) setState(s string, err error) {
	p.stateMu.Lock()
	p.state, p.lastErr = s, err
	p.stateMu.Unlock()
}

// Ready reports nil when the pipeline is running and its source is
// connected; otherwise why not (while connecting, the broker error the
// source is retrying on).
func (p *Pipeline) Ready() error {
	state, err := p.Status()
	var health error
	if h, ok := p.src.(connectors.Health); ok {
		health = h.Health()
	}
	switch {
	case state == StateRunning && health == nil:
		return nil
	case state == StateRunning || (state == StateConnecting && health != nil):
		return fmt.Errorf("%s: source: %w", state, health)
	case err != nil:
		return fmt.Errorf("%s: %w", state, err)
	}
	return errors.New(state)
}

// Run connects the source and processes messages until ctx is done, then
// stops softly: it stops reading, lets in-flight events finish for up to
// the drain timeout, abandons (does not ack) what is left, commits through
// the source's Close and closes the sinks. It returns nil after a requested
// stop and an error if the pipeline failed on its own.
func (p *Pipeline) Run(ctx context.Context) (err error) {
	p.rec.SetRunning(true)
	defer func() {
		p.rec.SetRunning(false)
		if err != nil {
			p.setState(StateFailed, err)
		} else {
			p.setState(StateStopped, nil)
		}
	}()
	p.setState(StateConnecting, nil)
	// The source learns its credit before it connects, so that its first
	// fetch or prefetch is already sized to it.
	credit := p.creditFor(p.limiter.Limit())
	if cf, ok := p.src.(connectors.CreditFollower); ok {
		cf.SetCredit(credit)
	}
	if err := p.src.Connect(ctx); err != nil {
		p.shutdownResources()
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("connect source: %w", err)
	}
	p.rec.SetConnected(true)
	p.setState(StateRunning, nil)
	p.log.Info("pipeline running", "ordering", p.spec.Spec.Delivery.Ordering, "function", p.FunctionURL())

	// work is cancelled only for a hard stop, after the drain deadline.
	work, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()

	var workers sync.WaitGroup
	readErr := make(chan error, 1)
	dispatched := make(chan struct{})
	go func() { readErr <- p.readLoop(readCtx) }()
	if p.maxEvents > 1 {
		go func() {
			defer close(dispatched)
			p.batchLoop(work, &workers)
		}()
	} else {
		close(dispatched) // the pool's workers pop for themselves
		p.pool = &workerPool{wg: &workers, work: func() { p.work(work) }}
		p.pool.setLimit(p.limiter.Limit())
	}
	creditDone := make(chan struct{})
	go func() { defer close(creditDone); p.followLimit(readCtx, credit) }()

	var runErr error
	select {
	case <-ctx.Done():
		<-readErr
	case runErr = <-readErr:
		stopReading()
	}
	p.setState(StateDraining, runErr)
	p.log.Info("pipeline draining", "timeout", p.drain)
	<-creditDone
	// Finish everything already read, parked events included: abandoning a
	// parked event would hold back the commit of every later offset of its
	// partition that did finish, and those would be redelivered.
	drained := p.waitIdle(p.drain)
	p.sched.Close()
	<-dispatched
	for _, it := range p.sched.Drain() {
		p.abandon(it, errors.New("abandoned: drain timeout"))
	}
	if !drained {
		p.log.Warn("drain timeout: abandoning in-flight events; they will be redelivered")
		hardStop()
	}
	workers.Wait()
	p.shutdownResources()
	p.log.Info("pipeline stopped")
	return runErr
}

// shutdownResources closes the source (committing acknowledged positions)
// and then the sinks, each bounded by the drain timeout.
func (p *Pipeline) shutdownResources() {
	ctx, cancel := context.WithTimeout(context.Background(), p.drain)
	defer cancel()
	if err := p.src.Close(ctx); err != nil {
		p.log.Error("closing source", "err", err)
	}
	p.rec.SetConnected(false)
	p.closeSinks(ctx)
}

func (p *Pipeline) closeSinks(ctx context.Context) {
	for _, r := range append(append([]route(nil), p.onSuccess...), p.onFailure...) {
		if err := r.sink.Close(ctx); err != nil {
			p.log.Error("closing sink", "route", r.name, "err", err)
		}
	}
}

// waitIdle waits until no event is queued, parked or running, or d passes.
func (p *Pipeline) waitIdle(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for p.sched.Ready()+p.sched.Parked()+p.sched.Running() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// followLimit keeps the read-ahead credit at about twice the AIMD limit,
// and the worker pool (nil in batch mode) sized to the limit. It follows
// every limit change at once (the limiter's slow start doubles the limit
// per window and measures the next window with the new slots filled) and
// polls for the events waiting out retry delays, which widen the credit.
func (p *Pipeline) followLimit(ctx context.Context, last int) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		changed := p.limiter.Changed()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
		if p.pool != nil {
			p.pool.setLimit(p.limiter.Limit())
		}
		if c := p.creditNow(); c != last {
			p.sched.SetCredit(c)
			// The source's own fetching follows too, so that what the
			// broker client buffers shrinks and grows with the limit.
			if cf, ok := p.src.(connectors.CreditFollower); ok {
				cf.SetCredit(c)
			}
			last = c
		}
	}
}

// readLoop moves messages from the source into the scheduler. Blocking in
// Push is the backpressure that keeps read-ahead bounded.
func (p *Pipeline) readLoop(ctx context.Context) error {
	for {
		msg, ack, err := p.src.Read(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, connectors.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read: %w", err)
		}
		p.rec.Received()
		it := &item{msg: msg, ack: ack, read: time.Now()}
		key := ""
		if p.ordering == consumer.Key {
			key = msg.Key
		}
		if err := p.sched.Push(ctx, msg.Lane, key, it); err != nil {
			p.abandon(it, err)
			return nil
		}
	}
}

// workerPool runs single-event processing on long-lived workers that pop
// from the scheduler themselves. A goroutine per event grew a fresh stack
// in the HTTP path for every event (morestack/copystack) and cost a start,
// an exit and an extra hand-off; a worker keeps its grown stack.
//
// Its target size is the concurrency limit plus one worker for each that
// is away from the function (waiting out a retry delay, writing results,
// running a hook), so that a limit's worth of workers can always be
// calling — and no more: a worker that ends a call pops the next ready
// event and acquires the slot it has just released itself, without waking
// another goroutine. Sized to the credit (twice the limit), half the
// workers waited in the limiter holding an event each and every released
// slot went to one of them: a wake-up and a run-queue wait on every call's
// path (~0.45 ms per call in B2's execution trace, 5 ms function, loaded
// 2-core machine). Ready events wait in the scheduler instead, where they
// cost nothing.
//
// Ownership: Run creates it; setLimit is called by one goroutine at a time
// (Run, then followLimit); workers call away, back and surplus; all are
// safe for concurrent use. Every worker is counted in wg and returns once
// the scheduler is closed, or between two events while the pool is above
// its target.
type workerPool struct {
	wg   *sync.WaitGroup
	work func() // a worker's life: returns on close or when surplus

	mu    sync.Mutex
	size  int // workers started and not returned
	limit int // the concurrency limit
	out   int // workers away from the function
}

// setLimit sets the concurrency limit the pool serves and starts workers
// up to the new target; a lower target is reached as workers finish events.
func (w *workerPool) setLimit(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.limit = max(n, 1)
	w.growLocked()
}

// away reports that the calling worker holds an event but will not call
// the function for a while; back ends it. Both are no-ops on a nil pool
// (batch mode).
func (w *workerPool) away() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out++
	w.growLocked()
}

func (w *workerPool) back() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out--
}

// surplus reports whether the calling worker is to return because the pool
// is above its target; if so it is no longer counted.
func (w *workerPool) surplus() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.size > w.limit+w.out {
		w.size--
		return true
	}
	return false
}

// exited uncounts a worker that returned because the scheduler closed.
func (w *workerPool) exited() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.size--
}

func (w *workerPool) growLocked() {
	for ; w.size < w.limit+w.out; w.size++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.work()
		}()
	}
}

// work is one pool worker: it processes ready events until the scheduler
// closes or the pool has more workers than it needs. ctx is cancelled only
// for a hard stop.
func (p *Pipeline) work(ctx context.Context) {
	for !p.pool.surplus() {
		t, err := p.sched.Pop(context.Background())
		if err != nil {
			p.pool.exited()
			return
		}
		p.process(ctx, t.Value)
		p.sched.Done(t)
	}
}

// errRevoked marks work abandoned because its lane moved to another consumer.
var errRevoked = fmt.Errorf("abandoned: %w", connectors.ErrRevoked)

// process takes one event to a durable outcome, or abandons it when the
// pipeline stops or its lane is revoked.
func (p *Pipeline) process(ctx context.Context, it *item) {
	msg := it.msg
	if !p.admit(ctx, it) {
		return
	}
	if p.hooks != nil {
		p.pool.away()
		hctx, err := p.hooks.Admit(ctx, msg)
		p.pool.back()
		switch {
		case errors.Is(err, ErrSkip):
			p.finish(it, metrics.OutcomeSkipped)
			return
		case err != nil:
			p.abandon(it, err)
			return
		}
		ctx = hctx
	}
	for attempt := 1 + priorAttempts(ctx); ; attempt++ {
		res, v, ok := p.invokeOnce(ctx, it)
		if !ok {
			return
		}
		if v.Class == retry.Success {
			inheritKey(res.Events, msg.Key)
			switch err := p.writeRoutes(ctx, p.onSuccess, res.Events, msg.Revoked); {
			case err == nil:
				it.results = res.Events
				p.finish(it, metrics.OutcomeSucceeded)
			case errors.Is(err, sinks.ErrRejected):
				p.fail(ctx, it, failure{class: "rejected", reason: "result rejected: " + err.Error(), attempts: attempt, status: res.Status})
			default:
				p.giveUp(ctx, it)
			}
			return
		}
		if p.brokerRetry {
			// The broker counts attempts, delays redelivery and dead-letters.
			p.rec.Retry()
			if err := it.ack(context.Background(), fmt.Errorf("function failed: %s", v.Reason)); err != nil {
				p.log.Debug("nack not recorded", "id", msg.Event.ID(), "err", err)
			}
			p.rec.Finished(metrics.OutcomeBrokerRetry, time.Since(it.read).Seconds())
			return
		}
		delay, again := p.policy.Next(attempt, v, it.read, time.Now())
		if p.hooks != nil {
			p.hooks.Attempted(msg, attempt, v, again, delay)
		}
		if !again {
			p.fail(ctx, it, p.failureOf(v, attempt))
			return
		}
		p.rec.Retry()
		p.log.Debug("retrying", "id", msg.Event.ID(), "attempt", attempt, "delay", delay, "reason", v.Reason)
		p.pool.away()
		p.delayed.Add(1)
		slept := sleep(ctx, delay, msg.Revoked)
		p.delayed.Add(-1)
		p.pool.back()
		if !slept {
			p.giveUp(ctx, it)
			return
		}
	}
}

// giveUp ends an event whose work was interrupted: skipped if its hook
// context was cancelled with ErrSkip, otherwise abandoned for redelivery.
func (p *Pipeline) giveUp(ctx context.Context, it *item) {
	if skipped(ctx) {
		p.finish(it, metrics.OutcomeSkipped)
		return
	}
	p.abandon(it, abandonCause(ctx))
}

// ExtPartitionKey is the CloudEvents partitioning extension.
const ExtPartitionKey = "partitionkey"

// inheritKey gives results without a partition key their input's key, so
// a result topic keeps the per-key order of the input.
func inheritKey(results []cloudevents.Event, key string) {
	if key == "" {
		return
	}
	for i := range results {
		if _, ok := results[i].Extensions()[ExtPartitionKey]; !ok {
			results[i].SetExtension(ExtPartitionKey, key)
		}
	}
}

// admit finishes events that need no invocation: revoked (abandoned),
// undecodable (dead-lettered) and filtered out (acked). It reports whether
// the event is to be invoked.
func (p *Pipeline) admit(ctx context.Context, it *item) bool {
	msg := it.msg
	switch {
	case revoked(msg):
		p.abandon(it, errRevoked)
	case msg.DecodeErr != nil:
		p.fail(ctx, it, failure{class: "undecodable", reason: "undecodable message: " + msg.DecodeErr.Error()})
	case !p.filter.Match(&msg.Event):
		p.finish(it, metrics.OutcomeFiltered)
	default:
		return true
	}
	return false
}

// invokeOnce calls the function once under the limiter. ok is false when
// the event was abandoned (stop or revoke) instead of invoked.
func (p *Pipeline) invokeOnce(ctx context.Context, it *item) (invoke.Result, retry.Verdict, bool) {
	it.in[0] = it.msg.Event
	res, v, ok := p.call(ctx, it.in[:])
	if !ok {
		p.giveUp(ctx, it)
	}
	return res, v, ok
}

// call invokes the function once under the limiter and classifies the
// outcome. ok is false when ctx ended before or during the call.
func (p *Pipeline) call(ctx context.Context, events []cloudevents.Event) (invoke.Result, retry.Verdict, bool) {
	release, err := p.limiter.Acquire(ctx)
	if err != nil {
		return invoke.Result{}, retry.Verdict{}, false
	}
	start := time.Now()
	res, err := p.fn.Invoke(ctx, events)
	elapsed := time.Since(start)
	if err != nil && ctx.Err() != nil {
		release(flow.Ignore)
		return invoke.Result{}, retry.Verdict{}, false
	}
	v := retry.Classify(err)
	outcome := flow.Success
	if v.Overload {
		outcome = flow.Overload
		// A 503 with Retry-After says the whole target is unavailable until
		// then: hold every new call, not just this event's retry. A 429 is
		// about this call's share: the AIMD cut and the event's own
		// Retry-After delay answer it, and pausing everything would throw
		// away the capacity that is there.
		if pz, ok := p.limiter.(interface{ Pause(time.Time) }); ok && v.Status == 503 && v.RetryAfter > 0 {
			pz.Pause(time.Now().Add(min(v.RetryAfter, p.retryAfterMax)))
		}
	}
	release(outcome)
	status := res.Status
	if err != nil {
		status = v.Status
	}
	p.rec.Invoked(status, elapsed.Seconds())
	return res, v, true
}

type failure struct {
	class    string
	reason   string
	attempts int
	status   int
}

// fail routes an event to onFailure with the reason attached and acks it
// once every route confirmed. With no onFailure route the event is logged
// and acknowledged (counted as discarded): there is nowhere durable to keep
// it, and blocking the partition forever would stop every other event.
func (p *Pipeline) fail(ctx context.Context, it *item, f failure) {
	p.rec.DeadLetter(f.class)
	msg := it.msg
	it.reason = f.class + ": " + f.reason
	if len(p.onFailure) == 0 {
		p.log.Error("event failed and no onFailure route is configured: discarded",
			"id", msg.Event.ID(), "class", f.class, "reason", f.reason, "attempts", f.attempts,
			"topic", msg.Coordinates.Topic, "partition", msg.Coordinates.Partition, "offset", msg.Coordinates.Offset)
		p.finish(it, metrics.OutcomeDiscarded)
		return
	}
	p.log.Warn("event dead-lettered", "id", msg.Event.ID(), "class", f.class, "reason", f.reason, "attempts", f.attempts)
	dl := p.deadLetter(msg, f)
	err := p.writeRoutes(ctx, p.onFailure, []cloudevents.Event{dl}, msg.Revoked)
	if errors.Is(err, sinks.ErrRejected) {
		// Most likely too large for the route. The original stays in the
		// source at the coordinates the dead letter names, so a dead letter
		// without the data still says everything needed to find it.
		p.log.Error("dead-letter route rejected the event; writing it without its data", "id", msg.Event.ID(), "err", err)
		_ = dl.SetData("", nil)
		dl.SetDataContentType("")
		dl.SetExtension(ExtDataDropped, err.Error())
		err = p.writeRoutes(ctx, p.onFailure, []cloudevents.Event{dl}, msg.Revoked)
	}
	switch {
	case err == nil:
		p.finish(it, metrics.OutcomeDeadLettered)
	case errors.Is(err, sinks.ErrRejected):
		p.log.Error("dead-letter route rejected the event even without its data: discarded",
			"id", msg.Event.ID(), "topic", msg.Coordinates.Topic, "partition", msg.Coordinates.Partition,
			"offset", msg.Coordinates.Offset, "err", err)
		p.finish(it, metrics.OutcomeDiscarded)
	default:
		p.giveUp(ctx, it)
	}
}

// deadLetter is the event written to onFailure: the original event with
// the failure and its original coordinates as extension attributes.
func (p *Pipeline) deadLetter(msg *connectors.Message, f failure) cloudevents.Event {
	dl := msg.Event.Clone()
	c := msg.Coordinates
	dl.SetExtension(ExtReason, f.reason)
	dl.SetExtension(ExtClass, f.class)
	dl.SetExtension(ExtAttempts, f.attempts)
	dl.SetExtension(ExtStatus, f.status)
	dl.SetExtension(ExtPipeline, p.id)
	dl.SetExtension(ExtTopic, c.Topic)
	dl.SetExtension(ExtPartition, int(c.Partition))
	dl.SetExtension(ExtOffset, strconv.FormatInt(c.Offset, 10))
	if c.ID != "" {
		dl.SetExtension(ExtMessageID, c.ID)
	}
	return dl
}

// errStopped reports that a write was given up because the pipeline
// stopped hard or the lane was revoked; the caller abandons the event.
var errStopped = errors.New("stopped")

// writeRoutes writes events to every route, retrying each failed route with
// backoff until it succeeds: a route that is down holds the events (and so
// their commits) rather than losing them. It returns errStopped when the
// pipeline is stopped hard or revoked closes first, and an error wrapping
// sinks.ErrRejected when a route refuses the events for good (retrying
// cannot help, so it is not retried).
func (p *Pipeline) writeRoutes(ctx context.Context, routes []route, events []cloudevents.Event, revoked <-chan struct{}) error {
	if len(events) == 0 || len(routes) == 0 {
		return nil
	}
	p.pool.away()
	defer p.pool.back()
	for _, r := range routes {
		b := backoff.NewExponentialBackOff()
		b.InitialInterval = 100 * time.Millisecond
		b.MaxInterval = 10 * time.Second
		for attempt := 1; ; attempt++ {
			start := time.Now()
			err := r.sink.Write(ctx, events)
			p.rec.SinkWrite(r.name, err, time.Since(start).Seconds())
			if err == nil {
				break
			}
			if errors.Is(err, sinks.ErrRejected) {
				return fmt.Errorf("route %s: %w", r.name, err)
			}
			if ctx.Err() != nil {
				return errStopped
			}
			delay := b.NextBackOff()
			p.log.Warn("result route write failed; retrying", "route", r.name, "events", len(events),
				"first_id", events[0].ID(), "attempt", attempt, "next", delay, "err", err)
			if !sleep(ctx, delay, revoked) {
				return errStopped
			}
		}
	}
	return nil
}

// finish acknowledges a done event.
func (p *Pipeline) finish(it *item, outcome string) {
	if p.hooks != nil {
		p.pool.away()
		p.hooks.Finished(it.msg, outcome, it.results, it.reason)
		p.pool.back()
	}
	if err := it.ack(context.Background(), nil); err != nil {
		p.log.Debug("ack not recorded", "id", it.msg.Event.ID(), "err", err)
	}
	p.rec.Finished(outcome, time.Since(it.read).Seconds())
}

// abandon gives an event back unprocessed: its position is not committed
// and the broker redelivers it.
func (p *Pipeline) abandon(it *item, cause error) {
	if p.hooks != nil {
		p.hooks.Finished(it.msg, metrics.OutcomeAbandoned, nil, cause.Error())
	}
	if err := it.ack(context.Background(), cause); err != nil {
		p.log.Debug("nack not recorded", "id", it.msg.Event.ID(), "err", err)
	}
	p.rec.Finished(metrics.OutcomeAbandoned, 0)
}

func abandonCause(ctx context.Context) error {
	if ctx.Err() != nil {
		return fmt.Errorf("abandoned: pipeline stopped: %w", ctx.Err())
	}
	return errRevoked
}

func revoked(m *connectors.Message) bool {
	if m.Revoked == nil {
		return false
	}
	select {
	case <-m.Revoked:
		return true
	default:
		return false
	}
}

// sleep waits d; it returns false if ctx ended or the lane was revoked first.
func sleep(ctx context.Context, d time.Duration, revoked <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-revoked:
		return false
	}
}

// SourceKind names the pipeline's source kind ("kafka", ...).
func (p *Pipeline) SourceKind() string {
	k, _ := SourceKind(p.spec.Spec.Source)
	return k
}

// FunctionURL is the function endpoint; "" for a pipeline without a
// function.
func (p *Pipeline) FunctionURL() string {
	if f := p.spec.Spec.Function; f != nil {
		return f.URL
	}
	return ""
}
