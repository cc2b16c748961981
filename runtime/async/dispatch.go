package async

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/invoke"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/tasks"
)

// unroutableRedelivery is how long the message of a task whose function is
// not configured (removed from the configuration) waits before it is
// looked at again: it stays queued until the function comes back or the
// task is cancelled.
const unroutableRedelivery = time.Minute

// fnRuntime is one function's engine pipeline and its source.
type fnRuntime struct {
	src  *fnSource
	pipe *engine.Pipeline
	http *invoke.HTTPFunction
}

// pipelineSpec turns a Function into the engine's pipeline form: no order
// to keep, the function's endpoint, delivery policy and result routes.
func pipelineSpec(fn *pipelines.Function) *pipelines.Pipeline {
	endpoint := fn.Spec.Endpoint()
	d := fn.Spec.Delivery
	return &pipelines.Pipeline{
		APIVersion: fn.APIVersion,
		Kind:       pipelines.KindPipeline,
		// The engine names its metrics and logs after the pipeline id:
		// "<tenant>/function/<name>" cannot clash with a Pipeline document.
		Metadata: pipelines.Metadata{Name: "function/" + fn.Metadata.Name, Tenant: fn.Metadata.Tenant},
		Spec: pipelines.PipelineSpec{
			// The engine builds sources by kind; the placeholder kind maps to
			// the function's task source in the Components given to Build.
			Source:   pipelines.SourceSpec{Kafka: &pipelines.KafkaSource{}},
			Function: &endpoint,
			Delivery: pipelines.DeliverySpec{
				Ordering: "none", Concurrency: d.Concurrency, Retry: d.Retry, MaxEventAge: d.MaxEventAge,
			},
			Results: fn.Spec.Results,
		},
		Pos: fn.Pos,
	}
}

// buildPipelines builds every function's pipeline (nothing connected).
func (s *Service) buildPipelines() error {
	keys := make([]fnKey, 0, len(s.fns))
	for k := range s.fns {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b fnKey) int { return strings.Compare(a.String(), b.String()) })
	for _, k := range keys {
		fn := s.fns[k]
		spec := pipelineSpec(fn.spec)
		e := spec.Spec.Function
		httpFn, err := invoke.NewHTTP(invoke.HTTPConfig{URL: e.URL, Mode: e.Mode, Timeout: e.Timeout.D(), Headers: secretValues(e.Headers)})
		if err != nil {
			s.shutdownPipelines()
			return fmt.Errorf("async: function %s: %w", k, err)
		}
		rt := &fnRuntime{src: newFnSource(), http: httpFn}
		h := &hooks{s: s, fn: fn}
		deps := engine.Deps{
			Metrics: s.cfg.Metrics, Limiters: s.cfg.Limiters, Log: s.cfg.Log, Stdout: s.cfg.Stdout,
			DrainTimeout: s.cfg.DrainTimeout, Function: &taskFunction{h: h, next: httpFn}, Hooks: h,
		}
		comps := engine.Components{
			Sources: map[string]engine.SourceFactory{
				"kafka": func(pipelines.SourceSpec, connectors.Options, engine.SourceEnv) (connectors.Source, error) {
					return rt.src, nil
				},
			},
			Sinks: s.cfg.Components.Sinks,
		}
		if rt.pipe, err = engine.Build(spec, deps, comps); err != nil {
			httpFn.Close()
			s.shutdownPipelines()
			return fmt.Errorf("async: function %s: %w", k, err)
		}
		fn.rt = rt
	}
	return nil
}

func secretValues(m map[string]pipelines.Secret) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v.Value()
	}
	return out
}

// shutdownPipelines releases pipelines that were built but never run.
func (s *Service) shutdownPipelines() {
	for _, fn := range s.fns {
		if fn.rt == nil {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = fn.rt.pipe.Run(ctx) // a cancelled Run connects nothing and releases the sinks
		fn.rt.http.Close()
		fn.rt = nil
	}
}

// runPipelines runs every function's pipeline until ctx is done and they
// drained.
func (s *Service) runPipelines(ctx context.Context) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for k, fn := range s.fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer fn.rt.http.Close()
			if err := fn.rt.pipe.Run(ctx); err != nil {
				s.log.Error("function pipeline failed", "function", k.String(), "err", err)
				mu.Lock()
				errs = append(errs, fmt.Errorf("function %s: %w", k, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// reader reads one task queue and hands each message to its function's
// pipeline. One goroutine per reader, started by ensureReader, stopped by
// stopReader (or when the service's read context ends).
type reader struct {
	name string
	src  connectors.Source
	stop context.CancelFunc
	done chan struct{}
}

// startReaders creates and starts a reader for every queue tasks may be
// in: each tenant's shared queue and every queue left from an earlier run
// (dedicated queues are adopted by the placement policy).
func (s *Service) startReaders(ctx context.Context) error {
	s.readersMu.Lock()
	s.readCtx = ctx
	s.readersMu.Unlock()
	names := map[string]bool{}
	for k := range s.fns {
		names[s.place.SharedQueue(k.tenant)] = true
	}
	existing, err := s.q.Queues(ctx)
	if err != nil {
		return fmt.Errorf("async: list queues: %w", err)
	}
	for _, name := range existing {
		if s.place.Adopt(name) {
			s.log.Info("dedicated queue adopted", "queue", name)
		}
		names[name] = true
	}
	for name := range names {
		if err := s.ensureReader(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// ensureReader starts a reader of queue name unless one runs.
func (s *Service) ensureReader(ctx context.Context, name string) error {
	s.readersMu.Lock()
	defer s.readersMu.Unlock()
	if _, ok := s.readers[name]; ok || s.readCtx == nil || s.readCtx.Err() != nil {
		return nil
	}
	if err := s.q.CreateQueue(ctx, name); err != nil {
		return fmt.Errorf("async: create queue %s: %w", name, err)
	}
	rctx, stop := context.WithCancel(s.readCtx)
	r := &reader{
		name: name, stop: stop, done: make(chan struct{}),
		src: s.q.Source(name, connectors.Options{Window: s.cfg.QueueWindow, Name: "queue " + name}),
	}
	s.readers[name] = r
	s.readWG.Add(1)
	go func() {
		defer s.readWG.Done()
		defer close(r.done)
		s.read(rctx, r)
	}()
	return nil
}

// read is a reader's loop.
func (s *Service) read(ctx context.Context, r *reader) {
	if err := r.src.Connect(ctx); err != nil {
		if ctx.Err() == nil {
			s.log.Error("task queue reader failed to connect", "queue", r.name, "err", err)
		}
		return
	}
	for {
		msg, ack, err := r.src.Read(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, connectors.ErrClosed) {
				s.log.Error("task queue reader stopped", "queue", r.name, "err", err)
			}
			return
		}
		s.route(ctx, msg, ack)
	}
}

// route hands a task message to its function's pipeline.
func (s *Service) route(ctx context.Context, msg *connectors.Message, ack connectors.AckFunc) {
	exts := msg.Event.Extensions()
	tenant, _ := exts[ExtTenant].(string)
	name, _ := exts[ExtFunction].(string)
	fn := s.fns[fnKey{tenant, name}]
	if fn == nil || msg.DecodeErr != nil {
		s.unroutable(ctx, msg, ack, tenant, name)
		return
	}
	// The routing attributes are Sluice's, not the caller's: the function
	// sees the event as it was submitted.
	msg.Event.SetExtension(ExtTenant, nil)
	msg.Event.SetExtension(ExtFunction, nil)
	if fn.paused.Load() {
		_ = ack(ctx, queue.RetryAfter(errPaused, s.cfg.PausedRedelivery))
		return
	}
	if !fn.rt.src.push(ctx, delivery{msg: msg, ack: ack}) {
		_ = ack(context.Background(), errSourceClosed)
	}
}

// unroutable handles a message whose function is not configured: a done
// or deleted task's message is dropped; any other waits in the queue (a
// task whose deferred record was lost is restored first, so that it is
// still there when its function comes back).
func (s *Service) unroutable(ctx context.Context, msg *connectors.Message, ack connectors.AckFunc, tenant, name string) {
	id := taskIDOf(msg.Coordinates.ID)
	if tenant != "" && id != "" {
		t, err := s.store.Get(ctx, tenant, id)
		if errors.Is(err, tasks.ErrNotFound) && msg.DecodeErr == nil && name != "" {
			err = s.restoreTask(ctx, taskKey{tenant, id}, name, 0, msg, originIn(msg))
		}
		if errors.Is(err, tasks.ErrNotFound) || errors.Is(err, engine.ErrSkip) || (err == nil && t != nil && t.State.Done()) {
			_ = ack(ctx, nil)
			return
		}
	}
	s.log.Warn("task of a function that is not configured: left in the queue", "tenant", tenant, "function", name,
		"task", id, "queue", msg.Coordinates.Topic, "retry_in", unroutableRedelivery)
	_ = ack(ctx, queue.RetryAfter(fmt.Errorf("function %s/%s is not configured", tenant, name), unroutableRedelivery))
}

// stopReader stops and closes the reader of queue name, waiting up to the
// drain timeout for the tasks it handed out.
func (s *Service) stopReader(name string) {
	s.readersMu.Lock()
	r := s.readers[name]
	delete(s.readers, name)
	s.readersMu.Unlock()
	if r != nil {
		s.closeReader(r)
	}
}

func (s *Service) closeReader(r *reader) {
	r.stop()
	<-r.done
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	if err := r.src.Close(ctx); err != nil {
		s.log.Warn("closing task queue reader", "queue", r.name, "err", err)
	}
}

// stopReaders stops every reader (the end of Run).
func (s *Service) stopReaders() {
	s.readersMu.Lock()
	rs := make([]*reader, 0, len(s.readers))
	for _, r := range s.readers {
		rs = append(rs, r)
	}
	s.readers = map[string]*reader{}
	s.readersMu.Unlock()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() { defer wg.Done(); s.closeReader(r) }()
	}
	wg.Wait()
	s.readWG.Wait()
}

// readerNames lists the queues being read.
func (s *Service) readerNames() []string {
	s.readersMu.Lock()
	defer s.readersMu.Unlock()
	out := make([]string, 0, len(s.readers))
	for n := range s.readers {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
