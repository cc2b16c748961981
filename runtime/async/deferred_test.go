package async

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tasks/boltstore"
)

// holdStoreWriter blocks the embedded store's writer, by a Transition of
// the cancelled task id whose mutate waits, until the returned release: records
// of tasks accepted meanwhile stay pending (the 202 does not wait for them).
func holdStoreWriter(t *testing.T, e *env, tenant, id string) (release func()) {
	t.Helper()
	entered, unblock, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		// A cancelled task's retry: a legal move whose mutate refuses it in the end.
		_, err := e.store.Transition(context.Background(), tenant, id, tasks.Queued, func(*tasks.Task) error {
			close(entered)
			<-unblock
			return errors.New("only holding the writer")
		})
		done <- err
	}()
	select {
	case <-entered:
	case err := <-done:
		t.Fatalf("holding the writer: %v", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			close(unblock)
			<-done
		})
	}
}

// TestPendingTaskVisibleRightAfterAccept: with the store's writer held,
// submissions are still answered 202 (the record is written after the
// answer), and the task is found at once by GET and list, its key makes a
// resubmission a duplicate of it, and cancel and delete take effect: the
// task never runs and its queued message does not bring it back.
func TestPendingTaskVisibleRightAfterAccept(t *testing.T) {
	e := startEnv(t, nil, envOpts{})
	if code, _ := e.call(http.MethodPost, "/v1/functions/echo:pause", keyAcme, nil, nil, nil); code != http.StatusOK {
		t.Fatalf("pause: %d", code)
	}
	holder := e.accept(keyAcme, "echo", `{}`)
	if code, _ := e.call(http.MethodPost, "/v1/tasks/"+holder+":cancel", keyAcme, nil, nil, nil); code != http.StatusOK {
		t.Fatalf("cancel: %d", code)
	}
	release := holdStoreWriter(t, e, "acme", holder)
	defer release()

	key := http.Header{"Idempotency-Key": {"pending-1"}}
	code, r := e.submit(keyAcme, "echo", `{"n":1}`, key)
	if code != http.StatusAccepted {
		t.Fatalf("submit with the writer held: %d %+v", code, r)
	}
	id := r.TaskID
	if code, v := e.task(keyAcme, id); code != http.StatusOK || v.State != tasks.Paused || string(v.Event) == "" {
		t.Fatalf("GET right after 202: %d %+v", code, v)
	}
	if code, _ := e.task(keyBeta, id); code != http.StatusNotFound {
		t.Fatalf("another tenant's GET of a pending task: %d", code)
	}
	var list ListResponse
	if code, _ := e.call(http.MethodGet, "/v1/tasks?function=echo&state=paused", keyAcme, nil, nil, &list); code != http.StatusOK ||
		len(list.Tasks) != 1 || list.Tasks[0].ID != id {
		t.Fatalf("list right after 202: %d %+v", code, list)
	}
	code, dup := e.submit(keyAcme, "echo", `{"n":1}`, key)
	if code != http.StatusOK || !dup.Duplicate || dup.TaskID != id {
		t.Fatalf("resubmission while the record is pending: %d %+v, want a duplicate of %s", code, dup, id)
	}

	// Cancel and delete wait for the writer; the record is written first.
	var cancelled TaskView
	cancelDone := make(chan int, 1)
	go func() {
		code, _ := e.call(http.MethodPost, "/v1/tasks/"+id+":cancel", keyAcme, nil, nil, &cancelled)
		cancelDone <- code
	}()
	release()
	if code := <-cancelDone; code != http.StatusOK || cancelled.State != tasks.Cancelled {
		t.Fatalf("cancel of a pending task: %d %+v", code, cancelled)
	}
	if code, _ := e.call(http.MethodDelete, "/v1/tasks/"+id, keyAcme, nil, nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}

	// Its message is still queued (the function is paused): on resume it
	// finds a tombstone, not a task to restore.
	if code, _ := e.call(http.MethodPost, "/v1/functions/echo:resume", keyAcme, nil, nil, nil); code != http.StatusOK {
		t.Fatalf("resume: %d", code)
	}
	after := e.accept(keyAcme, "echo", `{"n":2}`)
	e.waitState(keyAcme, after, tasks.Succeeded)
	queueName := e.svc.place.SharedQueue("acme")
	eventually(t, "the deleted task's message to be consumed", func() bool {
		n, err := e.q.Depth(context.Background(), queueName)
		return err == nil && n == 0
	})
	if code, _ := e.task(keyAcme, id); code != http.StatusNotFound || e.fn.callsOf(id) != 0 {
		t.Fatalf("deleted task: GET %d, %d calls; want 404 and none", code, e.fn.callsOf(id))
	}
}

// losingStore is the embedded store with every deferred create lost, as
// when the process is SIGKILLed after the 202 and before the record's
// write; and, while failing is set, a store whose writes fail, so that
// the messages wait for the next process.
type losingStore struct {
	*boltstore.Store
	mu       sync.Mutex
	accepted map[string]*tasks.Task
	failing  bool
}

func (s *losingStore) CreateDeferred(_ context.Context, t *tasks.Task) error {
	if err := tasks.Prepare(t, s.now()); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted[t.ID] = t.Clone()
	return nil
}

func (s *losingStore) now() time.Time { return time.Now() }

func (s *losingStore) Restore(ctx context.Context, t *tasks.Task) error {
	s.mu.Lock()
	failing := s.failing
	s.mu.Unlock()
	if failing {
		return errors.New("the disk is gone")
	}
	return s.Store.Restore(ctx, t)
}

// TestRecordLostAfterAccept: tasks accepted by a process that died before
// writing their records run in the next process, restored from their
// messages with everything the record had (tenant, function, event,
// idempotency key, received and queued stamps, instance label); the key
// still deduplicates.
func TestRecordLostAfterAccept(t *testing.T) {
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "tasks.db"), tasks.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lost := &losingStore{Store: st, accepted: map[string]*tasks.Task{}, failing: true}
	e := startEnv(t, nil, envOpts{dir: dir, store: lost})
	var ids []string
	for i := range 20 {
		h := http.Header{"Idempotency-Key": {"lost-" + string(rune('a'+i))}}
		code, r := e.submit(keyAcme, "echo", `{"i":`+string(rune('0'+i%10))+`}`, h)
		if code != http.StatusAccepted {
			t.Fatalf("submit %d: %d", i, code)
		}
		ids = append(ids, r.TaskID)
	}
	e.shutdown()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	e = startEnv(t, e.fn, envOpts{dir: dir})
	for i, id := range ids {
		v := e.waitState(keyAcme, id, tasks.Succeeded)
		want := lost.accepted[id]
		got, err := e.store.Get(context.Background(), "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		if v.Function != "echo" || got.Tenant != "acme" || got.IdempotencyKey != want.IdempotencyKey ||
			string(got.Event) != string(want.Event) || !got.Times.Received.Equal(want.Times.Received) ||
			!got.Times.Queued.Equal(*want.Times.Queued) || got.Labels[LabelInstance] != "test" {
			t.Fatalf("restored task %d:\n got %+v\nwant %+v", i, got, want)
		}
		if e.fn.callsOf(id) == 0 {
			t.Fatalf("task %s succeeded without a call", id)
		}
	}
	if n := metricValue(t, e.cfg.Metrics.Gatherer(), "sluice_tasks_restored_total", map[string]string{"tenant": "acme"}); n != float64(len(ids)) {
		t.Fatalf("sluice_tasks_restored_total = %v, want %d", n, len(ids))
	}
	code, r := e.submit(keyAcme, "echo", `{}`, http.Header{"Idempotency-Key": {"lost-a"}})
	if code != http.StatusOK || !r.Duplicate || r.TaskID != ids[0] {
		t.Fatalf("resubmission of a restored task's key: %d %+v, want a duplicate of %s", code, r, ids[0])
	}
}
