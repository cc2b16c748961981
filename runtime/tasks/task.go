// Package tasks tracks every asynchronous invocation ("task") through its
// life: the state machine (one table, Edge), per-stage timestamps, and the
// Store contract that the invoke API, the dispatcher and the admin API call.
//
// Implementations: runtime/tasks/boltstore (embedded, the default, one
// process per data directory) and runtime/tasks/pgstore (PostgreSQL, shared
// by several Sluice instances). Both pass runtime/tasks/storetest.
//
// Ownership: the state machine and the effects of each transition (which
// timestamps are set, how the attempt counters move) live here, in Advance,
// so every store behaves the same; stores own durability, atomicity,
// indexing and idempotency keys. See docs/tasks.md.
package tasks

import (
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// State is where a task is in its life. The zero value is not a state.
type State string

// The states. See Edge for the legal moves between them.
const (
	// Queued: accepted and durably queued, waiting for a dispatcher.
	Queued State = "queued"
	// Running: a dispatcher took it; one attempt is (or is about to be) in flight.
	Running State = "running"
	// Retrying: the last attempt failed retryably; another is scheduled.
	Retrying State = "retrying"
	// Succeeded: the function returned 2xx (and results were routed). Final.
	Succeeded State = "succeeded"
	// Failed: a permanent failure or the retry budget is spent. The
	// dispatcher moves it to DeadLettered once the dead letter is written.
	Failed State = "failed"
	// DeadLettered: the dead letter was written to its route.
	DeadLettered State = "dead-lettered"
	// Paused: its function is paused; it waits for resume.
	Paused State = "paused"
	// Cancelled: a tenant cancelled it; it will not run (again) and its
	// result, if an in-flight attempt still returns one, is dropped.
	Cancelled State = "cancelled"
	// Expired: it waited longer than the function's maximum event age.
	Expired State = "expired"
	// Duplicate: an idempotency-key hit, recorded by Create and pointing at
	// the original task (Task.DuplicateOf). Final; never run.
	Duplicate State = "duplicate"
)

// States returns every state, in the order of the list above.
func States() []State {
	return []State{Queued, Running, Retrying, Succeeded, Failed, DeadLettered, Paused, Cancelled, Expired, Duplicate}
}

// Valid reports whether s is one of States.
func (s State) Valid() bool { return slices.Contains(States(), s) }

// Done reports whether no attempt of the task is in flight or scheduled:
// nothing but an operator (retry, delete) or the dispatcher's dead-letter
// step (Failed → DeadLettered) moves it again. Only done tasks can be deleted.
func (s State) Done() bool {
	switch s {
	case Succeeded, Failed, DeadLettered, Cancelled, Expired, Duplicate:
		return true
	}
	return false
}

// ParseState parses a state name as written by State.String.
func ParseState(s string) (State, error) {
	st := State(s)
	if !st.Valid() {
		return "", fmt.Errorf("%w: unknown task state %q", ErrInvalid, s)
	}
	return st, nil
}

func (s State) String() string { return string(s) }

// Timestamps are the per-stage times of a task, in UTC with microsecond
// precision (what PostgreSQL keeps). A nil stamp means the stage was not
// reached (in the current run: a retry clears the later stages).
type Timestamps struct {
	// Received: the invoke API accepted the request (Create). Never changes.
	Received time.Time `json:"received"`
	// Queued: the task was last put in the queue (Create, resume, retry).
	Queued *time.Time `json:"queued,omitempty"`
	// Dispatched: a dispatcher took the task for its latest attempt.
	Dispatched *time.Time `json:"dispatched,omitempty"`
	// Started: the latest attempt's function call began.
	Started *time.Time `json:"started,omitempty"`
	// Finished: the task reached Succeeded, Failed, Cancelled, Expired or Duplicate.
	Finished *time.Time `json:"finished,omitempty"`
	// Delivered: the result (Succeeded, set by the dispatcher) or the dead
	// letter (DeadLettered, set by the store) was written to its route.
	Delivered *time.Time `json:"delivered,omitempty"`
}

// Task is one invocation's record. Stores return fresh copies: callers may
// modify what they get.
type Task struct {
	// ID is unique within the tenant; Create generates a UUIDv7 when empty.
	ID string `json:"id"`
	// Tenant owns the task. Every store operation is scoped by tenant.
	Tenant string `json:"tenant"`
	// Function (or pipeline) the task invokes.
	Function string `json:"function"`
	State    State  `json:"state"`
	// Attempts counts entries into Running in the current run; a retry
	// (OpRetry) starts a new run and resets it, so it is what a retry budget
	// compares against. Owned by the store.
	Attempts int `json:"attempts"`
	// Retries counts operator retries (OpRetry) over the task's life. Owned by the store.
	Retries int `json:"retries,omitempty"`
	// IdempotencyKey dedups creates within the dedup window (empty: no dedup).
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
	// DedupWindow is an input to Create only: how long the key is held
	// from this Create (the function's own window); 0 means the store's
	// Options.DedupWindow. Stores keep the key's expiry, not this field:
	// tasks read back have 0.
	DedupWindow time.Duration `json:"-"`
	// DuplicateOf is the original task's ID when State is Duplicate.
	DuplicateOf string `json:"duplicateOf,omitempty"`
	// Event is the invocation's event (structured CloudEvent JSON), kept so
	// a retry can re-queue it.
	Event []byte `json:"event,omitempty"`
	// Result is the function's response body of the latest attempt.
	Result []byte `json:"result,omitempty"`
	// Error describes the latest attempt's failure.
	Error string `json:"error,omitempty"`
	// LastStatus is the latest attempt's HTTP status (0: none).
	LastStatus int               `json:"lastStatus,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Times      Timestamps        `json:"times"`
	// Version increases by one with every write; 1 after Create.
	Version int64 `json:"version"`
}

// Clone returns a deep copy of t.
func (t *Task) Clone() *Task {
	c := *t
	c.Event = slices.Clone(t.Event)
	c.Result = slices.Clone(t.Result)
	c.Labels = maps.Clone(t.Labels)
	c.Times = Timestamps{
		Received:   t.Times.Received,
		Queued:     cloneTime(t.Times.Queued),
		Dispatched: cloneTime(t.Times.Dispatched),
		Started:    cloneTime(t.Times.Started),
		Finished:   cloneTime(t.Times.Finished),
		Delivered:  cloneTime(t.Times.Delivered),
	}
	return &c
}

func cloneTime(p *time.Time) *time.Time {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// Limits on identifiers, so every store can index them.
const (
	MaxNameLen = 256  // ID, Tenant, Function
	MaxKeyLen  = 1024 // IdempotencyKey
)

// NewID returns a new task id: a UUIDv7, so ids sort roughly by creation time.
func NewID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("tasks: new id: %w", err)
	}
	return id.String(), nil
}

// Norm truncates t to the stores' precision (microseconds) in UTC.
func Norm(t time.Time) time.Time { return t.Round(0).Truncate(time.Microsecond).UTC() }

func at(t time.Time) *time.Time {
	v := Norm(t)
	return &v
}

// CheckName validates an ID, Tenant or Function value (what says which in errors).
func CheckName(what, v string) error {
	switch {
	case v == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	case len(v) > MaxNameLen:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalid, what, MaxNameLen)
	case !utf8.ValidString(v):
		return fmt.Errorf("%w: %s is not UTF-8", ErrInvalid, what)
	}
	return nil
}

// Prepare validates a task for Store.Create and fills in what Create
// defaults, at the store's time now: ID (if empty), State (Queued if empty;
// only Queued and Paused are accepted), Received (if zero), Queued, Version 1.
// It clears the store-owned fields (Attempts, Retries, DuplicateOf, the later
// stamps). Stores call it first thing in Create.
func Prepare(t *Task, now time.Time) error {
	if t == nil {
		return fmt.Errorf("%w: nil task", ErrInvalid)
	}
	if t.ID == "" {
		id, err := NewID()
		if err != nil {
			return err
		}
		t.ID = id
	}
	for _, f := range []struct{ what, v string }{{"id", t.ID}, {"tenant", t.Tenant}, {"function", t.Function}} {
		if err := CheckName(f.what, f.v); err != nil {
			return err
		}
	}
	if len(t.IdempotencyKey) > MaxKeyLen || !utf8.ValidString(t.IdempotencyKey) {
		return fmt.Errorf("%w: idempotency key longer than %d bytes or not UTF-8", ErrInvalid, MaxKeyLen)
	}
	if t.DedupWindow < 0 {
		return fmt.Errorf("%w: negative dedup window %s", ErrInvalid, t.DedupWindow)
	}
	switch t.State {
	case "":
		t.State = Queued
	case Queued, Paused:
	default:
		return fmt.Errorf("%w: a task is created queued or paused, not %s", ErrInvalid, t.State)
	}
	if t.Times.Received.IsZero() {
		t.Times.Received = now
	}
	t.Times.Received = Norm(t.Times.Received)
	// A paused task is in the queue too: it is held, not lost.
	t.Times = Timestamps{Received: t.Times.Received, Queued: at(now)}
	t.Attempts, t.Retries, t.DuplicateOf, t.Version = 0, 0, "", 1
	return nil
}

// MarkDuplicate turns a prepared task into the record of an idempotency-key
// hit on original, at time now. Stores call it from Create.
func MarkDuplicate(t *Task, original string, now time.Time) {
	t.State = Duplicate
	t.DuplicateOf = original
	t.Times.Queued = nil
	t.Times.Finished = at(now)
}
