package tasks

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// Store keeps task records. Implementations are safe for concurrent use by
// many goroutines (and, for shared stores such as pgstore, by many Sluice
// instances). Every method takes the tenant and never touches another
// tenant's tasks: a task of another tenant is reported as ErrNotFound,
// never as forbidden, so ids do not leak across tenants.
//
// Errors callers branch on (with errors.Is / errors.As):
//
//	ErrNotFound           no such task for this tenant
//	ErrInvalidTransition  *TransitionError: the state machine forbids the move
//	ErrDuplicate          *DuplicateError: Create hit a live idempotency key
//	ErrExists             Create: the tenant already has a task with this ID
//	ErrNotDone            Delete: the task is not done (cancel it first)
//	ErrInvalid            a bad argument (missing tenant, unknown state, bad cursor)
//	ErrClosed             the store was closed
//	ErrDeleted            DeferredCreator.Restore: the task was deleted
//
// Anything else is a storage failure; the operation may or may not have
// been applied (for a shared database, the commit outcome can be unknown).
type Store interface {
	// Create records a new task (see Prepare for the defaults it fills in
	// t: ID, State, Received, Queued, Version). If t.IdempotencyKey is set
	// and the tenant created a task with the same key within the dedup
	// window, Create records t as a Duplicate of that task (t is updated to
	// that record) and returns a *DuplicateError naming both; the key stays
	// with the original. A key is held from the original's Create for the
	// original's window (Options.KeyWindow), or until the original is
	// deleted.
	Create(ctx context.Context, t *Task) error

	// Get returns the tenant's task id, or ErrNotFound.
	Get(ctx context.Context, tenant, id string) (*Task, error)

	// Transition atomically moves the tenant's task id to state to: the move
	// is checked against the current state (Edge) and written only if the
	// task did not change meanwhile (compare-and-set on Version), so of
	// several concurrent callers moving the same task queued → running,
	// exactly one succeeds and the others get a *TransitionError with From
	// Running. Effects and mutate are as in Advance. Returns the new record.
	Transition(ctx context.Context, tenant, id string, to State, mutate func(*Task) error) (*Task, error)

	// List returns the tenant's tasks matching q, newest first (by
	// Received, then ID descending). Pages are keyset-paginated: following
	// Page.Next never repeats or skips a task that existed when the first
	// page was read, whatever is inserted meanwhile.
	List(ctx context.Context, q Query) (Page, error)

	// Delete removes a done task (State.Done) and releases its idempotency
	// key; ErrNotDone for a task that is still queued, running, retrying or
	// paused.
	Delete(ctx context.Context, tenant, id string) error

	// Batch applies op to every task matching q (q.Cursor and q.Limit are
	// ignored) whose state op applies to (Op.AppliesTo); tasks in other
	// states are left alone. Each task moves atomically, with the same
	// effects as Transition; the batch as a whole is atomic in both stores
	// here. Returns how many tasks it changed.
	Batch(ctx context.Context, q Query, op Op) (int, error)

	// CountByState returns the tenant's number of tasks in each state;
	// states with no task are absent (read them as 0).
	CountByState(ctx context.Context, tenant string) (map[State]int, error)

	// SetPaused records whether the tenant's function is paused. The flag
	// lives in the store so that every Sluice instance sharing it (pgstore)
	// sees the same one, and so that it outlives restarts. It moves no
	// task: pausing a function's tasks is Batch with OpPause / OpResume.
	SetPaused(ctx context.Context, tenant, function string, paused bool) error

	// PausedFunctions returns the names of the tenant's paused functions,
	// sorted.
	PausedFunctions(ctx context.Context, tenant string) ([]string, error)

	// Close stops the store's background work and releases it. Calls after
	// Close return ErrClosed. Close is idempotent.
	Close() error
}

// DeferredCreator is implemented by stores that can accept a task before
// its record is durable (boltstore): the invoke API then answers once the
// task's queue message is stored, and the record is written (and synced)
// by the store's writer after the answer, off the request's path. The
// queue message is what makes that safe: it carries everything Restore
// needs to rebuild a record a crash lost (docs/async.md, "What accepted
// guarantees").
//
// Ordering and visibility: once CreateDeferred returned, the task is
// visible to Get, List and CountByState (served from the pending writes
// until the record is committed), its idempotency key is held against
// every later create, and every write that starts afterwards (Transition,
// Delete, Batch) runs after the record's write, so it finds the task.
type DeferredCreator interface {
	// CreateDeferred does what Create does, with Create's errors, but
	// returns before t's record (or, for an idempotency hit, the Duplicate
	// record) is durable. A storage failure while writing it later is
	// logged and undoes the task (it is no longer found): the caller's
	// Restore brings it back. A process crash before the write does the
	// same.
	CreateDeferred(ctx context.Context, t *Task) error

	// Restore writes back the record of a task whose deferred create was
	// lost, from what the caller kept of it: ID, Tenant, Function, Event,
	// IdempotencyKey, DedupWindow, Labels, Times.Received and Times.Queued
	// (State is set to Queued). It returns once the record is durable. The
	// key is taken back unless another live task holds it (then the task
	// is restored without it). Errors: ErrExists if the task exists (it
	// was never lost); ErrDeleted if it was deleted since (a tombstone),
	// or if it was received longer ago than the store keeps tombstones
	// (Options.TombstoneWindow), when a deletion can no longer be told
	// from a loss.
	Restore(ctx context.Context, t *Task) error
}

// Errors; see Store.
var (
	ErrNotFound          = errors.New("tasks: task not found")
	ErrInvalidTransition = errors.New("tasks: invalid state transition")
	ErrDuplicate         = errors.New("tasks: duplicate idempotency key")
	ErrExists            = errors.New("tasks: task id already exists")
	ErrNotDone           = errors.New("tasks: task is not done")
	ErrInvalid           = errors.New("tasks: invalid argument")
	ErrClosed            = errors.New("tasks: store closed")
	ErrDeleted           = errors.New("tasks: task was deleted")
)

// TransitionError is an illegal move; errors.Is(err, ErrInvalidTransition).
// From is the state the task was really in, which tells a dispatcher whose
// task was cancelled under it (From == Cancelled) to drop the result.
type TransitionError struct {
	ID       string
	From, To State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("tasks: task %s cannot move from %s to %s", e.ID, e.From, e.To)
}

// Is makes errors.Is(err, ErrInvalidTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrInvalidTransition }

// DuplicateError is an idempotency-key hit; errors.Is(err, ErrDuplicate).
type DuplicateError struct {
	// Original is the id of the task that holds the key: the one to report
	// to the client (the invoke API replies 202 with it).
	Original string
	// Duplicate is the id of the Duplicate record Create wrote.
	Duplicate string
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("tasks: duplicate of task %s (recorded as %s)", e.Original, e.Duplicate)
}

// Is makes errors.Is(err, ErrDuplicate) true.
func (e *DuplicateError) Is(target error) bool { return target == ErrDuplicate }

// Query selects a tenant's tasks for List and Batch. Zero fields do not filter.
type Query struct {
	Tenant   string  // required
	Function string  // only this function's tasks
	States   []State // only tasks in one of these states
	// ReceivedAfter and ReceivedBefore bound Received: After ≤ Received < Before.
	ReceivedAfter, ReceivedBefore time.Time
	// Limit is List's page size: 0 means DefaultLimit; at most MaxLimit.
	Limit int
	// Cursor is Page.Next of the previous page ("" for the first page).
	Cursor string
}

// Page sizes.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Page is one page of List.
type Page struct {
	Tasks []*Task
	// Next is the cursor of the next page; "" when this is the last one.
	Next string
}

// Cursor is the decoded position after the last task of a page.
type Cursor struct {
	Received time.Time
	ID       string
}

// Encode returns the opaque form given to clients.
func (c Cursor) Encode() string {
	b := binary.BigEndian.AppendUint64(nil, uint64(c.Received.UnixMicro()))
	return base64.RawURLEncoding.EncodeToString(append(b, c.ID...))
}

// CursorAfter is the cursor that continues a listing after t.
func CursorAfter(t *Task) string { return Cursor{Received: t.Times.Received, ID: t.ID}.Encode() }

// CheckedQuery is a validated Query with its cursor decoded; stores build
// their scans from it.
type CheckedQuery struct {
	Query
	After *Cursor // nil on the first page
}

// Check validates q: tenant present, states known, limit in range (0 →
// DefaultLimit), cursor decodable. Errors wrap ErrInvalid.
func (q Query) Check() (CheckedQuery, error) {
	if err := CheckName("tenant", q.Tenant); err != nil {
		return CheckedQuery{}, err
	}
	for _, s := range q.States {
		if !s.Valid() {
			return CheckedQuery{}, fmt.Errorf("%w: unknown task state %q", ErrInvalid, s)
		}
	}
	switch {
	case q.Limit == 0:
		q.Limit = DefaultLimit
	case q.Limit < 0 || q.Limit > MaxLimit:
		return CheckedQuery{}, fmt.Errorf("%w: limit %d not in 1..%d", ErrInvalid, q.Limit, MaxLimit)
	}
	if !q.ReceivedAfter.IsZero() {
		q.ReceivedAfter = Norm(q.ReceivedAfter)
	}
	if !q.ReceivedBefore.IsZero() {
		q.ReceivedBefore = Norm(q.ReceivedBefore)
	}
	cq := CheckedQuery{Query: q}
	if q.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		if err != nil || len(b) < 9 {
			return CheckedQuery{}, fmt.Errorf("%w: malformed cursor", ErrInvalid)
		}
		cq.After = &Cursor{Received: time.UnixMicro(int64(binary.BigEndian.Uint64(b))).UTC(), ID: string(b[8:])}
	}
	return cq, nil
}

// Match reports whether t passes q's filters (not the cursor).
func (q CheckedQuery) Match(t *Task) bool {
	if t.Tenant != q.Tenant || (q.Function != "" && t.Function != q.Function) {
		return false
	}
	if len(q.States) > 0 && !slices.Contains(q.States, t.State) {
		return false
	}
	r := t.Times.Received
	if !q.ReceivedAfter.IsZero() && r.Before(q.ReceivedAfter) {
		return false
	}
	return q.ReceivedBefore.IsZero() || r.Before(q.ReceivedBefore)
}

// Options are the settings every store takes.
type Options struct {
	// Now is the store's clock (default time.Now); tests inject a fake one.
	Now func() time.Time
	// DedupWindow is how long an idempotency key is held when the
	// creating task names no window of its own (Task.DedupWindow; default 24h).
	DedupWindow time.Duration
	// SweepInterval is how often the store purges expired idempotency keys
	// in the background (default 1m). Expired keys are ignored by Create
	// either way; the sweep only reclaims space.
	SweepInterval time.Duration
	// TombstoneWindow is how long a store that restores tasks
	// (DeferredCreator) remembers a deleted task's id, so that its
	// message, still queued, does not bring it back (default 7 days).
	TombstoneWindow time.Duration
	// Logger receives background failures (a failed sweep); default slog.Default().
	Logger *slog.Logger
}

// KeyWindow is how long Create holds t's idempotency key: t's own
// DedupWindow, else the store's.
func (o Options) KeyWindow(t *Task) time.Duration {
	if t.DedupWindow > 0 {
		return t.DedupWindow
	}
	return o.DedupWindow
}

// Defaults for Options.
const (
	DefaultDedupWindow     = 24 * time.Hour
	DefaultSweepInterval   = time.Minute
	DefaultTombstoneWindow = 7 * 24 * time.Hour
)

// WithDefaults returns o with zero fields set to their defaults.
func (o Options) WithDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DedupWindow <= 0 {
		o.DedupWindow = DefaultDedupWindow
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.TombstoneWindow <= 0 {
		o.TombstoneWindow = DefaultTombstoneWindow
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Sweeper runs a store's periodic purge of expired idempotency keys on one
// goroutine, owned by the store: StartSweeper starts it, Stop (from the
// store's Close) cancels a purge in progress and waits for the goroutine.
type Sweeper struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// StartSweeper calls purge every interval until Stop.
func StartSweeper(interval time.Duration, purge func(ctx context.Context)) *Sweeper {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sweeper{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				purge(ctx)
			}
		}
	}()
	return s
}

// Stop stops the sweeper and waits for it. Call it once.
func (s *Sweeper) Stop() {
	s.cancel()
	<-s.done
}
