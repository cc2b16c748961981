package engine

import (
	"context"
	"errors"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/runtime/consumer"
	"github.com/sluicehq/sluice/runtime/invoke"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/retry"
	"github.com/sluicehq/sluice/sinks"
)

// batchLoop dispatches for function.mode batch: it gathers ready
// events into batches of up to maxEvents, waiting at most linger after the
// first, and runs each batch in its own goroutine. Every event of a batch
// holds its lane or key until the whole batch is done, so ordering modes
// keep their meaning: a batch never holds two events of one key.
func (p *Pipeline) batchLoop(ctx context.Context, workers interface {
	Add(int)
	Done()
}) {
	for {
		first, err := p.sched.Pop(context.Background())
		if err != nil {
			return
		}
		batch := []consumer.Ticket[*item]{first}
		lingerCtx, cancel := context.WithTimeout(context.Background(), p.linger)
		for len(batch) < p.maxEvents {
			t, err := p.sched.Pop(lingerCtx)
			if err != nil {
				break
			}
			batch = append(batch, t)
		}
		cancel()
		workers.Add(1)
		go func() {
			defer workers.Done()
			items := make([]*item, len(batch))
			for i, t := range batch {
				items[i] = t.Value
			}
			p.processBatch(ctx, items)
			for _, t := range batch {
				p.sched.Done(t)
			}
		}()
	}
}

// processBatch takes a batch of events to durable outcomes. The function
// may reject single events with a 207 Multi-Status answer; those alone are
// retried or dead-lettered. A batch rejected as a whole is retried as a
// whole if the failure is retriable; if it is permanent, or retries run out
// with more than one event left, the batch is split in two and each half
// processed on its own, so that poison events are isolated in
// O(poison × log n) calls instead of failing their neighbours.
func (p *Pipeline) processBatch(ctx context.Context, items []*item) {
	pending := items[:0:0]
	for _, it := range items {
		if p.admit(ctx, it) {
			pending = append(pending, it)
		}
	}
	if len(pending) == 0 {
		return
	}
	oldest := pending[0].read
	for _, it := range pending {
		if it.read.Before(oldest) {
			oldest = it.read
		}
	}
	for attempt := 1; len(pending) > 0; attempt++ {
		events := make([]cloudevents.Event, len(pending))
		for i, it := range pending {
			events[i] = it.msg.Event
		}
		res, v, ok := p.call(ctx, events)
		if !ok {
			p.abandonAll(ctx, pending)
			return
		}
		if v.Class == retry.Success {
			var again []*item
			if again, v, ok = p.settleBatch(ctx, pending, res, attempt); !ok {
				return
			}
			pending = again
			if len(pending) == 0 {
				return
			}
		}
		if v.Class == retry.Permanent && len(pending) > 1 {
			p.bisect(ctx, pending)
			return
		}
		delay, again := p.policy.Next(attempt, v, oldest, time.Now())
		if !again {
			if len(pending) > 1 {
				p.bisect(ctx, pending)
				return
			}
			p.fail(ctx, pending[0], p.failureOf(v, attempt))
			return
		}
		p.rec.Retry()
		if !sleep(ctx, delay, nil) {
			p.abandonAll(ctx, pending)
			return
		}
	}
}

// bisect processes each half of a failed batch on its own.
func (p *Pipeline) bisect(ctx context.Context, items []*item) {
	p.log.Debug("splitting failed batch", "events", len(items))
	mid := len(items) / 2
	p.processBatch(ctx, items[:mid])
	p.processBatch(ctx, items[mid:])
}

// settleBatch handles a 2xx batch answer: it writes the results, acks the
// events the function accepted, dead-letters those it rejected
// permanently, and returns those it rejected retriably with the verdict to
// retry them by. ok is false when the events were abandoned.
func (p *Pipeline) settleBatch(ctx context.Context, pending []*item, res invoke.Result, attempt int) (again []*item, v retry.Verdict, ok bool) {
	werr := p.writeRoutes(ctx, p.onSuccess, res.Events, nil)
	if werr != nil && !errors.Is(werr, sinks.ErrRejected) {
		p.abandonAll(ctx, pending)
		return nil, v, false
	}
	for i, it := range pending {
		ferr, failed := res.Failed[i]
		switch {
		case !failed && werr == nil:
			p.finish(it, metrics.OutcomeSucceeded)
		case !failed:
			// A batch's results are not tied to single inputs: every input
			// the function accepted shares the route's rejection.
			p.fail(ctx, it, failure{class: "rejected", reason: "result rejected: " + werr.Error(), attempts: attempt, status: res.Status})
		default:
			fv := retry.Classify(ferr)
			if fv.Class == retry.Permanent {
				p.fail(ctx, it, p.failureOf(fv, attempt))
				continue
			}
			again = append(again, it)
			if fv.RetryAfter > v.RetryAfter || v.Class != retry.Retriable {
				v = fv
			}
		}
	}
	return again, v, true
}

func (p *Pipeline) failureOf(v retry.Verdict, attempt int) failure {
	class := "exhausted"
	switch {
	case v.Class == retry.Permanent:
		class = "permanent"
	case attempt < p.attempts:
		class = "expired"
	}
	return failure{class: class, reason: v.Reason, attempts: attempt, status: v.Status}
}

func (p *Pipeline) abandonAll(ctx context.Context, items []*item) {
	cause := abandonCause(ctx)
	if ctx.Err() == nil {
		cause = errors.New("abandoned")
	}
	for _, it := range items {
		p.abandon(it, cause)
	}
}
