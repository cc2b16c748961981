package async

import (
	"context"
	"errors"
	"sync"

	"github.com/sluicehq/sluice/connectors"
)

// errSourceClosed nacks messages a function's source still held when its
// pipeline stopped: the queue delivers them again.
var errSourceClosed = errors.New("function pipeline stopped before reading the task")

// delivery is one queued task message on its way to a function's pipeline.
type delivery struct {
	msg *connectors.Message
	ack connectors.AckFunc
}

// fnSource is the connectors.Source of one function's pipeline: the queue
// readers (one per queue the function's tasks may be in) push the
// function's messages into it, and the engine reads them. Acknowledgements
// go straight back to the queue message.
//
// Capacity is one message: the engine already reads ahead (twice its
// concurrency limit), and a slow function blocking its queue's reader is
// what the placement policy detects and cures by promotion.
//
// Concurrency: push may be called from several readers; Read from the
// engine's read loop; Close once by the engine. A push racing with Close
// may leave a message in the buffer after Close drained it; it is then
// never acknowledged, and its queue reader's Close makes it available
// again, so nothing is lost.
type fnSource struct {
	ch        chan delivery
	closed    chan struct{}
	closeOnce sync.Once
}

var _ connectors.Source = (*fnSource)(nil)

func newFnSource() *fnSource {
	return &fnSource{ch: make(chan delivery, 1), closed: make(chan struct{})}
}

// Connect implements connectors.Source; there is nothing to connect.
func (s *fnSource) Connect(ctx context.Context) error { return ctx.Err() }

// Read implements connectors.Source.
func (s *fnSource) Read(ctx context.Context) (*connectors.Message, connectors.AckFunc, error) {
	select {
	case d := <-s.ch:
		return d.msg, d.ack, nil
	case <-s.closed:
		return nil, nil, connectors.ErrClosed
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// push hands d to the pipeline; false if ctx ended or the source closed
// first (the caller then still owns d).
func (s *fnSource) push(ctx context.Context, d delivery) bool {
	select {
	case <-s.closed:
		return false
	default:
	}
	select {
	case s.ch <- d:
		return true
	case <-s.closed:
		return false
	case <-ctx.Done():
		return false
	}
}

// Close implements connectors.Source: messages not yet read go back to the
// queue.
func (s *fnSource) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.closed) })
	for {
		select {
		case d := <-s.ch:
			_ = d.ack(ctx, errSourceClosed)
		default:
			return nil
		}
	}
}
