package boltstore

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tasks/storetest"
)

func openTemp(t *testing.T, o tasks.Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

// holdWriter occupies the store's writer with a transaction that lasts
// until the returned release is called, so that what is admitted meanwhile
// stays pending (not in bbolt).
func holdWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	running, unblock, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.w.write(context.Background(), func(*bolt.Tx) error {
			close(running)
			<-unblock
			return nil
		})
	}()
	<-running
	return func() {
		close(unblock)
		if err := <-done; err != nil {
			t.Errorf("held write: %v", err)
		}
	}
}

// committed reports whether bbolt itself holds the task (not the pending set).
func committed(t *testing.T, s *Store, tenant, id string) bool {
	t.Helper()
	var ok bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		_, err := load(tx, tenant, id)
		ok = err == nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestDeferredCreateVisibleBeforeCommit: a task CreateDeferred returned is
// found by Get, List and CountByState while its record is not written, its
// key makes a resubmission a duplicate, and a Transition queued then runs
// after the record's write.
func TestDeferredCreateVisibleBeforeCommit(t *testing.T) {
	s, path := openTemp(t, tasks.Options{})
	ctx := context.Background()
	release := holdWriter(t, s)

	orig := &tasks.Task{Tenant: "t", Function: "f", IdempotencyKey: "k", Event: []byte(`{"a":1}`)}
	if err := s.CreateDeferred(ctx, orig); err != nil {
		t.Fatal(err)
	}
	if committed(t, s, "t", orig.ID) {
		t.Fatal("the record was written while the writer was held")
	}
	got, err := s.Get(ctx, "t", orig.ID)
	if err != nil || got.State != tasks.Queued || string(got.Event) != `{"a":1}` || got.IdempotencyKey != "k" {
		t.Fatalf("Get of a pending task: %+v, %v", got, err)
	}
	if _, err := s.Get(ctx, "other", orig.ID); !errors.Is(err, tasks.ErrNotFound) {
		t.Fatalf("another tenant's Get: %v", err)
	}
	page, err := s.List(ctx, tasks.Query{Tenant: "t"})
	if err != nil || len(page.Tasks) != 1 || page.Tasks[0].ID != orig.ID {
		t.Fatalf("List with a pending task: %+v, %v", page, err)
	}
	counts, err := s.CountByState(ctx, "t")
	if err != nil || counts[tasks.Queued] != 1 {
		t.Fatalf("CountByState: %v, %v", counts, err)
	}

	again := &tasks.Task{Tenant: "t", Function: "f", IdempotencyKey: "k"}
	var dup *tasks.DuplicateError
	if err := s.CreateDeferred(ctx, again); !errors.As(err, &dup) || dup.Original != orig.ID {
		t.Fatalf("resubmission while pending: %v, want a duplicate of %s", err, orig.ID)
	}
	if got, err := s.Get(ctx, "t", again.ID); err != nil || got.State != tasks.Duplicate || got.DuplicateOf != orig.ID {
		t.Fatalf("the duplicate record: %+v, %v", got, err)
	}
	if err := s.CreateDeferred(ctx, &tasks.Task{ID: orig.ID, Tenant: "t", Function: "f"}); !errors.Is(err, tasks.ErrExists) {
		t.Fatalf("the same id while pending: %v", err)
	}

	moved := make(chan error, 1)
	go func() {
		_, err := s.Transition(ctx, "t", orig.ID, tasks.Cancelled, nil)
		moved <- err
	}()
	release()
	if err := <-moved; err != nil {
		t.Fatalf("a transition queued while the create was pending: %v", err)
	}
	if !committed(t, s, "t", orig.ID) || !committed(t, s, "t", again.ID) {
		t.Fatal("records not written once the writer was free")
	}
	if got, err := s.Get(ctx, "t", orig.ID); err != nil || got.State != tasks.Cancelled {
		t.Fatalf("after the commit: %+v, %v", got, err)
	}
	page, err = s.List(ctx, tasks.Query{Tenant: "t"})
	if err != nil || len(page.Tasks) != 2 {
		t.Fatalf("List after the commit: %d tasks, %v", len(page.Tasks), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path)
}

// TestDeferredListPages: pages merge pending and committed tasks in order,
// without repeats or gaps.
func TestDeferredListPages(t *testing.T) {
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	s, _ := openTemp(t, tasks.Options{Now: now})
	defer s.Close()
	ctx := context.Background()
	want := map[string]bool{}
	for i := range 5 { // committed
		task := &tasks.Task{Tenant: "t", Function: "f", Times: tasks.Timestamps{Received: clock.Add(time.Duration(2*i) * time.Second)}}
		if err := s.Create(ctx, task); err != nil {
			t.Fatal(err)
		}
		want[task.ID] = true
	}
	release := holdWriter(t, s)
	for i := range 5 { // pending, interleaved in time
		task := &tasks.Task{Tenant: "t", Function: "f", Times: tasks.Timestamps{Received: clock.Add(time.Duration(2*i+1) * time.Second)}}
		if err := s.CreateDeferred(ctx, task); err != nil {
			t.Fatal(err)
		}
		want[task.ID] = true
	}
	var prev time.Time
	q := tasks.Query{Tenant: "t", Limit: 3}
	seen := map[string]bool{}
	for {
		page, err := s.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range page.Tasks {
			if seen[task.ID] || (!prev.IsZero() && !task.Times.Received.Before(prev)) {
				t.Fatalf("task %s repeated or out of order", task.ID)
			}
			seen[task.ID], prev = true, task.Times.Received
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	release()
	if len(seen) != len(want) {
		t.Fatalf("listed %d tasks, want %d", len(seen), len(want))
	}
}

// TestRestore: a lost deferred create comes back from what its message
// keeps, with its key and stamps; a deleted task does not, and neither
// does one older than the tombstones are kept.
func TestRestore(t *testing.T) {
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, path := openTemp(t, tasks.Options{Now: func() time.Time { return clock }, TombstoneWindow: time.Hour})
	ctx := context.Background()
	received := clock.Add(-time.Minute)
	queued := received.Add(time.Millisecond)
	lost := &tasks.Task{
		ID: "lost", Tenant: "t", Function: "f", IdempotencyKey: "k", Event: []byte(`{}`),
		Labels: map[string]string{"l": "v"}, Times: tasks.Timestamps{Received: received, Queued: &queued},
	}
	if err := s.Restore(ctx, lost.Clone()); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "t", "lost")
	if err != nil || got.State != tasks.Queued || got.IdempotencyKey != "k" || got.Labels["l"] != "v" ||
		!got.Times.Received.Equal(received) || !got.Times.Queued.Equal(queued) || string(got.Event) != `{}` {
		t.Fatalf("restored: %+v, %v", got, err)
	}
	var dup *tasks.DuplicateError
	if err := s.Create(ctx, &tasks.Task{Tenant: "t", Function: "f", IdempotencyKey: "k"}); !errors.As(err, &dup) || dup.Original != "lost" {
		t.Fatalf("the restored task's key: %v", err)
	}
	if err := s.Restore(ctx, lost.Clone()); !errors.Is(err, tasks.ErrExists) {
		t.Fatalf("restoring a task that exists: %v", err)
	}

	// Deleted: cancelled, then deleted, while its message was queued.
	if _, err := s.Transition(ctx, "t", "lost", tasks.Cancelled, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "t", "lost"); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(ctx, lost.Clone()); !errors.Is(err, tasks.ErrDeleted) {
		t.Fatalf("restoring a deleted task: %v", err)
	}
	// The same through a batch delete.
	b := &tasks.Task{ID: "b", Tenant: "t", Function: "f", Times: tasks.Timestamps{Received: received}}
	if err := s.Create(ctx, b.Clone()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Transition(ctx, "t", "b", tasks.Cancelled, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Batch(ctx, tasks.Query{Tenant: "t", States: []tasks.State{tasks.Cancelled}}, tasks.OpDelete); err != nil || n != 1 {
		t.Fatalf("batch delete: %d, %v", n, err)
	}
	if err := s.Restore(ctx, b); !errors.Is(err, tasks.ErrDeleted) {
		t.Fatalf("restoring a batch-deleted task: %v", err)
	}

	// Its key taken by another task meanwhile: restored without it.
	other := &tasks.Task{Tenant: "t", Function: "f", IdempotencyKey: "k2"}
	if err := s.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	keyless := &tasks.Task{ID: "keyless", Tenant: "t", Function: "f", IdempotencyKey: "k2", Times: tasks.Timestamps{Received: received}}
	if err := s.Restore(ctx, keyless); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, &tasks.Task{Tenant: "t", Function: "f", IdempotencyKey: "k2"}); !errors.As(err, &dup) || dup.Original != other.ID {
		t.Fatalf("the key after a restore that could not take it: %v, want a duplicate of %s", err, other.ID)
	}

	// Older than the tombstones: a deletion cannot be told from a loss.
	old := &tasks.Task{ID: "old", Tenant: "t", Function: "f", Times: tasks.Timestamps{Received: clock.Add(-2 * time.Hour)}}
	if err := s.Restore(ctx, old); !errors.Is(err, tasks.ErrDeleted) {
		t.Fatalf("restoring a task older than the tombstone window: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path)
}

// TestTombstonesSwept: the key sweep also purges expired tombstones.
func TestTombstonesSwept(t *testing.T) {
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := openTemp(t, tasks.Options{Now: func() time.Time { return clock }, TombstoneWindow: time.Hour})
	defer s.Close()
	ctx := context.Background()
	task := &tasks.Task{ID: "x", Tenant: "t", Function: "f"}
	if err := s.Create(ctx, task); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Transition(ctx, "t", "x", tasks.Cancelled, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "t", "x"); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * time.Hour)
	if n, err := s.PurgeExpiredKeys(ctx); err != nil || n != 1 {
		t.Fatalf("purge: %d, %v; want the tombstone", n, err)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket([]byte(bGone)).Cursor().First(); k != nil {
			return errors.New("a tombstone is left")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestCloseWritesPending: Close writes the deferred creates still pending.
func TestCloseWritesPending(t *testing.T) {
	s, path := openTemp(t, tasks.Options{})
	ctx := context.Background()
	var ids []string
	for range 100 {
		task := &tasks.Task{Tenant: "t", Function: "f"}
		if err := s.CreateDeferred(ctx, task); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.ID)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDeferred(ctx, &tasks.Task{Tenant: "t", Function: "f"}); !errors.Is(err, tasks.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	s, err := Open(path, tasks.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, id := range ids {
		if !committed(t, s, "t", id) {
			t.Fatalf("task %s not written by Close", id)
		}
	}
}

// deferredCreates is the store with every Create deferred, so that the
// conformance suite runs against tasks whose records are still pending.
type deferredCreates struct{ *Store }

func (d deferredCreates) Create(ctx context.Context, t *tasks.Task) error {
	return d.CreateDeferred(ctx, t)
}

func TestConformanceDeferred(t *testing.T) {
	storetest.Run(t, func(t *testing.T, o tasks.Options) tasks.Store {
		path := filepath.Join(t.TempDir(), "tasks.db")
		s, err := Open(path, o)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { checkFile(t, path) })
		return deferredCreates{s}
	})
}
