package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/sluicehq/sluice/connectors"
)

// dispatchWorkers is how many ingress events a dispatcher handles at once.
// The bus keeps no order between events (as EventBridge), so they need
// not wait for one another.
const dispatchWorkers = 8

// dispatcher reads a bus's ingress and, for each event, writes it to the
// queue of every target whose rule matches (with embedded storage) and to
// the archive (when the event matches the archive's pattern), and only then
// acknowledges it: an event is never lost between the ingress and its
// targets. A write that fails is retried with backoff until it succeeds or
// the dispatcher stops; then the event is left unacknowledged and read
// again after a restart (writes are deduplicated by message id within the
// queue's duplicate window).
//
// Goroutines: run reads in the caller's goroutine and starts
// dispatchWorkers workers, which it waits for before returning.
type dispatcher struct {
	bus  *Bus
	name string
	src  connectors.Source
	q    Queue // nil: no fan-out (a Kafka-stored bus's archiver)
	log  *slog.Logger

	mu    sync.Mutex
	state error // nil while running
}

var errNotRunning = errors.New("not running")

func newDispatcher(b *Bus, name string, src connectors.Source, q Queue) *dispatcher {
	return &dispatcher{bus: b, name: name, src: src, q: q, log: b.set.log.With("bus", b.id, "component", name), state: errNotRunning}
}

func (d *dispatcher) ready() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != nil {
		return d.state
	}
	if h, ok := d.src.(connectors.Health); ok {
		return h.Health()
	}
	return nil
}

func (d *dispatcher) setState(err error) {
	d.mu.Lock()
	d.state = err
	d.mu.Unlock()
}

type delivery struct {
	msg *connectors.Message
	ack connectors.AckFunc
}

// run dispatches until ctx is done, then finishes the events in hand (for
// up to the drain timeout; the rest are left for redelivery) and closes the
// source. It returns nil after a requested stop, or the error that stopped
// the source.
func (d *dispatcher) run(ctx context.Context) error {
	drain := d.bus.set.deps.Engine.DrainTimeout
	if drain <= 0 {
		drain = 30 * time.Second
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		if err := d.src.Close(cctx); err != nil {
			d.log.Error("closing the ingress source", "err", err)
		}
	}()
	if err := d.src.Connect(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		d.setState(err)
		return fmt.Errorf("connect: %w", err)
	}
	d.setState(nil)
	// Workers' writes outlive ctx until the drain timeout, so that events
	// in hand are finished rather than redelivered.
	work, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	in := make(chan delivery)
	var workers sync.WaitGroup
	for range dispatchWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for dl := range in {
				d.dispatch(work, dl)
			}
		}()
	}
	var runErr error
	for {
		msg, ack, err := d.src.Read(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, connectors.ErrClosed) {
				runErr = fmt.Errorf("read: %w", err)
			}
			break
		}
		in <- delivery{msg, ack}
	}
	close(in)
	d.setState(errNotRunning)
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		d.log.Warn("drain timeout: abandoning the events in hand; they will be dispatched again")
		hardStop()
		<-done
	}
	return runErr
}

// dispatch writes one event to its targets and the archive, then
// acknowledges it; or leaves it unacknowledged when ctx ends first.
func (d *dispatcher) dispatch(ctx context.Context, dl delivery) {
	msg := dl.msg
	unwrap(msg)
	if msg.DecodeErr != nil {
		// Only the bus writes its ingress, so this is a damaged message:
		// nothing can route it, and keeping it would block nothing but
		// would be read again forever.
		d.log.Error("dropping an undecodable ingress message", "err", msg.DecodeErr,
			"topic", msg.Coordinates.Topic, "partition", msg.Coordinates.Partition, "offset", msg.Coordinates.Offset)
		d.ack(dl, nil)
		return
	}
	ev := &msg.Event
	b := d.bus
	// The message's position names this dispatch of it: a redelivery
	// writes with the same ids, which the queue deduplicates (ids are
	// unique across the whole store, hence the queue names in them).
	pos := strconv.Itoa(int(msg.Coordinates.Partition)) + "." + strconv.FormatInt(msg.Coordinates.Offset, 10)
	data, headers, err := encode(ev)
	if err != nil {
		d.log.Error("dropping an ingress event that does not encode", "id", ev.ID(), "err", err)
		d.ack(dl, nil)
		return
	}
	var writes []func(context.Context) error
	// The archive first: once a target has an event, it is archived too.
	if b.archive != nil && b.archFilter.wants(ev) {
		writes = append(writes, func(ctx context.Context) error {
			_, err := b.archive.Append(ctx, b.queueName()+"@"+pos, data, headers)
			return queueError(err)
		})
	}
	if d.q != nil {
		for _, ru := range b.router.match(ev) {
			b.set.rec.Matched(b.id, ru.name)
			for _, t := range b.targets[ru.index] {
				writes = append(writes, func(ctx context.Context) error {
					_, err := d.q.Publish(ctx, t.queue, t.queue+"@"+pos, data, headers)
					return queueError(err)
				})
			}
		}
	}
	for _, w := range writes {
		if err := d.retry(ctx, w); err != nil {
			d.ack(dl, err)
			return
		}
	}
	d.ack(dl, nil)
}

// retry calls w until it succeeds, waiting with backoff between failures;
// it returns an error only when ctx ends first.
func (d *dispatcher) retry(ctx context.Context, w func(context.Context) error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 10 * time.Second
	for attempt := 1; ; attempt++ {
		err := w(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("abandoned: dispatcher stopped: %w", err)
		}
		delay := b.NextBackOff()
		d.log.Warn("dispatch write failed; retrying", "attempt", attempt, "next", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("abandoned: dispatcher stopped: %w", err)
		case <-t.C:
		}
	}
}

func (d *dispatcher) ack(dl delivery, err error) {
	if aerr := dl.ack(context.Background(), err); aerr != nil {
		d.log.Debug("ack not recorded", "id", dl.msg.Event.ID(), "err", aerr)
	}
}
