package async

import (
	"context"
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/runtime/tasks"
)

// Pausing a function. The flag lives in the task store (tasks.Store
// SetPaused), so it survives restarts and is shared by every instance on
// a shared store; each instance mirrors it in function.paused, which new
// submissions and the queue readers consult. An instance learns of a
// change made elsewhere within Config.PauseSyncInterval (pauseLoop) and
// then pauses or resumes the function's tasks itself, which catches the
// tasks it created with the old flag meanwhile.

// loadPauseFlags sets every function's flag from the store (New).
func (s *Service) loadPauseFlags() error {
	ctx, cancel := s.storeCtx()
	defer cancel()
	for _, tenant := range s.tenants {
		names, err := s.store.PausedFunctions(ctx, tenant)
		if err != nil {
			return fmt.Errorf("async: reading pause flags: %w", err)
		}
		for _, name := range names {
			if fn := s.fns[fnKey{tenant, name}]; fn != nil {
				fn.paused.Store(true)
			}
		}
	}
	return nil
}

// pause stops dispatching a function's tasks: the flag (in the store)
// keeps new and queued messages away from its pipeline, its queued and
// retrying tasks become paused, and attempts waiting to retry here give
// their message back. Attempts in flight finish.
func (s *Service) pause(ctx context.Context, fn *function) (int, error) {
	s.pauseMu.Lock()
	defer s.pauseMu.Unlock()
	if err := s.store.SetPaused(ctx, fn.key.tenant, fn.key.name, true); err != nil {
		return 0, fmt.Errorf("recording the pause: %w", err)
	}
	return s.pauseLocal(ctx, fn)
}

// pauseLocal applies a recorded pause in this instance.
func (s *Service) pauseLocal(ctx context.Context, fn *function) (int, error) {
	fn.paused.Store(true)
	n, err := s.store.Batch(ctx, tasks.Query{Tenant: fn.key.tenant, Function: fn.key.name}, tasks.OpPause)
	if err != nil {
		return 0, err
	}
	for _, a := range s.inflight.ofFunction(fn.key) {
		a.mu.Lock()
		retrying, cancel := a.state == tasks.Retrying, a.cancel
		a.mu.Unlock()
		if retrying && cancel != nil {
			cancel(errPaused)
		}
	}
	return n, nil
}

// resume moves a function's paused tasks back to queued; their messages
// come back from the queue within Config.PausedRedelivery. The flag is
// cleared first, so that a submission racing with resume is either
// created queued or created paused before the batch that resumes it
// (settlePaused covers the one whose Create was already under way).
func (s *Service) resume(ctx context.Context, fn *function) (int, error) {
	s.pauseMu.Lock()
	defer s.pauseMu.Unlock()
	if err := s.store.SetPaused(ctx, fn.key.tenant, fn.key.name, false); err != nil {
		return 0, fmt.Errorf("recording the resume: %w", err)
	}
	return s.resumeLocal(ctx, fn)
}

// resumeLocal applies a recorded resume in this instance.
func (s *Service) resumeLocal(ctx context.Context, fn *function) (int, error) {
	fn.paused.Store(false)
	return s.store.Batch(ctx, tasks.Query{Tenant: fn.key.tenant, Function: fn.key.name}, tasks.OpResume)
}

// settlePaused fixes a task just created under a flag that changed while
// it was being created: created paused after a resume it would wait for
// nothing; created queued after a pause it would be listed queued while
// held. A task moved meanwhile (a racing batch did it) is left alone.
func (s *Service) settlePaused(ctx context.Context, fn *function, t *tasks.Task) {
	to := tasks.Queued
	switch paused := fn.paused.Load(); {
	case t.State == tasks.Paused && !paused:
	case t.State == tasks.Queued && paused:
		to = tasks.Paused
	default:
		return
	}
	// Fenced on the version Create wrote: a task moved since (a batch
	// that already settled it, a cancel) keeps its state; without the
	// fence, resuming a cancelled task would be a retry.
	next, err := s.store.Transition(ctx, t.Tenant, t.ID, to, func(cur *tasks.Task) error {
		if cur.Version != t.Version {
			return errFenced
		}
		return nil
	})
	var te *tasks.TransitionError
	switch {
	case err == nil:
		*t = *next
	case !errors.As(err, &te) && !errors.Is(err, errFenced):
		s.log.Warn("a task created while its function was paused or resumed keeps its state",
			"tenant", t.Tenant, "task", t.ID, "state", t.State, "err", err)
	}
}

// pauseLoop applies the pause flags other instances change in the store.
func (s *Service) pauseLoop(ctx context.Context) {
	every(ctx, s.cfg.PauseSyncInterval, s.syncPauseFlags)
}

// syncPauseFlags reads the flags and applies every change; a failure is
// logged and the next pass tries again (until a change is applied, the
// function keeps its old flag here).
func (s *Service) syncPauseFlags(ctx context.Context) {
	s.pauseMu.Lock()
	defer s.pauseMu.Unlock()
	for _, tenant := range s.tenants {
		names, err := s.store.PausedFunctions(ctx, tenant)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("reading pause flags", "tenant", tenant, "err", err)
			}
			return
		}
		paused := map[string]bool{}
		for _, n := range names {
			paused[n] = true
		}
		for k, fn := range s.fns {
			if k.tenant != tenant || fn.paused.Load() == paused[k.name] {
				continue
			}
			apply, what := s.resumeLocal, "resumed"
			if paused[k.name] {
				apply, what = s.pauseLocal, "paused"
			}
			n, err := apply(ctx, fn)
			if err != nil {
				// Back to the old flag, so that the next pass applies it again.
				fn.paused.Store(!paused[k.name])
				s.log.Warn("applying a pause flag changed elsewhere", "function", k.String(), "paused", paused[k.name], "err", err)
				continue
			}
			s.log.Info("function "+what+" through another instance", "function", k.String(), "tasks", n)
		}
	}
}
