package tasks

import (
	"fmt"
	"time"
)

// Op names who or what moves a task along an edge of the state machine, and
// doubles as the name of the batch operations (Store.Batch).
type Op string

const (
	// OpDispatch: the dispatcher's own moves (run, succeed, retry later,
	// fail, dead-letter). Not a batch operation.
	OpDispatch Op = "dispatch"
	// OpCancel: a tenant cancels (queued, running, retrying, paused → cancelled).
	OpCancel Op = "cancel"
	// OpPause: a function is paused (queued, retrying → paused).
	OpPause Op = "pause"
	// OpResume: a function is resumed (paused → queued).
	OpResume Op = "resume"
	// OpRetry: an operator re-runs a done task (failed, dead-lettered,
	// cancelled, expired → queued): a new run with Attempts reset to 0.
	OpRetry Op = "retry"
	// OpExpire: the maximum event age passed (queued, retrying, paused → expired).
	OpExpire Op = "expire"
	// OpDelete: a batch delete of done tasks. Not a transition.
	OpDelete Op = "delete"
)

// Edge is the state machine: it reports whether from → to is legal and, if
// so, which Op drives it. It is the only place the transitions are defined;
// docs/tasks.md draws it (a test keeps the two in sync).
func Edge(from, to State) (Op, bool) {
	switch from {
	case Queued:
		switch to {
		case Running:
			return OpDispatch, true
		case Paused:
			return OpPause, true
		case Cancelled:
			return OpCancel, true
		case Expired:
			return OpExpire, true
		}
	case Running:
		switch to {
		case Succeeded, Retrying, Failed:
			return OpDispatch, true
		case Cancelled:
			return OpCancel, true
		}
	case Retrying:
		switch to {
		case Running:
			return OpDispatch, true
		case Paused:
			return OpPause, true
		case Cancelled:
			return OpCancel, true
		case Expired:
			return OpExpire, true
		}
	case Failed:
		switch to {
		case DeadLettered:
			return OpDispatch, true
		case Queued:
			return OpRetry, true
		}
	case DeadLettered, Cancelled, Expired:
		if to == Queued {
			return OpRetry, true
		}
	case Paused:
		switch to {
		case Queued:
			return OpResume, true
		case Cancelled:
			return OpCancel, true
		case Expired:
			return OpExpire, true
		}
	case Succeeded, Duplicate:
		// Final: a succeeded invocation is re-run by invoking again.
	}
	return "", false
}

// Allowed reports whether from → to is a legal transition.
func Allowed(from, to State) bool {
	_, ok := Edge(from, to)
	return ok
}

// Batchable reports whether op may be passed to Store.Batch.
func (op Op) Batchable() bool {
	switch op {
	case OpCancel, OpPause, OpResume, OpRetry, OpExpire, OpDelete:
		return true
	}
	return false
}

// Target is the state op moves tasks to; false for OpDispatch (several
// targets), OpDelete (none) and unknown ops.
func (op Op) Target() (State, bool) {
	switch op {
	case OpCancel:
		return Cancelled, true
	case OpPause:
		return Paused, true
	case OpResume, OpRetry:
		return Queued, true
	case OpExpire:
		return Expired, true
	}
	return "", false
}

// Sources are the states a batch op applies to: those with an edge to its
// target driven by op (for OpDelete: the done states). Empty for ops that
// are not batchable.
func (op Op) Sources() []State {
	var out []State
	for _, s := range States() {
		if op.AppliesTo(s) {
			out = append(out, s)
		}
	}
	return out
}

// AppliesTo reports whether the batch op acts on a task in state s.
func (op Op) AppliesTo(s State) bool {
	if op == OpDelete {
		return s.Done()
	}
	to, ok := op.Target()
	if !ok {
		return false
	}
	by, ok := Edge(s, to)
	return ok && by == op
}

// Advance returns a copy of cur moved to state to at time now: the
// transition is checked against Edge (*TransitionError if illegal), its
// effects are applied, then mutate (if not nil) may add what the caller knows.
//
// Effects, by target state:
//
//	Running:                      Attempts+1; Dispatched, Started = now; Finished, Delivered = nil
//	Succeeded, Failed, Cancelled, Expired: Finished = now
//	DeadLettered:                 Delivered = now
//	Queued by OpResume:           Queued = now
//	Queued by OpRetry:            a new run: Queued = now; Attempts = 0; Retries+1;
//	                              Dispatched, Started, Finished, Delivered, Result, Error, LastStatus cleared
//
// mutate sees the task with these effects applied and Version still that of
// cur (a caller can fence on it by returning an error). It may set Event,
// Result, Error, LastStatus, Labels and the stamps other than Received (the
// dispatcher sets Delivered on success, and may backdate Dispatched);
// changes to ID, Tenant, Function, State, Attempts, Retries, IdempotencyKey,
// DuplicateOf, Received and Version are discarded. An error from mutate
// aborts the transition and is returned as is. Stores may call mutate more
// than once (compare-and-set retries), so it must not have other effects.
func Advance(cur *Task, to State, now time.Time, mutate func(*Task) error) (*Task, error) {
	by, ok := Edge(cur.State, to)
	if !ok {
		return nil, &TransitionError{ID: cur.ID, From: cur.State, To: to}
	}
	next := cur.Clone()
	next.State = to
	attempts, retries := cur.Attempts, cur.Retries
	ts := &next.Times
	switch to {
	case Running:
		attempts++
		ts.Dispatched, ts.Started, ts.Finished, ts.Delivered = at(now), at(now), nil, nil
	case Succeeded, Failed, Cancelled, Expired:
		ts.Finished = at(now)
	case DeadLettered:
		ts.Delivered = at(now)
	case Queued:
		ts.Queued = at(now)
		if by == OpRetry {
			attempts, retries = 0, retries+1
			ts.Dispatched, ts.Started, ts.Finished, ts.Delivered = nil, nil, nil, nil
			next.Result, next.Error, next.LastStatus = nil, "", 0
		}
	}
	next.Attempts, next.Retries = attempts, retries
	if mutate != nil {
		if err := mutate(next); err != nil {
			return nil, err
		}
	}
	next.ID, next.Tenant, next.Function, next.State = cur.ID, cur.Tenant, cur.Function, to
	next.Attempts, next.Retries = attempts, retries
	next.IdempotencyKey, next.DuplicateOf = cur.IdempotencyKey, cur.DuplicateOf
	next.Version = cur.Version + 1
	ts.Received = cur.Times.Received
	for _, p := range []**time.Time{&ts.Queued, &ts.Dispatched, &ts.Started, &ts.Finished, &ts.Delivered} {
		if *p != nil {
			*p = at(**p)
		}
	}
	return next, nil
}

// Apply returns a copy of cur after the batch op at time now; false if op
// does not apply to cur's state (the task is left alone).
func (op Op) Apply(cur *Task, now time.Time) (*Task, bool) {
	to, ok := op.Target()
	if !ok || !op.AppliesTo(cur.State) {
		return nil, false
	}
	next, err := Advance(cur, to, now, nil)
	return next, err == nil
}

// String returns the op's name.
func (op Op) String() string { return string(op) }

// ParseOp parses a batch op name.
func ParseOp(s string) (Op, error) {
	op := Op(s)
	if !op.Batchable() {
		return "", fmt.Errorf("%w: unknown batch operation %q", ErrInvalid, s)
	}
	return op, nil
}
