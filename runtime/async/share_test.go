package async

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/tasks"
)

func TestSubmissionQuotas(t *testing.T) {
	t.Run("rate", func(t *testing.T) {
		e := startEnv(t, nil, envOpts{acmeQuotas: "{rate: 0.5, burst: 2}"})
		e.accept(keyAcme, "echo", `{}`)
		e.accept(keyAcme, "echo", `{}`)
		var out apiError
		code, h := e.call(http.MethodPost, "/v1/functions/echo/invocations", keyAcme, []byte(`{}`), http.Header{"Content-Type": {"application/json"}}, &out)
		ra, _ := strconv.Atoi(h.Get("Retry-After"))
		if code != http.StatusTooManyRequests || out.Code != CodeQuotaExceeded || ra < 1 {
			t.Fatalf("third submission: %d %+v Retry-After %q", code, out, h.Get("Retry-After"))
		}
		// Another tenant is not limited by acme's quota.
		e.accept(keyBeta, "echo", `{}`)
	})
	t.Run("queue depth", func(t *testing.T) {
		e := startEnv(t, nil, envOpts{acmeQuotas: "{maxQueueDepth: 2}"})
		e.call(http.MethodPost, "/v1/functions/echo:pause", keyAcme, nil, nil, nil)
		e.accept(keyAcme, "echo", `{}`)
		e.accept(keyAcme, "echo", `{}`)
		var out apiError
		code, h := e.call(http.MethodPost, "/v1/functions/echo/invocations", keyAcme, []byte(`{}`), http.Header{"Content-Type": {"application/json"}}, &out)
		if code != http.StatusTooManyRequests || out.Code != CodeQuotaExceeded || h.Get("Retry-After") == "" {
			t.Fatalf("over the depth quota: %d %+v", code, out)
		}
	})
}

func TestMaxConcurrencyQuota(t *testing.T) {
	fn := newFnServer(t)
	b := newBlocking()
	fn.setHandler(b.handle)
	e := startEnv(t, fn, envOpts{acmeQuotas: "{maxConcurrency: 1}"})
	var ids []string
	for range 4 {
		ids = append(ids, e.accept(keyAcme, "echo", `{}`))
	}
	for range ids {
		receive(t, b.started, "a call")
		b.release <- struct{}{}
	}
	for _, id := range ids {
		e.waitState(keyAcme, id, tasks.Succeeded)
	}
	if m := b.maxInFlight(); m != 1 {
		t.Fatalf("%d calls at once, quota 1", m)
	}
}

// TestFairShare is B4 in miniature: tenant acme's function holds every
// call; once acme holds every worker, beta's tasks must still run as soon
// as acme gives back the workers above its share, while acme has more
// tasks waiting.
func TestFairShare(t *testing.T) {
	fn := newFnServer(t)
	b := newBlocking()
	fn.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/beta" {
			answer(w, r, nil)
			return
		}
		b.handle(w, r)
	})
	e := startEnv(t, fn, envOpts{tweak: func(c *Config) { c.Workers = 4 }})
	for range 8 {
		e.accept(keyAcme, "echo", `{}`)
	}
	for range 4 {
		receive(t, b.started, "acme's calls")
	}
	eventually(t, "acme to hold every worker", func() bool { return e.svc.gate.inFlight("acme") == 4 })
	var betas []string
	for range 4 {
		betas = append(betas, e.accept(keyBeta, "echo", `{}`))
	}
	// Two of acme's calls end: its share is now 2 of 4, so its four waiting
	// tasks must leave the two freed workers to beta.
	b.release <- struct{}{}
	b.release <- struct{}{}
	// Without the shares, acme's waiting tasks (waiting longer) could take
	// the freed workers and beta would wait for acme's calls to end.
	for _, id := range betas {
		e.waitState(keyBeta, id, tasks.Succeeded)
	}
	close(b.release)
}

// storedTask creates a queued task directly in the store, as the invoke
// API does before publishing it.
func (e *env) storedTask(function, instance string) *tasks.Task {
	e.t.Helper()
	ev := cloudevents.NewEvent()
	id, _ := tasks.NewID()
	ev.SetID(id)
	ev.SetType(InvocationType)
	ev.SetSource("/v1/functions/" + function)
	_ = ev.SetData("application/json", map[string]int{"n": 1})
	raw, err := json.Marshal(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	t := &tasks.Task{ID: id, Tenant: "acme", Function: function, Event: raw, Labels: map[string]string{LabelInstance: instance}}
	if err := e.store.Create(context.Background(), t); err != nil {
		e.t.Fatal(err)
	}
	return t
}

func TestReconcilerPublishesLostTasks(t *testing.T) {
	e := startEnv(t, nil, envOpts{})
	ctx := context.Background()
	lost := e.storedTask("echo", "test")         // stored, never published: a crash in between
	foreign := e.storedTask("echo", "other")     // queued by another instance, which holds its message
	published := e.accept(keyAcme, "echo", "{}") // published: the reconciler must not duplicate it
	e.waitState(keyAcme, published, tasks.Succeeded)
	window := func() (time.Time, time.Time) { return time.Time{}, time.Now().Add(time.Hour) }
	lo, hi := window()
	if err := e.svc.reconcile(ctx, lo, hi); err != nil {
		t.Fatal(err)
	}
	e.waitState(keyAcme, lost.ID, tasks.Succeeded)
	if _, v := e.task(keyAcme, foreign.ID); v.State != tasks.Queued {
		t.Fatalf("another instance's task was published: %+v", v)
	}
	// A second pass finds the message of every queued task in the queue's
	// duplicate window: nothing runs twice.
	lost2 := e.storedTask("other", "test")
	for range 2 {
		if err := e.svc.reconcile(ctx, lo, hi); err != nil {
			t.Fatal(err)
		}
	}
	e.waitState(keyAcme, lost2.ID, tasks.Succeeded)
	for _, id := range []string{lost.ID, lost2.ID, published} {
		if n := e.fn.callsOf(id); n != 1 {
			t.Fatalf("task %s called %d times", id, n)
		}
	}
	// The pass bound persists across restarts.
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := writeReconciled(e.dir, at); err != nil || !readReconciled(e.dir).Equal(at) {
		t.Fatalf("reconcile bound: %v %v", readReconciled(e.dir), err)
	}
}

// TestOrphanedTaskTakenOver: a task left running by a dispatcher that died
// (its message redelivered by the queue) is run again as a new attempt.
func TestOrphanedTaskTakenOver(t *testing.T) {
	e := startEnv(t, nil, envOpts{})
	ctx := context.Background()
	e.call(http.MethodPost, "/v1/functions/echo:pause", keyAcme, nil, nil, nil)
	orphan := e.storedTask("echo", "test")
	// A dead dispatcher had claimed it.
	if _, err := e.store.Transition(ctx, "acme", orphan.ID, tasks.Running, nil); err != nil {
		t.Fatal(err)
	}
	e.call(http.MethodPost, "/v1/functions/echo:resume", keyAcme, nil, nil, nil)
	if _, err := e.svc.publishTask(ctx, orphan, nil); err != nil {
		t.Fatal(err)
	}
	v := e.waitState(keyAcme, orphan.ID, tasks.Succeeded)
	if v.Attempts != 2 {
		t.Fatalf("attempts %d, want 2 (the lost one and the takeover)", v.Attempts)
	}
}

// TestStopAndRestart: tasks accepted before a stop all complete after a
// restart on the same data directory; attempts cut short by the stop are
// taken over.
func TestStopAndRestart(t *testing.T) {
	dir := t.TempDir()
	fn := newFnServer(t)
	b := newBlocking()
	fn.setHandler(b.handle)
	// Messages held when the queue stopped come back AckWait after the
	// restart (the embedded server does not keep the readers' naks).
	qc := queue.Config{AckWait: 2 * time.Second}
	e := startEnv(t, fn, envOpts{dir: dir, queueCfg: qc, tweak: func(c *Config) { c.DrainTimeout = 200 * time.Millisecond }})
	var ids []string
	for range 20 {
		ids = append(ids, e.accept(keyAcme, "echo", `{}`))
	}
	receive(t, b.started, "a call")
	e.shutdown()
	fn.setHandler(nil)
	e = startEnv(t, fn, envOpts{dir: dir, queueCfg: qc})
	interrupted := 0
	for _, id := range ids {
		v := e.waitState(keyAcme, id, tasks.Succeeded)
		if v.Attempts > 1 {
			interrupted++
		}
	}
	if interrupted == 0 {
		t.Fatal("no attempt was interrupted by the stop")
	}
}

// TestRunningElsewhereNotTakenOver: on a shared queue, a running task whose
// message reaches an instance that does not run it (a second copy) is left
// alone while its attempt may still be calling the function on another
// instance, and taken over once the call's timeout and the grace passed.
func TestRunningElsewhereNotTakenOver(t *testing.T) {
	var offset atomic.Int64 // the service's clock runs this far ahead
	e := startEnv(t, nil, envOpts{tweak: func(c *Config) {
		c.SharedQueue = true
		c.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	}})
	ctx := context.Background()
	e.call(http.MethodPost, "/v1/functions/echo:pause", keyAcme, nil, nil, nil)
	running := e.storedTask("echo", "test")
	// Another instance claimed it just now and is calling the function.
	if _, err := e.store.Transition(ctx, "acme", running.ID, tasks.Running, nil); err != nil {
		t.Fatal(err)
	}
	e.call(http.MethodPost, "/v1/functions/echo:resume", keyAcme, nil, nil, nil)
	if _, err := e.svc.publishTask(ctx, running, nil); err != nil {
		t.Fatal(err)
	}
	deferred := map[string]string{"tenant": "acme", "result": metrics.TakeoverDeferred}
	eventually(t, "the takeover deferred", func() bool {
		return metricValue(t, e.cfg.Metrics.Gatherer(), "sluice_task_takeovers_total", deferred) >= 1
	})
	if _, v := e.task(keyAcme, running.ID); v.State != tasks.Running || v.Attempts != 1 {
		t.Fatalf("while the other attempt may run: %s after %d attempts, want running after 1", v.State, v.Attempts)
	}
	e.fn.mu.Lock()
	calls := len(e.fn.calls)
	e.fn.mu.Unlock()
	if calls != 0 {
		t.Fatalf("the function was called while another instance ran the task")
	}
	// The other attempt's call has timed out by now.
	offset.Store(int64(pipelines.DefaultFunctionTimeout + takeoverGrace + time.Minute))
	v := e.waitState(keyAcme, running.ID, tasks.Succeeded)
	if v.Attempts != 2 {
		t.Fatalf("attempts %d, want 2 (the other instance's and the takeover)", v.Attempts)
	}
	taken := map[string]string{"tenant": "acme", "result": metrics.TakeoverTaken}
	if got := metricValue(t, e.cfg.Metrics.Gatherer(), "sluice_task_takeovers_total", taken); got != 1 {
		t.Fatalf("takeovers taken = %v, want 1", got)
	}
}

// TestTakeoverKeepsRetryBudget: a task taken over after its dispatcher
// stopped continues its retry budget (echo allows 3 attempts) instead of
// starting a fresh one: having used all three, it gets the one call the
// takeover owes it and then fails.
func TestTakeoverKeepsRetryBudget(t *testing.T) {
	e := startEnv(t, nil, envOpts{})
	e.fn.setHandler(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	ctx := context.Background()
	e.call(http.MethodPost, "/v1/functions/echo:pause", keyAcme, nil, nil, nil)
	orphan := e.storedTask("echo", "test")
	// A dead dispatcher had made three attempts, the last one interrupted.
	for i := range 3 {
		if i > 0 {
			if _, err := e.store.Transition(ctx, "acme", orphan.ID, tasks.Retrying, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.store.Transition(ctx, "acme", orphan.ID, tasks.Running, nil); err != nil {
			t.Fatal(err)
		}
	}
	e.call(http.MethodPost, "/v1/functions/echo:resume", keyAcme, nil, nil, nil)
	if _, err := e.svc.publishTask(ctx, orphan, nil); err != nil {
		t.Fatal(err)
	}
	v := e.waitState(keyAcme, orphan.ID, tasks.Failed)
	if v.Attempts != 4 {
		t.Fatalf("attempts %d, want 4 (three before the takeover, one after)", v.Attempts)
	}
	if n := e.fn.callsOf(orphan.ID); n != 1 {
		t.Fatalf("the function was called %d times after the takeover, want 1", n)
	}
}
