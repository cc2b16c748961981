package async

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tasks/pgstore"
	"github.com/sluicehq/sluice/runtime/tasks/storetest"
)

// pgStore opens a store in a fresh schema, dropped when the test ends.
// (testenv.UniqueName can exceed PostgreSQL's 63-byte identifiers.)
func pgStore(t *testing.T, url, schema string) tasks.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), pgstore.Config{URL: url, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestTwoInstancesSharePostgres: two services, each with its own embedded
// queue, share one PostgreSQL task store: tasks accepted by either run
// once and are visible, deduplicated and cancellable through both.
func TestTwoInstancesSharePostgres(t *testing.T) {
	url := testenv.PostgresURL(t)
	schema := storetest.PostgresSchema(t, url, "sluice_async_")
	fn := newFnServer(t)
	b := newBlocking()
	fn.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("ce-type") == "block" {
			b.handle(w, r)
			return
		}
		answer(w, r, nil)
	})
	instance := func(name string) func(*Config) { return func(c *Config) { c.Instance = name } }
	a := startEnv(t, fn, envOpts{store: pgStore(t, url, schema), tweak: instance("a")})
	bb := startEnv(t, fn, envOpts{store: pgStore(t, url, schema), tweak: instance("b")})

	var ids []string
	for i := range 40 {
		e := a
		if i%2 == 1 {
			e = bb
		}
		ids = append(ids, e.accept(keyAcme, "echo", `{}`))
	}
	for i, id := range ids {
		// Read through the instance that did not accept it.
		other := bb
		if i%2 == 1 {
			other = a
		}
		v := other.waitState(keyAcme, id, tasks.Succeeded)
		if v.Attempts != 1 || fn.callsOf(id) != 1 {
			t.Fatalf("task %s: %+v, called %d times", id, v, fn.callsOf(id))
		}
	}
	var page ListResponse
	if a.call(http.MethodGet, "/v1/tasks?limit=1000&state=succeeded", keyAcme, nil, nil, &page); len(page.Tasks) != len(ids) {
		t.Fatalf("%d succeeded tasks listed, want %d", len(page.Tasks), len(ids))
	}

	// An idempotency key held through one instance deduplicates on the other.
	key := http.Header{"Idempotency-Key": {"shared-key"}}
	code, first := a.submit(keyAcme, "echo", `{}`, key)
	if code != 202 {
		t.Fatalf("first submission with a key: %d", code)
	}
	if code, again := bb.submit(keyAcme, "echo", `{}`, key); code != 200 || again.TaskID != first.TaskID {
		t.Fatalf("cross-instance duplicate: %d %+v, want %s", code, again, first.TaskID)
	}

	// Cancelling through b a task running on a: a's attempt ends (its
	// result is dropped) and the task stays cancelled.
	code, r := a.submit(keyAcme, "echo", `{}`, http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"blocked"}, "Ce-Source": {"/t"}, "Ce-Type": {"block"}})
	if code != 202 {
		t.Fatal(code)
	}
	receive(t, b.started, "the blocked call")
	if code, v := bb.action(keyAcme, "/v1/tasks/"+r.TaskID+":cancel"); code != 200 || v.State != tasks.Cancelled {
		t.Fatalf("cancel through b: %d %+v", code, v)
	}
	close(b.release)
	eventually(t, "a's attempt to end", func() bool { return a.svc.gate.inFlight("acme") == 0 })
	if _, v := a.task(keyAcme, r.TaskID); v.State != tasks.Cancelled {
		t.Fatalf("after a's attempt ended: %+v", v)
	}

	// Each instance re-publishes only the lost tasks it queued itself: its
	// queue is its own.
	lost := a.storedTask("echo", "a")
	ctx := context.Background()
	if err := bb.svc.reconcile(ctx, time.Time{}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, v := a.task(keyAcme, lost.ID); v.State != tasks.Queued {
		t.Fatalf("b published a's task: %+v", v)
	}
	if err := a.svc.reconcile(ctx, time.Time{}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	a.waitState(keyAcme, lost.ID, tasks.Succeeded)
}

// TestTwoInstancesSharePause: a function paused through one instance is
// paused on the other (its submissions are held, not run), and resumed
// through the other it runs again on both: the flag is in the shared store.
func TestTwoInstancesSharePause(t *testing.T) {
	url := testenv.PostgresURL(t)
	schema := storetest.PostgresSchema(t, url, "sluice_async_")
	fn := newFnServer(t)
	instance := func(name string) func(*Config) {
		return func(c *Config) { c.Instance, c.PauseSyncInterval = name, 50*time.Millisecond }
	}
	a := startEnv(t, fn, envOpts{store: pgStore(t, url, schema), tweak: instance("a")})
	b := startEnv(t, fn, envOpts{store: pgStore(t, url, schema), tweak: instance("b")})
	echo := fnKey{"acme", "echo"}
	flag := func(e *env) bool { return e.svc.fns[echo].paused.Load() }

	var st FunctionState
	if code, _ := a.call(http.MethodPost, "/v1/functions/echo:pause", keyAcme, nil, nil, &st); code != 200 || !st.Paused {
		t.Fatalf("pause through a: %d %+v", code, st)
	}
	eventually(t, "b to learn of the pause", func() bool { return flag(b) })
	held := b.accept(keyAcme, "echo", `{}`)
	if _, v := b.task(keyAcme, held); v.State != tasks.Paused {
		t.Fatalf("submitted through b while paused through a: %+v", v)
	}
	// Other functions still run on b.
	b.waitState(keyAcme, b.accept(keyAcme, "other", `{}`), tasks.Succeeded)

	if code, _ := b.call(http.MethodPost, "/v1/functions/echo:resume", keyAcme, nil, nil, &st); code != 200 || st.Paused || st.Tasks != 1 {
		t.Fatalf("resume through b: %d %+v", code, st)
	}
	eventually(t, "a to learn of the resume", func() bool { return !flag(a) })
	ran := a.accept(keyAcme, "echo", `{}`)
	for _, id := range []string{held, ran} {
		if v := a.waitState(keyAcme, id, tasks.Succeeded); fn.callsOf(id) != 1 {
			t.Fatalf("task %s: %+v, called %d times", id, v, fn.callsOf(id))
		}
	}
}

// TestPauseFlagChangedElsewhere: an instance that learns of a pause made
// elsewhere pauses the tasks it queued before it knew, and one that learns
// of a resume resumes the tasks it held meanwhile.
func TestPauseFlagChangedElsewhere(t *testing.T) {
	url := testenv.PostgresURL(t)
	schema := storetest.PostgresSchema(t, url, "sluice_async_")
	fn := newFnServer(t)
	b := newBlocking()
	fn.setHandler(b.handle)
	// This instance never syncs on its own (the test calls syncPauseFlags),
	// and has one worker: while the first call blocks, a second task
	// stays queued.
	e := startEnv(t, fn, envOpts{store: pgStore(t, url, schema), tweak: func(c *Config) { c.PauseSyncInterval, c.Workers = time.Hour, 1 }})
	other := pgStore(t, url, schema) // stands for another instance
	ctx := context.Background()

	first := e.accept(keyAcme, "echo", `{}`)
	receive(t, b.started, "the first call")
	queued := e.accept(keyAcme, "echo", `{}`)
	if err := other.SetPaused(ctx, "acme", "echo", true); err != nil {
		t.Fatal(err)
	}
	e.svc.syncPauseFlags(ctx)
	if _, v := e.task(keyAcme, queued); v.State != tasks.Paused {
		t.Fatalf("a task queued before the pause was learnt: %+v", v)
	}
	close(b.release)
	e.waitState(keyAcme, first, tasks.Succeeded)

	if err := other.SetPaused(ctx, "acme", "echo", false); err != nil {
		t.Fatal(err)
	}
	e.svc.syncPauseFlags(ctx)
	e.waitState(keyAcme, queued, tasks.Succeeded)
}
