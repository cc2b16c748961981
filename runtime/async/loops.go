package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tenancy"
)

// LabelInstance labels each task with the instance that last queued it.
// With an embedded queue only that instance holds its message, so only it
// re-publishes the task (see reconcile).
const LabelInstance = "sluice.dev/instance"

// publishTask puts one run of task t in its function's queue. ev is the
// task's event (decoded from t.Event when nil). Errors: queue errors
// (ErrFull, ErrTooLarge, transport), or a stored event that cannot be
// decoded.
func (s *Service) publishTask(ctx context.Context, t *tasks.Task, ev *cloudevents.Event) (queue.Receipt, error) {
	if ev == nil {
		ev = &cloudevents.Event{}
		if err := json.Unmarshal(t.Event, ev); err != nil {
			return queue.Receipt{}, fmt.Errorf("task %s: stored event: %w", t.ID, err)
		}
	}
	e := ev.Clone()
	e.SetExtension(ExtTenant, t.Tenant)
	e.SetExtension(ExtFunction, t.Function)
	e.SetExtension(ExtTask, originOf(t))
	data, headers, err := queue.EncodeEvent(e)
	if err != nil {
		return queue.Receipt{}, err
	}
	return s.q.Publish(ctx, s.place.Route(t.Tenant, t.Function), msgIDOf(t), data, headers)
}

// observe reports a task's outcome to the placement policy.
func (s *Service) observe(a *attempt, o tenancy.Outcome) {
	var latency time.Duration
	if !a.dispatched.IsZero() {
		latency = s.now().Sub(a.dispatched)
	}
	s.place.Observe(a.fn.key.tenant, a.fn.key.name, o, latency)
}

// every runs fn every d until ctx is done.
func every(ctx context.Context, d time.Duration, fn func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

// placementLoop samples the depth of every queue read and carries out the
// placement policy's decisions.
func (s *Service) placementLoop(ctx context.Context) {
	every(ctx, s.cfg.PlacementInterval, s.placeOnce)
}

func (s *Service) placeOnce(ctx context.Context) {
	for _, name := range s.readerNames() {
		if d, err := s.q.Depth(ctx, name); err == nil {
			s.place.ObserveDepth(name, d)
		}
	}
	s.retireAll(ctx)
	for _, d := range s.place.Decisions() {
		if err := s.apply(ctx, d); err != nil && ctx.Err() == nil {
			s.log.Error("queue placement change failed", "kind", d.Kind, "tenant", d.Tenant, "function", d.Function,
				"from", d.From, "to", d.To, "err", err)
		}
	}
}

// apply carries out one placement decision: Route already reflects it, so
// new tasks go to the new queue; the backlog follows with queue.Move.
func (s *Service) apply(ctx context.Context, d tenancy.Decision) error {
	switch d.Kind {
	case tenancy.Promote:
		s.readersMu.Lock()
		delete(s.retiring, d.To) // promoted again before its deletion went through
		s.readersMu.Unlock()
		if err := s.ensureReader(ctx, d.To); err != nil {
			return err
		}
		n, err := s.q.Move(ctx, d.From, d.To, func(m *queue.Stored) bool {
			return m.Headers[queue.HeaderPrefix+ExtTenant] == d.Tenant && m.Headers[queue.HeaderPrefix+ExtFunction] == d.Function
		})
		s.log.Info("function promoted to a dedicated queue", "tenant", d.Tenant, "function", d.Function,
			"from", d.From, "to", d.To, "moved", n, "reason", d.Reason)
		return err
	case tenancy.Reclaim:
		if err := s.ensureReader(ctx, d.To); err != nil {
			return err
		}
		s.readersMu.Lock()
		s.retiring[d.From] = d.To
		s.readersMu.Unlock()
		s.log.Info("reclaiming a dedicated queue", "tenant", d.Tenant, "function", d.Function,
			"from", d.From, "to", d.To, "reason", d.Reason)
		return s.retire(ctx, d.From, d.To)
	}
	return nil
}

// retire empties a queue nothing is routed to any more into to and
// deletes it. Messages it cannot move yet (held for redelivery) are read
// where they are, and retire runs again on the next placement round until
// the queue is gone.
func (s *Service) retire(ctx context.Context, from, to string) error {
	moved, err := s.q.Move(ctx, from, to, nil)
	if err != nil {
		return err
	}
	s.stopReader(from)
	// Publishes routed before the switch may still land: move again until
	// the queue is empty, then delete it.
	for range 3 {
		n, err := s.q.Move(ctx, from, to, nil)
		if err == nil {
			moved += n
			err = s.q.DeleteQueue(ctx, from)
		}
		switch {
		case err == nil:
			s.readersMu.Lock()
			delete(s.retiring, from)
			s.readersMu.Unlock()
			s.log.Info("dedicated queue deleted", "queue", from, "moved", moved)
			return nil
		case !errors.Is(err, queue.ErrNotEmpty):
			return errors.Join(err, s.ensureReader(ctx, from))
		}
	}
	return s.ensureReader(ctx, from)
}

// retireAll tries again to delete the queues being retired.
func (s *Service) retireAll(ctx context.Context) {
	s.readersMu.Lock()
	pending := maps.Clone(s.retiring)
	s.readersMu.Unlock()
	for from, to := range pending {
		if err := s.retire(ctx, from, to); err != nil && ctx.Err() == nil {
			s.log.Warn("deleting a reclaimed queue; will try again", "queue", from, "err", err)
		}
	}
}

// placementRecorder counts placement decisions.
type placementRecorder struct{ s *Service }

func (r placementRecorder) Placed(d tenancy.Decision) {
	r.s.rec.Placed(string(d.Kind), d.Tenant, d.Function)
}

// reconcileLoop re-publishes queued tasks whose publish a crash may have
// lost (the task was stored, the process died before the queue had the
// message). Each pass looks at the tasks queued between the previous
// pass's bound and ReconcileGrace ago and publishes them again under
// their message id: the queue's duplicate window drops the copies of
// messages it has, and stores the ones that were lost. The bound persists
// in the state directory, so the first pass after a restart covers the
// tasks queued just before the crash. The first pass runs at start.
func (s *Service) reconcileLoop(ctx context.Context) {
	lo := readReconciled(s.cfg.StateDir)
	pass := func(ctx context.Context) {
		hi := s.now().Add(-s.cfg.ReconcileGrace)
		if err := s.reconcile(ctx, lo, hi); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("reconciling queued tasks", "err", err)
			}
			return
		}
		lo = hi
		if err := writeReconciled(s.cfg.StateDir, hi); err != nil {
			s.log.Warn("recording reconcile progress", "err", err)
		}
	}
	pass(ctx)
	every(ctx, s.cfg.ReconcileInterval, pass)
}

// reconcile re-publishes the tasks queued in [lo, hi) that this instance
// is responsible for.
func (s *Service) reconcile(ctx context.Context, lo, hi time.Time) error {
	var errs []error
	for _, tenant := range s.tenants {
		n := 0
		q := tasks.Query{Tenant: tenant, States: []tasks.State{tasks.Queued}, Limit: tasks.MaxLimit}
		for {
			page, err := s.store.List(ctx, q)
			if err != nil {
				errs = append(errs, fmt.Errorf("tenant %s: %w", tenant, err))
				break
			}
			for _, t := range page.Tasks {
				if t.Times.Queued == nil || t.Times.Queued.Before(lo) || !t.Times.Queued.Before(hi) {
					continue
				}
				if owner := t.Labels[LabelInstance]; !s.cfg.SharedQueue && owner != "" && owner != s.cfg.Instance {
					continue
				}
				if s.fns[fnKey{t.Tenant, t.Function}] == nil {
					continue
				}
				r, err := s.publishTask(ctx, t, nil)
				if err != nil {
					errs = append(errs, fmt.Errorf("tenant %s task %s: %w", tenant, t.ID, err))
					continue
				}
				if !r.Duplicate {
					n++
				}
			}
			if page.Next == "" {
				break
			}
			q.Cursor = page.Next
		}
		if n > 0 {
			s.rec.Republished(tenant, n)
			s.log.Info("queued tasks published again (their publish was lost)", "tenant", tenant, "tasks", n)
		}
	}
	return errors.Join(errs...)
}

// statesLoop samples the task-state gauge.
func (s *Service) statesLoop(ctx context.Context) {
	sample := func(ctx context.Context) {
		names := make([]string, 0, len(tasks.States()))
		for _, st := range tasks.States() {
			names = append(names, string(st))
		}
		for _, tenant := range s.tenants {
			counts, err := s.store.CountByState(ctx, tenant)
			if err != nil {
				continue
			}
			c := make(map[string]int, len(counts))
			for st, n := range counts {
				c[string(st)] = n
			}
			s.rec.SetStates(tenant, names, c)
		}
	}
	sample(ctx)
	every(ctx, s.cfg.StatesInterval, sample)
}

// depthCache serves the maxQueueDepth quota: a tenant's backlog (queued,
// retrying and paused tasks), read from the store at most once per TTL and
// counted up locally for the submissions accepted meanwhile.
type depthCache struct {
	store tasks.Store
	ttl   time.Duration
	now   func() time.Time

	mu      sync.Mutex
	entries map[string]*depthEntry
}

type depthEntry struct {
	mu    sync.Mutex // serializes refreshes of one tenant
	depth int
	read  time.Time
}

func newDepthCache(store tasks.Store, ttl time.Duration, now func() time.Time) *depthCache {
	return &depthCache{store: store, ttl: ttl, now: now, entries: map[string]*depthEntry{}}
}

// get returns tenant's backlog, refreshing it when older than the TTL.
func (c *depthCache) get(ctx context.Context, tenant string) (int, error) {
	c.mu.Lock()
	e, ok := c.entries[tenant]
	if !ok {
		e = &depthEntry{}
		c.entries[tenant] = e
	}
	c.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if now := c.now(); e.read.IsZero() || now.Sub(e.read) >= c.ttl {
		counts, err := c.store.CountByState(ctx, tenant)
		if err != nil {
			return 0, err
		}
		e.depth = counts[tasks.Queued] + counts[tasks.Retrying] + counts[tasks.Paused]
		e.read = now
	}
	return e.depth, nil
}

// added counts one accepted submission until the next refresh.
func (c *depthCache) added(tenant string) {
	c.mu.Lock()
	e := c.entries[tenant]
	c.mu.Unlock()
	if e != nil {
		e.mu.Lock()
		e.depth++
		e.mu.Unlock()
	}
}
