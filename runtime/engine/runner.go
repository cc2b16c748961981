package engine

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/pipelines"
)

// Runner runs a set of pipelines side by side. A pipeline that fails is
// reported (Status, /readyz, logs) while the others keep running.
type Runner struct {
	pipes []*Pipeline
	deps  Deps
}

// NewRunner builds every pipeline; if one cannot be built, those already
// built are released and the error names the pipeline.
func NewRunner(specs []*pipelines.Pipeline, deps Deps, comps Components) (*Runner, error) {
	r := &Runner{deps: deps}
	for _, s := range specs {
		p, err := Build(s, deps, comps)
		if err != nil {
			for _, built := range r.pipes {
				built.shutdownResources()
			}
			return nil, err
		}
		r.pipes = append(r.pipes, p)
	}
	return r, nil
}

// Pipelines returns the pipelines in configuration order.
func (r *Runner) Pipelines() []*Pipeline { return r.pipes }

// Run runs every pipeline until ctx is done, then stops them all softly
// (see Pipeline.Run). It returns an error joining the failures of pipelines
// that stopped on their own.
func (r *Runner) Run(ctx context.Context) error {
	var g errgroup.Group
	errs := make([]error, len(r.pipes))
	for i, p := range r.pipes {
		g.Go(func() error {
			if err := p.Run(ctx); err != nil {
				r.deps.Log.Error("pipeline failed", "pipeline", p.ID(), "err", err)
				errs[i] = fmt.Errorf("pipeline %s: %w", p.ID(), err)
			}
			return nil
		})
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

// Ready reports, per pipeline ID, why it is not ready; an empty map means
// every pipeline runs with a connected source.
func (r *Runner) Ready() map[string]string {
	out := map[string]string{}
	for _, p := range r.pipes {
		if err := p.Ready(); err != nil {
			out[p.ID()] = err.Error()
		}
	}
	return out
}
