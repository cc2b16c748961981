package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/sluicehq/sluice/pipelines"
)

// Runner runs a set of pipelines side by side and replaces them when the
// configuration is reloaded. A pipeline that fails is reported (Status,
// /readyz, logs) while the others keep running.
//
// Concurrency: Run is called once. Reload, Pipelines and Ready may be called
// from any goroutine, also while Run runs; Reload calls are serialised. The
// Runner owns one goroutine per running pipeline; Run returns only after
// every one of them has returned.
type Runner struct {
	deps  Deps
	comps Components

	reloadMu sync.Mutex // serialises Reload

	mu        sync.Mutex
	pipes     []*entry // configuration order
	runCtx    context.Context
	live      int           // entries whose pipeline goroutine has not returned
	reloading bool          // a Reload is replacing pipelines: Run must not end
	ended     bool          // Run stopped waiting; nothing may start anymore
	changed   chan struct{} // closed and replaced when live or reloading changes
	wg        sync.WaitGroup
}

// entry is one pipeline of the current configuration.
type entry struct {
	p    *Pipeline
	spec string // the spec's canonical JSON, to tell a changed pipeline
	stop context.CancelFunc
	done chan struct{} // closed when its Run returned
	err  error         // its failure, set before done is closed
}

// ReloadResult lists, by pipeline ID, what a Reload did.
type ReloadResult struct {
	Started   []string // new in the configuration
	Restarted []string // changed, or failed before: stopped softly, then started again
	Stopped   []string // gone from the configuration: stopped softly
	Unchanged []string // left running as they were
}

// ErrNotRunning: Reload was called before Run or after Run returned.
var ErrNotRunning = errors.New("runner is not running")

// NewRunner builds every pipeline; if one cannot be built, those already
// built are released and the error names the pipeline.
func NewRunner(specs []*pipelines.Pipeline, deps Deps, comps Components) (*Runner, error) {
	r := &Runner{deps: deps, comps: comps, changed: make(chan struct{})}
	built, err := r.build(specs)
	if err != nil {
		return nil, err
	}
	r.pipes = built
	return r, nil
}

// build builds an entry per spec, releasing them all if one fails.
func (r *Runner) build(specs []*pipelines.Pipeline) ([]*entry, error) {
	var out []*entry
	for _, s := range specs {
		e, err := r.buildOne(s)
		if err != nil {
			release(out)
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (r *Runner) buildOne(s *pipelines.Pipeline) (*entry, error) {
	canon, err := canonical(s)
	if err != nil {
		return nil, err
	}
	p, err := Build(s, r.deps, r.comps)
	if err != nil {
		return nil, err
	}
	return &entry{p: p, spec: canon}, nil
}

func release(entries []*entry) {
	for _, e := range entries {
		e.p.shutdownResources()
	}
}

// canonical is a pipeline spec's identity for reloads: its JSON form
// (positions in the file are not part of it, so moving a document does not
// restart it).
func canonical(s *pipelines.Pipeline) (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("pipeline %s: %w", s.ID(), err)
	}
	return string(b), nil
}

// Pipelines returns the current pipelines in configuration order.
func (r *Runner) Pipelines() []*Pipeline {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Pipeline, len(r.pipes))
	for i, e := range r.pipes {
		out[i] = e.p
	}
	return out
}

// Run runs every pipeline until ctx is done, then stops them all softly
// (see Pipeline.Run). It also returns, earlier, once every pipeline has
// stopped on its own (failed) and no Reload is under way; with no pipeline
// at all it waits for ctx (a Reload may add some). It returns an error
// joining the failures of the current pipelines that stopped on their own.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	r.runCtx = ctx
	for _, e := range r.pipes {
		r.startLocked(e)
	}
	stopping := ctx.Done()
	for r.reloading || r.live > 0 || (len(r.pipes) == 0 && ctx.Err() == nil) {
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-stopping:
			stopping = nil // the pipelines see it too; wait for them
		}
		r.mu.Lock()
	}
	r.ended = true
	pipes := r.pipes
	r.mu.Unlock()
	r.wg.Wait()
	var errs []error
	for _, e := range pipes {
		if e.err != nil {
			errs = append(errs, e.err)
		}
	}
	return errors.Join(errs...)
}

// startLocked runs e's pipeline in a goroutine of its own, stopped by
// e.stop or by Run's context. Called with r.mu held.
func (r *Runner) startLocked(e *entry) {
	ctx, stop := context.WithCancel(r.runCtx)
	e.stop, e.done = stop, make(chan struct{})
	r.live++
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer stop()
		if err := e.p.Run(ctx); err != nil {
			r.deps.Log.Error("pipeline failed", "pipeline", e.p.ID(), "err", err)
			e.err = fmt.Errorf("pipeline %s: %w", e.p.ID(), err)
		}
		close(e.done)
		r.mu.Lock()
		r.live--
		r.notifyLocked()
		r.mu.Unlock()
	}()
}

func (r *Runner) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Reload replaces the running pipelines with specs (a whole configuration,
// already validated): pipelines whose spec is unchanged keep running
// untouched; changed ones, and ones that had failed, are stopped softly —
// reading stops, what was read is finished and acknowledged, within the
// drain timeout — and then started from their new spec; removed ones are
// stopped softly; new ones are started. Every new pipeline is built before
// anything is stopped, so a spec that cannot be built (an error naming the
// pipeline) leaves the running set as it was. Events are not lost: a stopped
// pipeline's unacknowledged events are redelivered to its successor (or to
// the consumer group's other members) by the broker.
//
// Errors: ErrNotRunning, or a build error (nothing changed).
func (r *Runner) Reload(specs []*pipelines.Pipeline) (ReloadResult, error) {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	var res ReloadResult

	r.mu.Lock()
	if r.runCtx == nil || r.ended {
		r.mu.Unlock()
		return res, ErrNotRunning
	}
	r.reloading = true
	current := map[string]*entry{}
	for _, e := range r.pipes {
		current[e.p.ID()] = e
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.reloading = false
		r.notifyLocked()
		r.mu.Unlock()
	}()

	// Plan, building what must start.
	next := make([]*entry, 0, len(specs))
	var fresh []*entry
	var stopping []*entry
	keep := map[string]bool{}
	for _, s := range specs {
		id := s.ID()
		canon, err := canonical(s)
		if err != nil {
			release(fresh)
			return ReloadResult{}, err
		}
		old, had := current[id]
		if had && old.spec == canon && !finished(old) {
			next = append(next, old)
			keep[id] = true
			res.Unchanged = append(res.Unchanged, id)
			continue
		}
		e, err := r.buildOne(s)
		if err != nil {
			release(fresh)
			return ReloadResult{}, err
		}
		fresh = append(fresh, e)
		next = append(next, e)
		if had {
			stopping = append(stopping, old)
			keep[id] = true
			res.Restarted = append(res.Restarted, id)
		} else {
			res.Started = append(res.Started, id)
		}
	}
	for id, e := range current {
		if !keep[id] {
			stopping = append(stopping, e)
			res.Stopped = append(res.Stopped, id)
		}
	}
	slices.Sort(res.Stopped)

	// Stop what goes (softly, all at once), then start what comes: a
	// changed pipeline's successor joins its consumer group only after the
	// old one committed what it finished.
	for _, e := range stopping {
		e.stop()
	}
	for _, e := range stopping {
		<-e.done
	}
	r.mu.Lock()
	r.pipes = next
	for _, e := range fresh {
		r.startLocked(e)
	}
	r.mu.Unlock()
	r.deps.Log.Info("configuration reloaded", "started", res.Started, "restarted", res.Restarted,
		"stopped", res.Stopped, "unchanged", len(res.Unchanged))
	return res, nil
}

// finished reports whether e's pipeline has returned (it failed).
func finished(e *entry) bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// Ready reports, per pipeline ID, why it is not ready; an empty map means
// every pipeline runs with a connected source.
func (r *Runner) Ready() map[string]string {
	out := map[string]string{}
	for _, p := range r.Pipelines() {
		if err := p.Ready(); err != nil {
			out[p.ID()] = err.Error()
		}
	}
	return out
}
