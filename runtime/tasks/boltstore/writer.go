package boltstore

import (
	"context"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Group commit bounds.
const (
	// maxBatch bounds the writes one transaction carries, so that a write
	// arriving behind a full queue waits for at most two commits' worth.
	maxBatch = 1024
	// queueDepth bounds the writes waiting for the writer; a full queue
	// blocks the callers (backpressure) until the writer catches up.
	queueDepth = 1024
)

// writer group-commits the store's writes. Its goroutine is owned by the
// Store: started by Open, stopped by Close after every caller got its
// answer. It takes every write waiting, runs them in order in one bbolt
// transaction and commits it (one fsync for all), then answers each
// caller. While one transaction commits, the next writes queue up, so a
// batch grows with the load and a lone write waits for no timer (what
// bolt.DB.Batch, with its fixed delay, cannot do).
//
// Creates do not come through reqs: they are admitted into pend
// (deferred.go), which kicks the writer, and every transaction first
// writes the creates admitted until it started. A write queued after a
// create was admitted therefore runs after the create's write.
//
// A write whose function fails makes the transaction roll back; the
// others run again without it, and it gets its own error. So a write's
// function may run more than once and must start afresh each time; it
// sees the effects of the writes ahead of it in its batch, as if each ran
// in its own transaction, in order.
type writer struct {
	db   *bolt.DB
	pend *pending
	reqs chan writeReq
	stop chan struct{} // closed by close: no more writes will come
	done chan struct{} // closed when the goroutine returned
}

type writeReq struct {
	fn  func(*bolt.Tx) error
	err chan<- error // buffered (1): the writer never blocks answering
}

func startWriter(db *bolt.DB, pend *pending) *writer {
	w := &writer{db: db, pend: pend, reqs: make(chan writeReq, queueDepth), stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w
}

// write runs fn in a write transaction shared with other writes and
// returns once that transaction committed (fn's error, or the commit's).
// ctx bounds only the wait for a place in the queue: once queued, the
// write is carried out and write waits for it, because fn may still run.
func (w *writer) write(ctx context.Context, fn func(*bolt.Tx) error) error {
	errc := make(chan error, 1)
	select {
	case w.reqs <- writeReq{fn: fn, err: errc}:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-errc
}

// close stops the goroutine, once it wrote the creates still pending, and
// waits for it. The caller guarantees no write is in progress or will
// start.
func (w *writer) close() {
	close(w.stop)
	<-w.done
}

func (w *writer) loop() {
	defer close(w.done)
	batch := make([]writeReq, 0, maxBatch)
	for {
		select {
		case r := <-w.reqs:
			batch = append(batch[:0], r)
		case <-w.pend.kick:
			batch = batch[:0]
		case <-w.stop:
			w.commit(nil)
			return
		}
	more:
		for len(batch) < maxBatch {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		w.commit(batch)
		clear(batch) // drop the closures for the collector
	}
}

// commit runs the pending creates and batch in one transaction, taking out
// the writes that fail.
func (w *writer) commit(batch []writeReq) {
	if len(batch) == 0 && !w.pend.queued() {
		return // a kick for creates an earlier transaction took
	}
	var creates []*pendingCreate
	for {
		failed, ferr := -1, error(nil)
		err := w.db.Update(func(tx *bolt.Tx) error {
			// Kept across reruns: a create taken is written by this
			// transaction or reported lost with it.
			creates = append(creates, w.pend.take()...)
			for _, pc := range creates {
				if err := writeCreate(tx, pc); err != nil {
					return fmt.Errorf("writing task %s: %w", pc.t.ID, err)
				}
			}
			for i, r := range batch {
				if ferr = r.fn(tx); ferr != nil {
					failed = i
					return ferr
				}
			}
			return nil
		})
		if failed >= 0 {
			batch[failed].err <- ferr
			batch = slices.Delete(batch, failed, failed+1)
			continue
		}
		// The creates leave the pending set before anyone hears of
		// the commit (see pending).
		w.pend.settle(creates, err)
		for _, r := range batch {
			r.err <- err
		}
		return
	}
}
