package engine

import (
	"context"
	"errors"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/runtime/invoke"
)

// ErrNoFunction is Build's error for a pipeline with neither a function
// nor an onSuccess route: its events would go nowhere.
var ErrNoFunction = errors.New("no function and no onSuccess route")

// Identity is the function of a pipeline without one: each input event is
// its own result, so the pipeline moves source events to its onSuccess
// routes (a bus, a topic, ...) with the usual at-least-once acknowledgement.
// It never fails and never calls out; it is safe for concurrent use.
type Identity struct{}

var _ invoke.Function = Identity{}

// Invoke returns copies of in as the results. The copies are deep: the
// engine sets extensions on results (partitionkey), which must not reach
// the source's message.
func (Identity) Invoke(_ context.Context, in []cloudevents.Event) (invoke.Result, error) {
	out := make([]cloudevents.Event, len(in))
	for i := range in {
		out[i] = in[i].Clone()
	}
	return invoke.Result{Status: 200, Events: out}, nil
}
