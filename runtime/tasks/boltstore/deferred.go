package boltstore

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/runtime/tasks"
)

// maxPending bounds the creates admitted but not yet committed: past it,
// creators wait for a commit (backpressure), so a stalled disk cannot grow
// the pending set without bound.
const maxPending = 4096

// pending holds the creates admitted in memory and not yet committed:
// every create (Create, CreateDeferred, Restore) goes through it. It is
// what makes a deferred create behave as if written: Get, List and
// CountByState read it before bbolt, the idempotency check of a later
// create sees its key, and the writer writes it into the first
// transaction that starts after it was admitted, so a write queued after
// the create returned (a dispatcher's claim) finds it.
//
// Concurrency: admit runs under mu, with the bbolt read it decides on, so
// two creates of one key are ordered; the writer takes the queue (take)
// inside its transaction and, once the commit ended, drops the entries
// (settle) under mu, before answering the transaction's other writes. So
// an entry leaves the pending set only once a bbolt read started later
// sees its record: a reader that checks the set and then reads bbolt
// misses nothing. Lock order: mu, then bbolt's own locks.
type pending struct {
	log *slog.Logger

	mu    sync.Mutex
	byID  map[pendKey]*pendingCreate
	keys  map[pendKey]*pendingCreate // {tenant, idempotency key} → the create that holds it
	queue []*pendingCreate           // admitted, not yet taken by the writer

	slots chan struct{} // one per entry of byID
	kick  chan struct{} // (buffered 1) wakes the writer when the queue grows
}

// pendKey is a tenant's task id, or a tenant's idempotency key.
type pendKey struct{ tenant, name string }

// pendingCreate is one admitted create. Its fields do not change once it
// is queued.
type pendingCreate struct {
	t *tasks.Task // the record to write (a private copy)
	// holdsKey: t takes its idempotency key, until exp. A restored task
	// whose key another live task took meanwhile does not.
	holdsKey bool
	exp      time.Time
	// done, if not nil, receives the commit's outcome (Create and Restore
	// wait for it; CreateDeferred does not).
	done chan error
}

func newPending(log *slog.Logger) *pending {
	return &pending{
		log: log, byID: map[pendKey]*pendingCreate{}, keys: map[pendKey]*pendingCreate{},
		slots: make(chan struct{}, maxPending), kick: make(chan struct{}, 1),
	}
}

// lookup returns a copy of the tenant's pending task id, or nil.
func (p *pending) lookup(tenant, id string) *tasks.Task {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc := p.byID[pendKey{tenant, id}]; pc != nil {
		return pc.t.Clone()
	}
	return nil
}

// ofTenant returns copies of the tenant's pending tasks that match q.
func (p *pending) ofTenant(q tasks.CheckedQuery) []*tasks.Task {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*tasks.Task
	for k, pc := range p.byID {
		if k.tenant == q.Tenant && q.Match(pc.t) {
			out = append(out, pc.t.Clone())
		}
	}
	return out
}

// take hands the writer the queued creates (inside its transaction).
func (p *pending) take() []*pendingCreate {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.queue
	p.queue = nil
	return q
}

func (p *pending) queued() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) > 0
}

// settle drops committed (err == nil) or lost creates and answers their
// waiters. A lost deferred create has nobody waiting: it is logged, and
// its queue message restores it (DeferredCreator.Restore).
func (p *pending) settle(done []*pendingCreate, err error) {
	if len(done) == 0 {
		return
	}
	p.mu.Lock()
	for _, pc := range done {
		delete(p.byID, pendKey{pc.t.Tenant, pc.t.ID})
		if k := (pendKey{pc.t.Tenant, pc.t.IdempotencyKey}); pc.holdsKey && p.keys[k] == pc {
			delete(p.keys, k)
		}
	}
	p.mu.Unlock()
	lost := 0
	for _, pc := range done {
		<-p.slots
		if pc.done != nil {
			pc.done <- err
		} else if err != nil {
			lost++
		}
	}
	if lost > 0 {
		p.log.Error("tasks: task records not written; their queue messages restore them", "tasks", lost, "err", err)
	}
}

// admitMode says which operation admits a create.
type admitMode int

const (
	modeCreate  admitMode = iota // Create, CreateDeferred
	modeRestore                  // Restore
)

// admit validates t, decides its fate against the pending creates and the
// committed state, and queues its record for the writer. It returns the
// queued create (for its done channel) and, for an idempotency hit, a
// *DuplicateError (t then is the Duplicate record, queued as well).
func (s *Store) admit(ctx context.Context, t *tasks.Task, mode admitMode, wait bool) (*pendingCreate, error) {
	now := s.now()
	var queuedAt *time.Time
	if mode == modeRestore {
		queuedAt = t.Times.Queued
		t.State = tasks.Queued
	}
	if err := tasks.Prepare(t, now); err != nil {
		return nil, err
	}
	if queuedAt != nil {
		q := tasks.Norm(*queuedAt)
		t.Times.Queued = &q
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, tasks.ErrClosed
	}
	p := s.pend
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	queued := false
	defer func() {
		if !queued {
			<-p.slots
		}
	}()
	idKey := pendKey{t.Tenant, t.ID}
	if p.byID[idKey] != nil {
		return nil, fmt.Errorf("%w: %s", tasks.ErrExists, t.ID)
	}
	keyKey := pendKey{t.Tenant, t.IdempotencyKey}
	var owner string // the live holder of t's key, if any
	if pc := p.keys[keyKey]; t.IdempotencyKey != "" && pc != nil && now.Before(pc.exp) {
		owner = pc.t.ID
	}
	var exists, gone bool
	err := s.db.View(func(tx *bolt.Tx) error {
		if mode == modeRestore {
			gone = tx.Bucket([]byte(bGone)).Get(goneKey(t.Tenant, t.ID)) != nil
		}
		tb, err := tenantBucket(tx, t.Tenant, false)
		if err != nil || tb == nil {
			return err
		}
		exists = tb.Bucket([]byte(bTasks)).Get([]byte(t.ID)) != nil
		if t.IdempotencyKey != "" && owner == "" {
			if v := tb.Bucket([]byte(bKeys)).Get([]byte(t.IdempotencyKey)); v != nil {
				if exp, o := decodeKey(v); now.Before(exp) {
					owner = o
				}
			}
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, fmt.Errorf("boltstore: create: %w", err)
	case exists:
		return nil, fmt.Errorf("%w: %s", tasks.ErrExists, t.ID)
	case gone || (mode == modeRestore && now.Sub(t.Times.Received) > s.opts.TombstoneWindow):
		return nil, fmt.Errorf("%w: %s", tasks.ErrDeleted, t.ID)
	}
	pc := &pendingCreate{}
	var dup *tasks.DuplicateError
	if t.IdempotencyKey != "" && owner != "" && owner != t.ID {
		if mode == modeCreate {
			tasks.MarkDuplicate(t, owner, now)
			dup = &tasks.DuplicateError{Original: owner, Duplicate: t.ID}
		}
	} else if t.IdempotencyKey != "" {
		pc.exp = now.Add(s.opts.KeyWindow(t))
		if mode == modeRestore {
			pc.exp = t.Times.Received.Add(s.opts.KeyWindow(t))
		}
		pc.holdsKey = now.Before(pc.exp)
	}
	pc.t = t.Clone()
	if wait {
		pc.done = make(chan error, 1)
	}
	p.byID[idKey] = pc
	if pc.holdsKey {
		p.keys[keyKey] = pc
	}
	p.queue = append(p.queue, pc)
	queued = true
	select {
	case p.kick <- struct{}{}:
	default:
	}
	if dup != nil {
		return pc, dup
	}
	return pc, nil
}

// writeCreate writes an admitted create in the writer's transaction. Only
// a storage failure fails it (which fails the transaction).
func writeCreate(tx *bolt.Tx, pc *pendingCreate) error {
	t := pc.t
	tb, err := tenantBucket(tx, t.Tenant, true)
	if err != nil {
		return err
	}
	if tb.Bucket([]byte(bTasks)).Get([]byte(t.ID)) != nil {
		return nil // admit checked; nothing can have written it since
	}
	if pc.holdsKey {
		keys := tb.Bucket([]byte(bKeys))
		if v := keys.Get([]byte(t.IdempotencyKey)); v != nil {
			// An expired key (admit found no live holder): replace it.
			exp, _ := decodeKey(v)
			if err := tx.Bucket([]byte(bKeyExp)).Delete(keyExpKey(exp, t.Tenant, t.IdempotencyKey)); err != nil {
				return err
			}
		}
		if err := keys.Put([]byte(t.IdempotencyKey), encodeKey(pc.exp, t.ID)); err != nil {
			return err
		}
		if err := tx.Bucket([]byte(bKeyExp)).Put(keyExpKey(pc.exp, t.Tenant, t.IdempotencyKey), nil); err != nil {
			return err
		}
	}
	return put(tb, nil, t)
}

// CreateDeferred implements tasks.DeferredCreator.
func (s *Store) CreateDeferred(ctx context.Context, t *tasks.Task) error {
	_, err := s.admit(ctx, t, modeCreate, false)
	return err
}

// Restore implements tasks.DeferredCreator.
func (s *Store) Restore(ctx context.Context, t *tasks.Task) error {
	pc, err := s.admit(ctx, t, modeRestore, true)
	if err != nil {
		return fmt.Errorf("boltstore: restore: %w", err)
	}
	if err := <-pc.done; err != nil {
		return fmt.Errorf("boltstore: restore: %w", err)
	}
	return nil
}

// mergePending adds the pending tasks (taken before page was read from
// bbolt) to a page, keeping it sorted newest first and at most limit long.
func mergePending(page []*tasks.Task, more bool, pend []*tasks.Task, cq tasks.CheckedQuery) ([]*tasks.Task, bool) {
	if len(pend) == 0 {
		return page, more
	}
	seen := make(map[string]bool, len(page))
	for _, t := range page {
		seen[t.ID] = true
	}
	var upper []byte
	if cq.After != nil {
		upper = recvKey(cq.After.Received, cq.After.ID)
	}
	for _, t := range pend {
		if seen[t.ID] || (upper != nil && bytes.Compare(recvKey(t.Times.Received, t.ID), upper) >= 0) {
			continue // committed meanwhile (the page has it), or on an earlier page
		}
		page = append(page, t)
	}
	slices.SortFunc(page, func(a, b *tasks.Task) int {
		return bytes.Compare(recvKey(b.Times.Received, b.ID), recvKey(a.Times.Received, a.ID))
	})
	if len(page) > cq.Limit {
		return page[:cq.Limit], true
	}
	return page, more
}

// tombstone records that t was deleted, until exp, so that Restore does
// not bring it back from a message still queued.
func tombstone(tx *bolt.Tx, t *tasks.Task, exp time.Time) error {
	if err := tx.Bucket([]byte(bGone)).Put(goneKey(t.Tenant, t.ID), orderedMicros(exp)); err != nil {
		return err
	}
	return tx.Bucket([]byte(bGoneExp)).Put(keyExpKey(exp, t.Tenant, t.ID), nil)
}

// purgeTombstones deletes up to sweepBatch expired tombstones.
func purgeTombstones(tx *bolt.Tx, now time.Time) (int, error) {
	n := 0
	c := tx.Bucket([]byte(bGoneExp)).Cursor()
	gone := tx.Bucket([]byte(bGone))
	for k, _ := c.First(); k != nil && n < sweepBatch; k, _ = c.First() {
		exp, tenant, id := decodeKeyExp(k)
		if now.Before(exp) {
			break
		}
		if err := c.Delete(); err != nil {
			return n, err
		}
		if err := gone.Delete(goneKey(tenant, id)); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func goneKey(tenant, id string) []byte {
	b := make([]byte, 0, 2+len(tenant)+len(id))
	b = append(b, byte(len(tenant)>>8), byte(len(tenant)))
	return append(append(b, tenant...), id...)
}
