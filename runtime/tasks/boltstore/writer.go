package boltstore

import (
	"context"
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
// A write whose function fails makes the transaction roll back; the
// others run again without it, and it gets its own error. So a write's
// function may run more than once and must start afresh each time; it
// sees the effects of the writes ahead of it in its batch, as if each ran
// in its own transaction, in order.
type writer struct {
	db   *bolt.DB
	reqs chan writeReq
	stop chan struct{} // closed by close: no more writes will come
	done chan struct{} // closed when the goroutine returned
}

type writeReq struct {
	fn  func(*bolt.Tx) error
	err chan<- error // buffered (1): the writer never blocks answering
	// ran, if not nil, is closed once fn ran for good: every function of
	// its transaction succeeded (none will run again) and the
	// transaction is about to commit. Only stage sets it.
	ran chan struct{}
}

func startWriter(db *bolt.DB) *writer {
	w := &writer{db: db, reqs: make(chan writeReq, queueDepth), stop: make(chan struct{}), done: make(chan struct{})}
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

// stage queues fn like write but returns as soon as fn ran for good in a
// transaction about to commit, before the commit's fsync: any write queued
// after stage returned runs in a later transaction, so it sees fn's
// effects, or fails with them if the commit fails. wait returns the
// commit's outcome and must be called once. If fn fails, stage returns its
// error (wait is nil).
func (w *writer) stage(ctx context.Context, fn func(*bolt.Tx) error) (wait func() error, err error) {
	errc, ran := make(chan error, 1), make(chan struct{})
	select {
	case w.reqs <- writeReq{fn: fn, err: errc, ran: ran}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-ran:
		return func() error { return <-errc }, nil
	case err := <-errc:
		// fn failed, or (ran is closed too) the commit already ended.
		if err != nil {
			return nil, err
		}
		return func() error { return nil }, nil
	}
}

// close stops the goroutine and waits for it. The caller guarantees no
// write is in progress or will start.
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
		case <-w.stop:
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

// commit runs batch in one transaction, taking out the writes that fail.
func (w *writer) commit(batch []writeReq) {
	for len(batch) > 0 {
		failed, ferr := -1, error(nil)
		err := w.db.Update(func(tx *bolt.Tx) error {
			for i, r := range batch {
				if ferr = r.fn(tx); ferr != nil {
					failed = i
					return ferr
				}
			}
			for _, r := range batch {
				if r.ran != nil {
					close(r.ran)
				}
			}
			return nil
		})
		if failed >= 0 {
			batch[failed].err <- ferr
			batch = slices.Delete(batch, failed, failed+1)
			continue
		}
		for _, r := range batch {
			r.err <- err
		}
		return
	}
}
