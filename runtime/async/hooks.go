package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/invoke"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/retry"
	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tenancy"
)

// Causes of an attempt's context being cancelled (besides engine.ErrSkip,
// which finishes the event without routing anything).
var (
	// errPaused: the task's function was paused; the message goes back to
	// the queue and returns after Config.PausedRedelivery.
	errPaused = errors.New("function paused")
	// errFenced: another dispatcher took the task over (its version moved
	// under this attempt); this attempt's outcome is dropped.
	errFenced = errors.New("task taken over by another dispatcher")
	// errExpired aborts the move to running of a task older than its
	// function's maxEventAge.
	errExpired = errors.New("task expired")
	// errNotRecorded: the task store refused a write an attempt needs
	// before calling the function; the message goes back to the queue.
	errNotRecorded = errors.New("task state not recorded")
)

// storeRetryDelay is how long a message waits before it is tried again
// when the task store failed while claiming its task.
const storeRetryDelay = time.Second

// taskKey identifies a task: ids are unique per tenant.
type taskKey struct{ tenant, id string }

// attempt is one dispatch of a task by this process: from Admit (the
// queue message is claimed) to Finished. Fields after mu change as the
// task moves; version fences every write against a takeover.
type attempt struct {
	key        taskKey
	fn         *function
	msg        *connectors.Message
	dispatched time.Time
	origin     *origin // the message's ExtTask, for restore (nil: none)

	mu       sync.Mutex
	claimed  bool        // the task was moved to running by this attempt
	state    tasks.State // as last written by this attempt
	version  int64       // the task's version after that write
	cancel   context.CancelCauseFunc
	release  func() // the worker from the gate
	lastErr  string
	lastCode int
}

type attemptCtxKey struct{}

func attemptFrom(ctx context.Context) *attempt {
	a, _ := ctx.Value(attemptCtxKey{}).(*attempt)
	return a
}

// inflight indexes the attempts of this process: by task (one attempt per
// task at a time, so a duplicate message of a task being run here is
// skipped, and cancel reaches the attempt) and by message (the engine's
// hooks identify events by message). Safe for concurrent use.
type inflight struct {
	mu     sync.Mutex
	byTask map[taskKey]*attempt
	byMsg  map[*connectors.Message]*attempt
}

func newInflight() *inflight {
	return &inflight{byTask: map[taskKey]*attempt{}, byMsg: map[*connectors.Message]*attempt{}}
}

// add registers a by message, and by task unless another attempt of the
// same task is registered (then it reports false: a duplicate message).
func (f *inflight) add(a *attempt) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byMsg[a.msg] = a
	if _, dup := f.byTask[a.key]; dup {
		return false
	}
	f.byTask[a.key] = a
	return true
}

func (f *inflight) ofMsg(m *connectors.Message) *attempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byMsg[m]
}

func (f *inflight) ofTask(k taskKey) *attempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byTask[k]
}

func (f *inflight) remove(a *attempt) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.byMsg, a.msg)
	if f.byTask[a.key] == a {
		delete(f.byTask, a.key)
	}
}

// ofFunction lists the attempts of one function.
func (f *inflight) ofFunction(k fnKey) []*attempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*attempt
	for _, a := range f.byTask {
		if a.fn.key == k {
			out = append(out, a)
		}
	}
	return out
}

// cancelAttempt cancels the attempt of a task running here, if any, with
// cause (engine.ErrSkip for a cancelled task, errPaused for a paused one).
func (s *Service) cancelAttempt(k taskKey, cause error) {
	if a := s.inflight.ofTask(k); a != nil {
		a.mu.Lock()
		cancel := a.cancel
		a.mu.Unlock()
		if cancel != nil {
			cancel(cause)
		}
	}
}

// Message ids: a task's first run is published with its id; an operator
// retry starts a new run, published as "<id>~r<n>", so that the queue's
// duplicate window does not swallow it.
func msgIDOf(t *tasks.Task) string {
	if t.Retries == 0 {
		return t.ID
	}
	return fmt.Sprintf("%s~r%d", t.ID, t.Retries)
}

func taskIDOf(msgID string) string {
	id, _, _ := strings.Cut(msgID, "~")
	return id
}

// hooks implement engine.Hooks for one function's pipeline: they move the
// task through the state machine as the engine processes its message.
type hooks struct {
	s  *Service
	fn *function
}

var _ engine.Hooks = (*hooks)(nil)

// Admit claims the task of msg: it waits for a worker (fair share), then
// moves the task to running. A task whose record a deferred create lost
// is first restored from the message (restore). Skipped (acknowledged
// without invoking): a task that is unknown (deleted), done, or being run
// by this process
// already (a duplicate message). A paused task's message goes back to the
// queue for Config.PausedRedelivery. A task found running or retrying that
// this process does not run was orphaned by a dispatcher that stopped
// (the queue redelivered its message): it is taken over, as a new attempt.
func (h *hooks) Admit(ctx context.Context, msg *connectors.Message) (context.Context, error) {
	s := h.s
	a := &attempt{key: taskKey{h.fn.key.tenant, taskIDOf(msg.Coordinates.ID)}, fn: h.fn, msg: msg, dispatched: msg.ReceivedAt}
	a.takeOrigin()
	if !s.inflight.add(a) || a.key.id == "" {
		return nil, engine.ErrSkip
	}
	release, err := s.gate.acquire(ctx, a.key.tenant)
	if err != nil {
		return nil, err // stopping: the message goes back to the queue
	}
	actx, cancel := context.WithCancelCause(ctx)
	a.mu.Lock()
	a.release, a.cancel = release, cancel
	a.mu.Unlock()
	t, err := h.claim(actx, a)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.claimed, a.state, a.version = true, t.State, t.Version
	a.mu.Unlock()
	// The attempts before this one (a takeover, a resume after a pause)
	// count against the function's retry budget.
	return engine.WithPriorAttempts(context.WithValue(actx, attemptCtxKey{}, a), t.Attempts-1), nil
}

// claim moves the task to running (see Admit). The common case — a queued
// task — is one write; the state a refused move reports decides the rest.
func (h *hooks) claim(ctx context.Context, a *attempt) (*tasks.Task, error) {
	s := h.s
	for range 5 {
		next, err := s.store.Transition(ctx, a.key.tenant, a.key.id, tasks.Running, func(t *tasks.Task) error {
			if h.fn.maxAge > 0 && s.now().Sub(t.Times.Received) > h.fn.maxAge {
				return errExpired
			}
			if !a.dispatched.IsZero() {
				d := tasks.Norm(a.dispatched)
				t.Times.Dispatched = &d
			}
			return nil
		})
		var te *tasks.TransitionError
		switch {
		case err == nil:
			return next, nil
		case errors.Is(err, tasks.ErrNotFound):
			// Deleted, or a deferred record lost (see restore).
			if err = h.restore(ctx, a); errors.Is(err, engine.ErrSkip) {
				return nil, engine.ErrSkip
			}
		case errors.Is(err, errExpired):
			_, err = s.store.Transition(ctx, a.key.tenant, a.key.id, tasks.Expired, func(t *tasks.Task) error {
				t.Error = fmt.Sprintf("older than the function's maxEventAge %s", h.fn.maxAge)
				return nil
			})
			if err == nil {
				return nil, engine.ErrSkip
			}
		case errors.As(err, &te):
			switch te.From {
			case tasks.Running:
				// Not run here (this process would have skipped the
				// duplicate). Take it over once its attempt cannot be
				// running anywhere else (see takeoverAfter).
				_, err = s.store.Transition(ctx, a.key.tenant, a.key.id, tasks.Retrying, func(t *tasks.Task) error {
					if left := h.takeoverAfter(t); left > 0 {
						return &runningElsewhereError{left: left}
					}
					t.Error = "attempt interrupted: the dispatcher running it stopped"
					return nil
				})
				if re := (*runningElsewhereError)(nil); errors.As(err, &re) {
					s.rec.TookOver(a.key.tenant, metrics.TakeoverDeferred)
					return nil, queue.RetryAfter(fmt.Errorf("task %s: %w", a.key.id, err), min(re.left, takeoverRecheck))
				}
				if err == nil {
					s.rec.TookOver(a.key.tenant, metrics.TakeoverTaken)
				}
			case tasks.Paused:
				return nil, queue.RetryAfter(errPaused, s.cfg.PausedRedelivery)
			case tasks.Queued, tasks.Retrying:
				// It moved between the read and the write: look again.
			default:
				return nil, engine.ErrSkip // done: cancelled, succeeded, ...
			}
		}
		if err != nil && !errors.As(err, &te) {
			return nil, queue.RetryAfter(fmt.Errorf("task %s: %w", a.key.id, err), storeRetryDelay)
		}
	}
	return nil, fmt.Errorf("task %s: kept changing while being claimed", a.key.id)
}

// takeoverGrace is added to a function's timeout before another
// instance's running attempt is presumed dead: it covers delivering the
// result to the routes after the call and the instances' clock skew.
// takeoverRecheck bounds how long the message of such a task waits before
// it is looked at again (the task may finish, or its lease run out).
const (
	takeoverGrace   = 30 * time.Second
	takeoverRecheck = 5 * time.Second
)

// takeoverAfter is how long a running task t, found by a dispatcher that
// does not run it, must still be left alone. On a queue only this instance
// reads, nobody else can run it: its dispatcher stopped, take it over now.
// On a shared queue a second copy of its message (a Kafka record published
// twice, a redelivery overtaking a slow call) may reach this instance while
// another one still calls the function: taking it over then would call the
// function twice at once, so it waits until the attempt's call has timed out
// (its function's timeout plus takeoverGrace after it started).
func (h *hooks) takeoverAfter(t *tasks.Task) time.Duration {
	if !h.s.cfg.SharedQueue || t.Times.Started == nil {
		return 0
	}
	timeout := time.Duration(h.fn.spec.Spec.Timeout)
	if timeout <= 0 {
		timeout = pipelines.DefaultFunctionTimeout
	}
	return t.Times.Started.Add(timeout + takeoverGrace).Sub(h.s.now())
}

// runningElsewhereError: a task's attempt may still run on another
// instance; its message comes back after left.
type runningElsewhereError struct{ left time.Duration }

func (e *runningElsewhereError) Error() string {
	return fmt.Sprintf("running on another instance; taken over in %s unless it finishes", e.left.Round(time.Second))
}

// fence refuses a write when the task changed since this attempt's last
// write (another dispatcher took it over).
func (a *attempt) fence(version int64) func(*tasks.Task) error {
	return func(t *tasks.Task) error {
		if t.Version != version {
			return errFenced
		}
		return nil
	}
}

// advance writes one move of this attempt, fenced; on success it records
// the new state and version. A *tasks.TransitionError or errFenced means
// the task was cancelled, paused or taken over meanwhile.
func (h *hooks) advance(ctx context.Context, a *attempt, to tasks.State, mutate func(*tasks.Task) error) (*tasks.Task, error) {
	a.mu.Lock()
	version := a.version
	a.mu.Unlock()
	fence := a.fence(version)
	t, err := h.s.store.Transition(ctx, a.key.tenant, a.key.id, to, func(t *tasks.Task) error {
		if err := fence(t); err != nil {
			return err
		}
		if mutate != nil {
			return mutate(t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.state, a.version = t.State, t.Version
	a.mu.Unlock()
	return t, nil
}

// stopCause is the cancel cause for an attempt whose write was refused:
// paused tasks go back to the queue, everything else is skipped.
func stopCause(err error) error {
	var te *tasks.TransitionError
	if errors.As(err, &te) && te.From == tasks.Paused {
		return errPaused
	}
	return engine.ErrSkip
}

// Attempted records a failed invocation: running → retrying when the engine
// will retry (the next attempt moves it back to running, in Invoke).
func (h *hooks) Attempted(msg *connectors.Message, _ int, v retry.Verdict, retrying bool, _ time.Duration) {
	a := h.s.inflight.ofMsg(msg)
	if a == nil {
		return
	}
	a.mu.Lock()
	a.lastErr, a.lastCode = v.Reason, v.Status
	claimed := a.claimed
	a.mu.Unlock()
	if !claimed || !retrying {
		return
	}
	ctx, cancel := h.s.storeCtx()
	defer cancel()
	_, err := h.advance(ctx, a, tasks.Retrying, func(t *tasks.Task) error {
		t.Error, t.LastStatus = v.Reason, v.Status
		return nil
	})
	if err != nil {
		h.refused(a, "retrying", err, false)
	}
}

// refused handles a write this attempt could not make: cancelled, paused
// or taken over stops the attempt. A storage failure is logged; with
// abort the attempt is abandoned (its message redelivered), otherwise it
// goes on and its next write records the state.
func (h *hooks) refused(a *attempt, what string, err error, abort bool) {
	a.mu.Lock()
	cancel := a.cancel
	a.mu.Unlock()
	var te *tasks.TransitionError
	if errors.As(err, &te) || errors.Is(err, errFenced) {
		cancel(stopCause(err))
		return
	}
	h.s.log.Warn("task state not recorded", "tenant", a.key.tenant, "task", a.key.id, "state", what, "err", err)
	if abort {
		cancel(fmt.Errorf("%w: %w", errNotRecorded, err))
	}
}

// Finished records the task's outcome before its message is acknowledged:
// succeeded (with the result), failed then dead-lettered, failed (no
// dead-letter route: discarded), or — for an attempt interrupted by a stop —
// retrying, so that whoever gets the message next takes it over. A task
// cancelled or taken over meanwhile keeps the state others gave it.
func (h *hooks) Finished(msg *connectors.Message, outcome string, results []cloudevents.Event, reason string) {
	s := h.s
	a := s.inflight.ofMsg(msg)
	if a == nil {
		return
	}
	defer func() {
		a.mu.Lock()
		release, cancel := a.release, a.cancel
		a.mu.Unlock()
		if cancel != nil {
			cancel(nil)
		}
		if release != nil {
			release()
		}
		s.inflight.remove(a)
	}()
	a.mu.Lock()
	claimed, lastErr, lastCode := a.claimed, a.lastErr, a.lastCode
	a.mu.Unlock()
	if !claimed {
		return
	}
	ctx, cancel := s.storeCtx()
	defer cancel()
	var err error
	switch outcome {
	case metrics.OutcomeSucceeded:
		var result []byte
		if len(results) > 0 {
			if result, err = json.Marshal(results[0]); err != nil {
				result = nil
				s.log.Warn("task result not storable", "tenant", a.key.tenant, "task", a.key.id, "err", err)
			}
		}
		routed := len(results) > 0 && len(h.fn.spec.Spec.Results.OnSuccess) > 0
		_, err = h.advance(ctx, a, tasks.Succeeded, func(t *tasks.Task) error {
			t.Result, t.Error, t.LastStatus = result, "", 0
			if routed {
				now := tasks.Norm(s.now())
				t.Times.Delivered = &now
			}
			return nil
		})
		s.observe(a, tenancy.Succeeded)
	case metrics.OutcomeDeadLettered, metrics.OutcomeDiscarded:
		_, err = h.advance(ctx, a, tasks.Failed, func(t *tasks.Task) error {
			t.Error = reason
			if lastCode != 0 {
				t.LastStatus = lastCode
			}
			return nil
		})
		if err == nil && outcome == metrics.OutcomeDeadLettered {
			_, err = h.advance(ctx, a, tasks.DeadLettered, nil)
		}
		s.observe(a, tenancy.Failed)
	case metrics.OutcomeAbandoned:
		a.mu.Lock()
		state := a.state
		a.mu.Unlock()
		if state == tasks.Running {
			_, err = h.advance(ctx, a, tasks.Retrying, func(t *tasks.Task) error {
				t.Error = "attempt interrupted: " + reason
				if lastErr != "" {
					t.Error += " (last failure: " + lastErr + ")"
				}
				return nil
			})
		}
	}
	var te *tasks.TransitionError
	if err != nil && !errors.As(err, &te) && !errors.Is(err, errFenced) {
		s.log.Warn("task outcome not recorded", "tenant", a.key.tenant, "task", a.key.id, "outcome", outcome, "err", err)
	}
}

// taskFunction calls a function for the engine, moving the task back to
// running before each retry (the engine has no hook there). A task
// cancelled or paused during the retry wait is not called again.
type taskFunction struct {
	h    *hooks
	next invoke.Function
}

// Invoke implements invoke.Function.
func (f *taskFunction) Invoke(ctx context.Context, in []cloudevents.Event) (invoke.Result, error) {
	if a := attemptFrom(ctx); a != nil {
		a.mu.Lock()
		state := a.state
		a.mu.Unlock()
		if state == tasks.Retrying {
			sctx, cancel := f.h.s.storeCtx()
			_, err := f.h.advance(sctx, a, tasks.Running, nil)
			cancel()
			if err != nil {
				f.h.refused(a, "running", err, true)
				if ctx.Err() != nil {
					return invoke.Result{}, context.Cause(ctx)
				}
			}
		}
	}
	return f.next.Invoke(ctx, in)
}
