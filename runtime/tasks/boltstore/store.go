// Package boltstore is the embedded task store: one bbolt file (by
// convention <data-dir>/tasks.db) owned by one Sluice process, which holds
// the file's lock while it is open. Every write is part of a bbolt
// transaction that is fsynced before the write returns, so a task Create or
// Transition that returned survives SIGKILL and power loss — except
// CreateDeferred (tasks.DeferredCreator), which returns before its record
// is written and leaves the record's recovery to the caller's Restore
// (deferred.go). bbolt has one writer: concurrent writes are
// group-committed (writer.go), so they share a transaction and its fsync;
// reads run concurrently with them.
//
// Layout (one bucket per tenant, so tenant isolation is structural):
//
//	tenants/<tenant>/tasks/<id>                         → record (JSON)
//	tenants/<tenant>/recv/<received><id>                → ∅  (List by time)
//	tenants/<tenant>/state/<state>/<received><id>       → ∅  (List by state)
//	tenants/<tenant>/fn/<function>/<received><id>       → ∅  (List by function)
//	tenants/<tenant>/keys/<idempotency key>             → <expires><task id>
//	tenants/<tenant>/count/<state>                      → uint64
//	tenants/<tenant>/paused/<function>                  → ∅  (paused functions)
//	keyexp/<expires><len(tenant)><tenant><key>          → ∅  (the key sweep)
//	gone/<len(tenant)><tenant><id>                      → <expires>  (tombstones of deleted tasks)
//	goneexp/<expires><len(tenant)><tenant><id>          → ∅  (their sweep)
//
// <received> and <expires> are 8-byte big-endian microseconds, sign-flipped
// so byte order is time order.
package boltstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/runtime/tasks"
)

// lockTimeout bounds the wait for the file lock: a second process on the
// same data directory fails fast instead of hanging.
const lockTimeout = 2 * time.Second

// sweepBatch bounds the keys one sweep transaction purges, so the sweep
// never holds the writer lock for long.
const sweepBatch = 10000

// Bucket names.
const (
	bTenants = "tenants"
	bKeyExp  = "keyexp"
	bGone    = "gone"
	bGoneExp = "goneexp"
	bTasks   = "tasks"
	bRecv    = "recv"
	bState   = "state"
	bFn      = "fn"
	bKeys    = "keys"
	bCount   = "count"
	bPaused  = "paused"
)

// Store is the bbolt task store. It is safe for concurrent use.
type Store struct {
	db    *bolt.DB
	w     *writer  // every write transaction goes through it
	pend  *pending // creates admitted, not yet committed (deferred.go)
	opts  tasks.Options
	sweep *tasks.Sweeper

	mu     sync.RWMutex // guards closed; held (read) by every operation so Close waits for them
	closed bool
}

var _ tasks.Store = (*Store)(nil)

// Open opens (creating if needed) the store file at path and starts its
// key sweep. The caller owns the store and must Close it.
func Open(path string, o tasks.Options) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// Commit cost bounds the store's throughput. The free page list
		// is rebuilt at open instead of written with every commit (what
		// etcd does); the map form keeps freeing and allocating pages cheap
		// as the file grows. (A large initial mapping, to spare remaps,
		// cost ~30 MiB of RSS in B6 for no measurable gain.)
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s (another process may hold it): %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{bTenants, bKeyExp, bGone, bGoneExp} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("boltstore: init %s: %w", path, err), db.Close())
	}
	opts := o.WithDefaults()
	pend := newPending(opts.Logger)
	s := &Store{db: db, w: startWriter(db, pend), pend: pend, opts: opts}
	s.sweep = tasks.StartSweeper(s.opts.SweepInterval, func(ctx context.Context) {
		if _, err := s.PurgeExpiredKeys(ctx); err != nil && !errors.Is(err, tasks.ErrClosed) && ctx.Err() == nil {
			s.opts.Logger.Warn("tasks: purging expired idempotency keys", "store", path, "err", err)
		}
	})
	return s, nil
}

// Close stops the sweep, waits for running operations and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.sweep.Stop()
	s.w.close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("boltstore: close: %w", err)
	}
	return nil
}

// do runs fn in a read (write=false) or write transaction, unless the
// store is closed or ctx is done.
func (s *Store) do(ctx context.Context, write bool, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return tasks.ErrClosed
	}
	if write {
		return s.w.write(ctx, fn)
	}
	return s.db.View(fn)
}

func (s *Store) now() time.Time { return tasks.Norm(s.opts.Now()) }

// Create implements tasks.Store: the create is admitted like a deferred
// one (deferred.go) and Create waits for its commit. A duplicate is
// returned once its record is durable.
func (s *Store) Create(ctx context.Context, t *tasks.Task) error {
	pc, err := s.admit(ctx, t, modeCreate, true)
	var dup *tasks.DuplicateError
	if err != nil && !errors.As(err, &dup) {
		return fmt.Errorf("boltstore: create: %w", err)
	}
	if cerr := <-pc.done; cerr != nil {
		return fmt.Errorf("boltstore: create: %w", cerr)
	}
	return err
}

var _ tasks.DeferredCreator = (*Store)(nil)

// Get implements tasks.Store.
func (s *Store) Get(ctx context.Context, tenant, id string) (*tasks.Task, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The pending creates first: one committed after this check is in
	// the bbolt read that follows.
	if t := s.pend.lookup(tenant, id); t != nil {
		return t, nil
	}
	var t *tasks.Task
	err := s.do(ctx, false, func(tx *bolt.Tx) error {
		var err error
		t, err = load(tx, tenant, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: get: %w", err)
	}
	return t, nil
}

// Transition implements tasks.Store. Writes are serialized, so reading and
// writing in one transaction is the compare-and-set.
func (s *Store) Transition(ctx context.Context, tenant, id string, to tasks.State, mutate func(*tasks.Task) error) (*tasks.Task, error) {
	var next *tasks.Task
	err := s.do(ctx, true, func(tx *bolt.Tx) error {
		cur, err := load(tx, tenant, id)
		if err != nil {
			return err
		}
		next, err = tasks.Advance(cur, to, s.now(), mutate)
		if err != nil {
			return err
		}
		tb, _ := tenantBucket(tx, tenant, false)
		return put(tb, cur, next)
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: transition: %w", err)
	}
	return next, nil
}

// Delete implements tasks.Store.
func (s *Store) Delete(ctx context.Context, tenant, id string) error {
	err := s.do(ctx, true, func(tx *bolt.Tx) error {
		cur, err := load(tx, tenant, id)
		if err != nil {
			return err
		}
		if !cur.State.Done() {
			return fmt.Errorf("%w: task %s is %s", tasks.ErrNotDone, id, cur.State)
		}
		return remove(tx, cur, s.now().Add(s.opts.TombstoneWindow))
	})
	if err != nil {
		return fmt.Errorf("boltstore: delete: %w", err)
	}
	return nil
}

// List implements tasks.Store.
func (s *Store) List(ctx context.Context, q tasks.Query) (tasks.Page, error) {
	cq, err := q.Check()
	if err != nil {
		return tasks.Page{}, err
	}
	var page tasks.Page
	pend := s.pend.ofTenant(cq) // before the read: see Get
	err = s.do(ctx, false, func(tx *bolt.Tx) error {
		var more bool
		page.Tasks, more, err = scan(tx, cq, cq.Limit)
		page.Tasks, more = mergePending(page.Tasks, more, pend, cq)
		if more {
			page.Next = tasks.CursorAfter(page.Tasks[len(page.Tasks)-1])
		}
		return err
	})
	if err != nil {
		return tasks.Page{}, fmt.Errorf("boltstore: list: %w", err)
	}
	return page, nil
}

// Batch implements tasks.Store, in one write transaction.
func (s *Store) Batch(ctx context.Context, q tasks.Query, op tasks.Op) (int, error) {
	if !op.Batchable() {
		return 0, fmt.Errorf("%w: %q is not a batch operation", tasks.ErrInvalid, op)
	}
	q.Cursor, q.Limit = "", 0
	if len(q.States) == 0 {
		q.States = op.Sources() // lets scan use a state index
	}
	cq, err := q.Check()
	if err != nil {
		return 0, err
	}
	n := 0
	err = s.do(ctx, true, func(tx *bolt.Tx) error {
		n = 0
		matched, _, err := scan(tx, cq, 0)
		if err != nil {
			return err
		}
		now := s.now()
		tb, _ := tenantBucket(tx, q.Tenant, false)
		for _, cur := range matched {
			if !op.AppliesTo(cur.State) {
				continue
			}
			if op == tasks.OpDelete {
				err = remove(tx, cur, now.Add(s.opts.TombstoneWindow))
			} else if next, ok := op.Apply(cur, now); ok {
				err = put(tb, cur, next)
			}
			if err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("boltstore: batch %s: %w", op, err)
	}
	return n, nil
}

// CountByState implements tasks.Store from the per-tenant counters.
func (s *Store) CountByState(ctx context.Context, tenant string) (map[tasks.State]int, error) {
	if err := tasks.CheckName("tenant", tenant); err != nil {
		return nil, err
	}
	out := map[tasks.State]int{}
	pend := s.pend.ofTenant(tasks.CheckedQuery{Query: tasks.Query{Tenant: tenant}}) // before the read: see Get
	err := s.do(ctx, false, func(tx *bolt.Tx) error {
		tb, err := tenantBucket(tx, tenant, false)
		if err != nil {
			return err
		}
		for _, t := range pend {
			if tb == nil || tb.Bucket([]byte(bTasks)).Get([]byte(t.ID)) == nil {
				out[t.State]++ // not committed yet
			}
		}
		if tb == nil {
			return nil
		}
		return tb.Bucket([]byte(bCount)).ForEach(func(k, v []byte) error {
			if n := binary.BigEndian.Uint64(v); n > 0 {
				out[tasks.State(k)] += int(n)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: count: %w", err)
	}
	return out, nil
}

// SetPaused implements tasks.Store.
func (s *Store) SetPaused(ctx context.Context, tenant, function string, paused bool) error {
	for _, f := range []struct{ what, v string }{{"tenant", tenant}, {"function", function}} {
		if err := tasks.CheckName(f.what, f.v); err != nil {
			return err
		}
	}
	err := s.do(ctx, true, func(tx *bolt.Tx) error {
		tb, err := tenantBucket(tx, tenant, true)
		if err != nil {
			return err
		}
		if paused {
			return tb.Bucket([]byte(bPaused)).Put([]byte(function), nil)
		}
		return tb.Bucket([]byte(bPaused)).Delete([]byte(function))
	})
	if err != nil {
		return fmt.Errorf("boltstore: set paused: %w", err)
	}
	return nil
}

// PausedFunctions implements tasks.Store.
func (s *Store) PausedFunctions(ctx context.Context, tenant string) ([]string, error) {
	if err := tasks.CheckName("tenant", tenant); err != nil {
		return nil, err
	}
	var out []string
	err := s.do(ctx, false, func(tx *bolt.Tx) error {
		tb, err := tenantBucket(tx, tenant, false)
		if err != nil || tb == nil {
			return err
		}
		pb := tb.Bucket([]byte(bPaused))
		if pb == nil { // a tenant bucket made before pause flags were kept here
			return nil
		}
		return pb.ForEach(func(k, _ []byte) error {
			out = append(out, string(k)) // keys come sorted
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: paused functions: %w", err)
	}
	return out, nil
}

// PurgeExpiredKeys deletes idempotency keys whose dedup window has passed,
// and tombstones older than Options.TombstoneWindow, and returns how many. The background sweep calls it; Create ignores
// expired keys whether or not they were purged.
func (s *Store) PurgeExpiredKeys(ctx context.Context) (int, error) {
	total := 0
	for {
		n := 0
		err := s.do(ctx, true, func(tx *bolt.Tx) error {
			n = 0
			now := s.now()
			c := tx.Bucket([]byte(bKeyExp)).Cursor()
			for k, _ := c.First(); k != nil && n < sweepBatch; k, _ = c.First() {
				exp, tenant, key := decodeKeyExp(k)
				if now.Before(exp) {
					break
				}
				if err := c.Delete(); err != nil {
					return err
				}
				if tb, err := tenantBucket(tx, tenant, false); err != nil {
					return err
				} else if tb != nil {
					keys := tb.Bucket([]byte(bKeys))
					// The key may have been taken over by a newer task since.
					if v := keys.Get([]byte(key)); v != nil {
						if e, _ := decodeKey(v); !now.Before(e) {
							if err := keys.Delete([]byte(key)); err != nil {
								return err
							}
						}
					}
				}
				n++
			}
			gone, err := purgeTombstones(tx, now)
			n += gone
			return err
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("boltstore: purge keys: %w", err)
		}
		if n < sweepBatch {
			return total, nil
		}
	}
}

// tenantBucket returns the tenant's bucket; nil (and no error) if the tenant
// has no tasks and create is false.
func tenantBucket(tx *bolt.Tx, tenant string, create bool) (*bolt.Bucket, error) {
	root := tx.Bucket([]byte(bTenants))
	if !create {
		return root.Bucket([]byte(tenant)), nil
	}
	tb, err := root.CreateBucketIfNotExists([]byte(tenant))
	if err != nil {
		return nil, err
	}
	for _, name := range []string{bTasks, bRecv, bState, bFn, bKeys, bCount, bPaused} {
		if _, err := tb.CreateBucketIfNotExists([]byte(name)); err != nil {
			return nil, err
		}
	}
	return tb, nil
}

func load(tx *bolt.Tx, tenant, id string) (*tasks.Task, error) {
	tb, err := tenantBucket(tx, tenant, false)
	if err != nil {
		return nil, err
	}
	if tb == nil || id == "" {
		return nil, fmt.Errorf("%w: %s", tasks.ErrNotFound, id)
	}
	v := tb.Bucket([]byte(bTasks)).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("%w: %s", tasks.ErrNotFound, id)
	}
	return decode(tenant, v)
}

// put writes next (replacing cur, nil for a new task) and keeps the
// indexes and counters in step. Received and Function never change.
func put(tb *bolt.Bucket, cur, next *tasks.Task) error {
	if err := tb.Bucket([]byte(bTasks)).Put([]byte(next.ID), encode(next)); err != nil {
		return err
	}
	rk := recvKey(next.Times.Received, next.ID)
	if cur == nil {
		if err := tb.Bucket([]byte(bRecv)).Put(rk, nil); err != nil {
			return err
		}
		fb, err := tb.Bucket([]byte(bFn)).CreateBucketIfNotExists([]byte(next.Function))
		if err != nil {
			return err
		}
		if err := fb.Put(rk, nil); err != nil {
			return err
		}
	}
	if cur != nil && cur.State == next.State {
		return nil
	}
	if cur != nil {
		if err := tb.Bucket([]byte(bState)).Bucket([]byte(cur.State)).Delete(rk); err != nil {
			return err
		}
		if err := count(tb, cur.State, -1); err != nil {
			return err
		}
	}
	sb, err := tb.Bucket([]byte(bState)).CreateBucketIfNotExists([]byte(next.State))
	if err != nil {
		return err
	}
	if err := sb.Put(rk, nil); err != nil {
		return err
	}
	return count(tb, next.State, +1)
}

// remove deletes t with its index entries and, if t holds it, its
// idempotency key, and leaves a tombstone until gone (deferred.go).
func remove(tx *bolt.Tx, t *tasks.Task, gone time.Time) error {
	tb, err := tenantBucket(tx, t.Tenant, false)
	if err != nil {
		return err
	}
	if err := tombstone(tx, t, gone); err != nil {
		return err
	}
	rk := recvKey(t.Times.Received, t.ID)
	for _, del := range []struct {
		b *bolt.Bucket
		k []byte
	}{
		{tb.Bucket([]byte(bTasks)), []byte(t.ID)},
		{tb.Bucket([]byte(bRecv)), rk},
		{tb.Bucket([]byte(bFn)).Bucket([]byte(t.Function)), rk},
		{tb.Bucket([]byte(bState)).Bucket([]byte(t.State)), rk},
	} {
		if err := del.b.Delete(del.k); err != nil {
			return err
		}
	}
	if err := count(tb, t.State, -1); err != nil {
		return err
	}
	if t.IdempotencyKey == "" {
		return nil
	}
	keys := tb.Bucket([]byte(bKeys))
	if v := keys.Get([]byte(t.IdempotencyKey)); v != nil {
		if exp, owner := decodeKey(v); owner == t.ID {
			if err := keys.Delete([]byte(t.IdempotencyKey)); err != nil {
				return err
			}
			return tx.Bucket([]byte(bKeyExp)).Delete(keyExpKey(exp, t.Tenant, t.IdempotencyKey))
		}
	}
	return nil
}

func count(tb *bolt.Bucket, st tasks.State, delta int64) error {
	b := tb.Bucket([]byte(bCount))
	var n uint64
	if v := b.Get([]byte(st)); v != nil {
		n = binary.BigEndian.Uint64(v)
	}
	n = uint64(int64(n) + delta)
	return b.Put([]byte(st), binary.BigEndian.AppendUint64(nil, n))
}

// scan walks the best index for cq newest first, from the cursor, and
// returns up to limit matching tasks (all if limit is 0) and whether more
// match.
func scan(tx *bolt.Tx, cq tasks.CheckedQuery, limit int) ([]*tasks.Task, bool, error) {
	tb, err := tenantBucket(tx, cq.Tenant, false)
	if err != nil || tb == nil {
		return nil, false, err
	}
	var idx *bolt.Bucket
	switch {
	case len(cq.States) == 1:
		idx = tb.Bucket([]byte(bState)).Bucket([]byte(cq.States[0]))
	case cq.Function != "":
		idx = tb.Bucket([]byte(bFn)).Bucket([]byte(cq.Function))
	default:
		idx = tb.Bucket([]byte(bRecv))
	}
	if idx == nil {
		return nil, false, nil
	}
	// Keys are <received><id>; walk backwards from the exclusive upper bound.
	var upper []byte
	if cq.After != nil {
		upper = recvKey(cq.After.Received, cq.After.ID)
	}
	if !cq.ReceivedBefore.IsZero() {
		if b := recvKey(cq.ReceivedBefore, ""); upper == nil || string(b) < string(upper) {
			upper = b
		}
	}
	var lower []byte
	if !cq.ReceivedAfter.IsZero() {
		lower = recvKey(cq.ReceivedAfter, "")
	}
	tasksB := tb.Bucket([]byte(bTasks))
	c := idx.Cursor()
	var k []byte
	if upper == nil {
		k, _ = c.Last()
	} else if k, _ = c.Seek(upper); k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	var out []*tasks.Task
	for ; k != nil; k, _ = c.Prev() {
		if lower != nil && string(k) < string(lower) {
			break
		}
		id := k[8:]
		v := tasksB.Get(id)
		if v == nil {
			return nil, false, fmt.Errorf("index entry without task %q", id)
		}
		t, err := decode(cq.Tenant, v)
		if err != nil {
			return nil, false, err
		}
		if !cq.Match(t) {
			continue
		}
		if limit > 0 && len(out) == limit {
			return out, true, nil
		}
		out = append(out, t)
	}
	return out, false, nil
}

// orderedMicros maps a time to 8 bytes whose byte order is time order.
func orderedMicros(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(t.UnixMicro())^(1<<63))
}

func fromOrderedMicros(b []byte) time.Time {
	return time.UnixMicro(int64(binary.BigEndian.Uint64(b) ^ (1 << 63))).UTC()
}

func recvKey(received time.Time, id string) []byte {
	return append(orderedMicros(received), id...)
}

func encodeKey(exp time.Time, owner string) []byte { return append(orderedMicros(exp), owner...) }

func decodeKey(v []byte) (exp time.Time, owner string) {
	return fromOrderedMicros(v[:8]), string(v[8:])
}

func keyExpKey(exp time.Time, tenant, key string) []byte {
	b := orderedMicros(exp)
	b = binary.BigEndian.AppendUint16(b, uint16(len(tenant)))
	b = append(b, tenant...)
	return append(b, key...)
}

func decodeKeyExp(k []byte) (exp time.Time, tenant, key string) {
	n := int(binary.BigEndian.Uint16(k[8:10]))
	return fromOrderedMicros(k[:8]), string(k[10 : 10+n]), string(k[10+n:])
}

// record is the JSON form of a task that records written before the
// binary format (codec.go) have. Times are Unix microseconds.
type record struct {
	ID         string            `json:"id"`
	Function   string            `json:"fn"`
	State      tasks.State       `json:"st"`
	Attempts   int               `json:"at,omitempty"`
	Retries    int               `json:"rt,omitempty"`
	Key        string            `json:"ik,omitempty"`
	DupOf      string            `json:"dup,omitempty"`
	Event      []byte            `json:"ev,omitempty"`
	Result     []byte            `json:"res,omitempty"`
	Error      string            `json:"err,omitempty"`
	LastStatus int               `json:"ls,omitempty"`
	Labels     map[string]string `json:"lb,omitempty"`
	Received   int64             `json:"tr"`
	Queued     *int64            `json:"tq,omitempty"`
	Dispatched *int64            `json:"td,omitempty"`
	Started    *int64            `json:"ts,omitempty"`
	Finished   *int64            `json:"tf,omitempty"`
	Delivered  *int64            `json:"tv,omitempty"`
	Version    int64             `json:"v"`
}

func fromMicros(p *int64) *time.Time {
	if p == nil {
		return nil
	}
	v := time.UnixMicro(*p).UTC()
	return &v
}

func decodeJSON(tenant string, v []byte) (*tasks.Task, error) {
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("corrupt task record: %w", err)
	}
	return &tasks.Task{
		ID: r.ID, Tenant: tenant, Function: r.Function, State: r.State, Attempts: r.Attempts,
		Retries: r.Retries, IdempotencyKey: r.Key, DuplicateOf: r.DupOf, Event: r.Event,
		Result: r.Result, Error: r.Error, LastStatus: r.LastStatus, Labels: r.Labels,
		Times: tasks.Timestamps{
			Received: time.UnixMicro(r.Received).UTC(), Queued: fromMicros(r.Queued),
			Dispatched: fromMicros(r.Dispatched), Started: fromMicros(r.Started),
			Finished: fromMicros(r.Finished), Delivered: fromMicros(r.Delivered),
		},
		Version: r.Version,
	}, nil
}
