package async

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/tasks"
)

// failing answers status to the first n calls of each event, then the default.
func failing(n, status int, retryAfter string) func(w http.ResponseWriter, r *http.Request) {
	var mu sync.Mutex
	seen := map[string]int{}
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("ce-id")
		mu.Lock()
		seen[id]++
		k := seen[id]
		mu.Unlock()
		if k <= n {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			http.Error(w, "planned failure", status)
			return
		}
		body := make([]byte, 0)
		answer(w, r, body)
	}
}

// blocking holds every call until the caller's request is cancelled or a
// release token arrives (closing release lets every call through),
// reporting each call on started and each cancelled call on cancelled, and
// keeping the highest number of calls held at once.
type blocking struct {
	started, cancelled chan string
	release            chan struct{}

	mu            sync.Mutex
	inFlight, max int
}

func newBlocking() *blocking {
	return &blocking{started: make(chan string, 1000), cancelled: make(chan string, 1000), release: make(chan struct{}, 1000)}
}

func (b *blocking) handle(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("ce-id")
	b.mu.Lock()
	b.inFlight++
	b.max = max(b.max, b.inFlight)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.inFlight--
		b.mu.Unlock()
	}()
	b.started <- id
	select {
	case <-r.Context().Done():
		b.cancelled <- id
	case <-b.release:
		answer(w, r, nil)
	}
}

func (b *blocking) maxInFlight() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.max
}

func receive(t *testing.T, c chan string, what string) string {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(waitFor):
		t.Fatalf("timed out waiting for %s", what)
		return ""
	}
}

func (e *env) depth(name string) int {
	e.t.Helper()
	n, err := e.q.Depth(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) action(key, path string) (int, TaskView) {
	e.t.Helper()
	var v TaskView
	code, _ := e.call(http.MethodPost, path, key, []byte("{}"), nil, &v)
	return code, v
}

func TestRetriesThenSucceeds(t *testing.T) {
	fn := newFnServer(t)
	// 429 with Retry-After: 1 holds the task in retrying for a second.
	fn.setHandler(failing(2, http.StatusTooManyRequests, "1"))
	e := startEnv(t, fn, envOpts{attempts: 3})
	id := e.accept(keyAcme, "echo", `{}`)
	v := e.waitState(keyAcme, id, tasks.Retrying)
	if v.LastStatus != 429 || v.Error == "" {
		t.Fatalf("retrying task %+v", v)
	}
	v = e.waitState(keyAcme, id, tasks.Succeeded)
	if v.Attempts != 3 || v.Error != "" || v.LastStatus != 0 || v.Result == nil {
		t.Fatalf("succeeded task %+v", v)
	}
}

func TestPermanentFailures(t *testing.T) {
	fn := newFnServer(t)
	fn.setHandler(failing(100, http.StatusBadRequest, ""))
	e := startEnv(t, fn, envOpts{})
	// "other" has an onFailure route: the task is dead-lettered.
	id := e.accept(keyAcme, "other", `{}`)
	v := e.waitState(keyAcme, id, tasks.DeadLettered)
	if v.Attempts != 1 || v.LastStatus != 400 || !strings.Contains(v.Error, "permanent") || v.Times.Delivered == nil || v.Times.Finished == nil {
		t.Fatalf("dead-lettered task %+v", v)
	}
	// "echo" has none: the failure is final without a dead letter.
	id = e.accept(keyAcme, "echo", `{}`)
	v = e.waitState(keyAcme, id, tasks.Failed)
	if v.Attempts != 1 || v.LastStatus != 400 || v.Times.Delivered != nil {
		t.Fatalf("failed task %+v", v)
	}
	// Retrying runs the task again, as a new run.
	fn.setHandler(nil)
	code, r := e.action(keyAcme, "/v1/tasks/"+id+":retry")
	if code != 200 || r.State != tasks.Queued || r.Retries != 1 || r.Attempts != 0 {
		t.Fatalf("retry: %d %+v", code, r)
	}
	v = e.waitState(keyAcme, id, tasks.Succeeded)
	if v.Retries != 1 || v.Attempts != 1 || v.Error != "" {
		t.Fatalf("retried task %+v", v)
	}
	// A succeeded task cannot be retried; it can be deleted, once.
	if code, _ := e.action(keyAcme, "/v1/tasks/"+id+":retry"); code != http.StatusConflict {
		t.Fatalf("retry of a succeeded task: %d", code)
	}
	if code, _ := e.call(http.MethodDelete, "/v1/tasks/"+id, keyAcme, nil, nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := e.task(keyAcme, id); code != http.StatusNotFound {
		t.Fatalf("get after delete: %d", code)
	}
}

func TestCancelWhileRunning(t *testing.T) {
	fn := newFnServer(t)
	b := newBlocking()
	fn.setHandler(b.handle)
	e := startEnv(t, fn, envOpts{})
	id := e.accept(keyAcme, "echo", `{}`)
	receive(t, b.started, "the call")
	e.waitState(keyAcme, id, tasks.Running)
	// A running task cannot be deleted.
	if code, _ := e.call(http.MethodDelete, "/v1/tasks/"+id, keyAcme, nil, nil, nil); code != http.StatusConflict {
		t.Fatalf("delete running: %d", code)
	}
	code, v := e.action(keyAcme, "/v1/tasks/"+id+":cancel")
	if code != 200 || v.State != tasks.Cancelled {
		t.Fatalf("cancel: %d %+v", code, v)
	}
	if got := receive(t, b.cancelled, "the call to be cancelled"); got != id {
		t.Fatalf("cancelled call %s", got)
	}
	// The message is acknowledged (not redelivered) and the task stays cancelled.
	eventually(t, "the queue to be empty", func() bool { return e.depth("t.acme") == 0 })
	if _, v := e.task(keyAcme, id); v.State != tasks.Cancelled || v.Attempts != 1 {
		t.Fatalf("after cancel: %+v", v)
	}
	if n := fn.callsOf(id); n != 1 {
		t.Fatalf("called %d times", n)
	}
	// Cancelling again is a conflict.
	if code, _ := e.action(keyAcme, "/v1/tasks/"+id+":cancel"); code != http.StatusConflict {
		t.Fatalf("second cancel: %d", code)
	}
}

func TestCancelWhileRetrying(t *testing.T) {
	fn := newFnServer(t)
	fn.setHandler(failing(100, http.StatusTooManyRequests, "30"))
	e := startEnv(t, fn, envOpts{})
	id := e.accept(keyAcme, "echo", `{}`)
	e.waitState(keyAcme, id, tasks.Retrying)
	if code, v := e.action(keyAcme, "/v1/tasks/"+id+":cancel"); code != 200 || v.State != tasks.Cancelled {
		t.Fatalf("cancel: %d %+v", code, v)
	}
	// The attempt waiting for its retry gives up at once: its worker is
	// free and its message acknowledged.
	eventually(t, "the attempt to end", func() bool { return e.svc.gate.inFlight("acme") == 0 && e.depth("t.acme") == 0 })
	if n := fn.callsOf(id); n != 1 {
		t.Fatalf("called %d times", n)
	}
}

func TestPauseAndResume(t *testing.T) {
	dir := t.TempDir()
	e := startEnv(t, nil, envOpts{dir: dir})
	var st FunctionState
	if code, _ := e.call(http.MethodPost, "/v1/functions/echo:pause", keyAcme, nil, nil, &st); code != 200 || !st.Paused {
		t.Fatalf("pause: %d %+v", code, st)
	}
	ids := []string{e.accept(keyAcme, "echo", `{}`), e.accept(keyAcme, "echo", `{}`)}
	for _, id := range ids {
		if _, v := e.task(keyAcme, id); v.State != tasks.Paused {
			t.Fatalf("submitted while paused: %+v", v)
		}
	}
	// Other functions run meanwhile.
	e.waitState(keyAcme, e.accept(keyAcme, "other", `{}`), tasks.Succeeded)
	// The pause survives a restart.
	e.shutdown()
	e = startEnv(t, e.fn, envOpts{dir: dir})
	ids = append(ids, e.accept(keyAcme, "echo", `{}`))
	for _, id := range ids {
		if _, v := e.task(keyAcme, id); v.State != tasks.Paused || e.fn.callsOf(id) != 0 {
			t.Fatalf("after restart: %+v", v)
		}
	}
	if code, _ := e.call(http.MethodPost, "/v1/functions/echo:resume", keyAcme, nil, nil, &st); code != 200 || st.Paused || st.Tasks != 3 {
		t.Fatalf("resume: %d %+v", code, st)
	}
	for _, id := range ids {
		if v := e.waitState(keyAcme, id, tasks.Succeeded); v.Attempts != 1 {
			t.Fatalf("resumed task %+v", v)
		}
	}
	if code, _ := e.call(http.MethodPost, "/v1/functions/echo:stop", keyAcme, nil, nil, nil); code != http.StatusNotFound {
		t.Fatalf("unknown function operation: %d", code)
	}
}

func TestPauseWhileRetrying(t *testing.T) {
	fn := newFnServer(t)
	// 429 + Retry-After delays this task's retry only (a 503 would pause
	// every call to the function).
	fn.setHandler(failing(100, http.StatusTooManyRequests, "30"))
	e := startEnv(t, fn, envOpts{})
	id := e.accept(keyAcme, "echo", `{}`)
	e.waitState(keyAcme, id, tasks.Retrying)
	var st FunctionState
	if code, _ := e.call(http.MethodPost, "/v1/functions/echo:pause", keyAcme, nil, nil, &st); code != 200 || st.Tasks != 1 {
		t.Fatalf("pause: %d %+v", code, st)
	}
	e.waitState(keyAcme, id, tasks.Paused)
	// The attempt gave its worker back; the message waits in the queue.
	eventually(t, "the attempt to end", func() bool { return e.svc.gate.inFlight("acme") == 0 })
	if e.depth("t.acme") != 1 {
		t.Fatal("the paused task's message left the queue")
	}
	fn.setHandler(nil)
	if code, _ := e.call(http.MethodPost, "/v1/functions/echo:resume", keyAcme, nil, nil, &st); code != 200 || st.Tasks != 1 {
		t.Fatalf("resume: %d %+v", code, st)
	}
	v := e.waitState(keyAcme, id, tasks.Succeeded)
	if v.Attempts != 2 {
		t.Fatalf("attempts %d, want 2 (one before the pause, one after)", v.Attempts)
	}
}

func TestExpiry(t *testing.T) {
	e := startEnv(t, nil, envOpts{})
	// "short" has maxEventAge 1s: a task held longer expires instead of running.
	e.call(http.MethodPost, "/v1/functions/short:pause", keyAcme, nil, nil, nil)
	id := e.accept(keyAcme, "short", `{}`)
	time.Sleep(1500 * time.Millisecond)
	e.call(http.MethodPost, "/v1/functions/short:resume", keyAcme, nil, nil, nil)
	v := e.waitState(keyAcme, id, tasks.Expired)
	if e.fn.callsOf(id) != 0 || v.Times.Finished == nil || v.Error == "" {
		t.Fatalf("expired task %+v", v)
	}
	// An expired task can be retried (a new run, received long ago: it
	// expires again unless its function's maxEventAge allows it).
	if code, r := e.action(keyAcme, "/v1/tasks/"+id+":retry"); code != 200 || r.State != tasks.Queued {
		t.Fatalf("retry: %d %+v", code, r)
	}
	e.waitState(keyAcme, id, tasks.Expired)
}

func TestBatchOperations(t *testing.T) {
	fn := newFnServer(t)
	fn.setHandler(failing(100, http.StatusBadRequest, ""))
	e := startEnv(t, fn, envOpts{})
	var failed []string
	for range 3 {
		failed = append(failed, e.accept(keyAcme, "other", `{}`))
	}
	for _, id := range failed {
		e.waitState(keyAcme, id, tasks.DeadLettered)
	}
	e.call(http.MethodPost, "/v1/functions/echo:pause", keyAcme, nil, nil, nil)
	paused := []string{e.accept(keyAcme, "echo", `{}`), e.accept(keyAcme, "echo", `{}`)}

	batch := func(body string) int {
		t.Helper()
		var br BatchResponse
		if code, _ := e.call(http.MethodPost, "/v1/tasks:batch", keyAcme, []byte(body), nil, &br); code != 200 {
			t.Fatalf("batch %s: %d", body, code)
		}
		return br.Changed
	}
	if n := batch(`{"op":"cancel","filter":{"function":"echo"}}`); n != 2 {
		t.Fatalf("batch cancel changed %d", n)
	}
	for _, id := range paused {
		e.waitState(keyAcme, id, tasks.Cancelled)
	}
	fn.setHandler(nil)
	if n := batch(`{"op":"retry","filter":{"function":"other","states":["dead-lettered"]}}`); n != 3 {
		t.Fatalf("batch retry changed %d", n)
	}
	for _, id := range failed {
		e.waitState(keyAcme, id, tasks.Succeeded)
	}
	if n := batch(`{"op":"delete","filter":{}}`); n != 5 {
		t.Fatalf("batch delete changed %d", n)
	}
	var page ListResponse
	if e.call(http.MethodGet, "/v1/tasks", keyAcme, nil, nil, &page); len(page.Tasks) != 0 {
		t.Fatalf("left after delete: %+v", page.Tasks)
	}
	var ae apiError
	if code, _ := e.call(http.MethodPost, "/v1/tasks:batch", keyAcme, []byte(`{"op":"explode"}`), nil, &ae); code != 400 {
		t.Fatalf("unknown op: %d", code)
	}
}

// TestSettlePaused: a task whose Create raced with a pause or a resume
// ends in the state the function's flag says.
func TestSettlePaused(t *testing.T) {
	e := startEnv(t, nil, envOpts{})
	// Let the service finish starting (a stop while it creates its queues
	// fails Run).
	e.waitState(keyAcme, e.accept(keyAcme, "other", `{}`), tasks.Succeeded)
	ctx := context.Background()
	fn := e.svc.fns[fnKey{"acme", "echo"}]
	fn.paused.Store(true) // as if paused after this task's Create read the flag
	queued := &tasks.Task{Tenant: "acme", Function: "echo"}
	if err := e.store.Create(ctx, queued); err != nil {
		t.Fatal(err)
	}
	e.svc.settlePaused(ctx, fn, queued)
	if queued.State != tasks.Paused || e.storedState(queued.ID) != tasks.Paused {
		t.Fatalf("queued while paused: %s, stored %s", queued.State, e.storedState(queued.ID))
	}
	fn.paused.Store(false) // as if resumed after that
	paused := &tasks.Task{Tenant: "acme", Function: "echo", State: tasks.Paused}
	if err := e.store.Create(ctx, paused); err != nil {
		t.Fatal(err)
	}
	e.svc.settlePaused(ctx, fn, paused)
	if paused.State != tasks.Queued || e.storedState(paused.ID) != tasks.Queued {
		t.Fatalf("paused while resumed: %s, stored %s", paused.State, e.storedState(paused.ID))
	}
	// A task already moved by someone else is left alone.
	done := &tasks.Task{Tenant: "acme", Function: "echo", State: tasks.Paused}
	if err := e.store.Create(ctx, done); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Transition(ctx, "acme", done.ID, tasks.Cancelled, nil); err != nil {
		t.Fatal(err)
	}
	e.svc.settlePaused(ctx, fn, done)
	if s := e.storedState(done.ID); s != tasks.Cancelled {
		t.Fatalf("a cancelled task became %s", s)
	}
}

func (e *env) storedState(id string) tasks.State {
	e.t.Helper()
	t, err := e.store.Get(context.Background(), "acme", id)
	if err != nil {
		e.t.Fatal(err)
	}
	return t.State
}
