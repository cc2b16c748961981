// Package storetest is the conformance suite every tasks.Store passes: the
// whole state machine (every legal move and every illegal one), the
// effects on timestamps and counters, cancel/pause/resume/retry/expire,
// idempotency keys and the dedup window, tenant isolation, pagination under
// concurrent inserts, concurrent transitions of one task, batches and counts.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/tasks"
)

// Factory opens a new, empty store with the given options for one test.
// The suite closes it (Close may be called more than once).
type Factory func(t *testing.T, o tasks.Options) tasks.Store

// Purger is the key purge every store here exposes besides tasks.Store (its
// background sweep calls it); the suite requires it.
type Purger interface {
	PurgeExpiredKeys(ctx context.Context) (int, error)
}

// Clock is a settable clock for Options.Now. Safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock reading start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// dedupWindow is the window the suite's stores are opened with.
const dedupWindow = time.Hour

// Run runs the suite against stores from open.
func Run(t *testing.T, open Factory) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"Create", testCreate},
		{"EveryTransition", testEveryTransition},
		{"Timestamps", testTimestamps},
		{"Mutate", testMutate},
		{"CancelQueued", testCancelQueued},
		{"CancelRunning", testCancelRunning},
		{"PauseResume", testPauseResume},
		{"PauseFlags", testPauseFlags},
		{"Retry", testRetry},
		{"Expire", testExpire},
		{"Duplicate", testDuplicate},
		{"DedupWindow", testDedupWindow},
		{"TaskDedupWindow", testTaskDedupWindow},
		{"DuplicateConcurrent", testDuplicateConcurrent},
		{"TenantIsolation", testTenantIsolation},
		{"ListFilters", testListFilters},
		{"ListArguments", testListArguments},
		{"PaginationUnderInserts", testPaginationUnderInserts},
		{"ConcurrentTransition", testConcurrentTransition},
		{"CountByState", testCountByState},
		{"Delete", testDelete},
		{"BatchDelete", testBatchDelete},
		{"BatchArguments", testBatchArguments},
		{"Close", testClose},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := NewClock(time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC))
			s := open(t, tasks.Options{Now: clock.Now, DedupWindow: dedupWindow, SweepInterval: time.Hour})
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, &env{t: t, s: s, clock: clock, ctx: t.Context()})
		})
	}
}

type env struct {
	t     *testing.T
	s     tasks.Store
	clock *Clock
	ctx   context.Context
}

// create creates a task of tenant/function, applying mods first.
func (e *env) create(tenant, function string, mods ...func(*tasks.Task)) *tasks.Task {
	e.t.Helper()
	t := &tasks.Task{Tenant: tenant, Function: function}
	for _, m := range mods {
		m(t)
	}
	if err := e.s.Create(e.ctx, t); err != nil {
		e.t.Fatalf("Create(%s/%s): %v", tenant, function, err)
	}
	return t
}

// move transitions t through the given states, failing the test on error.
func (e *env) move(t *tasks.Task, path ...tasks.State) *tasks.Task {
	e.t.Helper()
	for _, to := range path {
		next, err := e.s.Transition(e.ctx, t.Tenant, t.ID, to, nil)
		if err != nil {
			e.t.Fatalf("Transition(%s: %s → %s): %v", t.ID, t.State, to, err)
		}
		t = next
	}
	return t
}

func (e *env) get(tenant, id string) *tasks.Task {
	e.t.Helper()
	t, err := e.s.Get(e.ctx, tenant, id)
	if err != nil {
		e.t.Fatalf("Get(%s, %s): %v", tenant, id, err)
	}
	return t
}

func (e *env) state(tenant, id string) tasks.State { e.t.Helper(); return e.get(tenant, id).State }

func (e *env) batch(q tasks.Query, op tasks.Op) int {
	e.t.Helper()
	n, err := e.s.Batch(e.ctx, q, op)
	if err != nil {
		e.t.Fatalf("Batch(%s): %v", op, err)
	}
	return n
}

// listAll pages through q and returns the ids in order.
func (e *env) listAll(q tasks.Query) []string {
	e.t.Helper()
	var ids []string
	for i := 0; ; i++ {
		if i > 10000 {
			e.t.Fatal("List: cursor does not end")
		}
		p, err := e.s.List(e.ctx, q)
		if err != nil {
			e.t.Fatalf("List(%+v): %v", q, err)
		}
		for _, t := range p.Tasks {
			ids = append(ids, t.ID)
		}
		if p.Next == "" {
			return ids
		}
		q.Cursor = p.Next
	}
}

// pathTo reaches each state from a new task. Duplicate is reached by Create.
func pathTo(s tasks.State) []tasks.State {
	switch s {
	case tasks.Queued:
		return nil
	case tasks.Running:
		return []tasks.State{tasks.Running}
	case tasks.Retrying:
		return []tasks.State{tasks.Running, tasks.Retrying}
	case tasks.Succeeded:
		return []tasks.State{tasks.Running, tasks.Succeeded}
	case tasks.Failed:
		return []tasks.State{tasks.Running, tasks.Failed}
	case tasks.DeadLettered:
		return []tasks.State{tasks.Running, tasks.Failed, tasks.DeadLettered}
	case tasks.Paused:
		return []tasks.State{tasks.Paused}
	case tasks.Cancelled:
		return []tasks.State{tasks.Cancelled}
	case tasks.Expired:
		return []tasks.State{tasks.Expired}
	}
	panic("storetest: no path to " + s)
}

// reach returns a new task of tenant/function in state s.
func (e *env) reach(tenant, function string, s tasks.State) *tasks.Task {
	e.t.Helper()
	if s == tasks.Duplicate {
		key := fmt.Sprintf("dup-%d", e.clock.Now().UnixNano())
		e.create(tenant, function, func(t *tasks.Task) { t.IdempotencyKey = key })
		d := &tasks.Task{Tenant: tenant, Function: function, IdempotencyKey: key}
		if err := e.s.Create(e.ctx, d); !errors.Is(err, tasks.ErrDuplicate) {
			e.t.Fatalf("second Create with key %q: got %v, want ErrDuplicate", key, err)
		}
		e.clock.Advance(time.Microsecond) // a fresh key next time
		return e.get(tenant, d.ID)
	}
	return e.move(e.create(tenant, function), pathTo(s)...)
}

// normalized returns a copy of t that compares with reflect.DeepEqual
// across stores: empty byte slices and maps as nil, times re-built from
// their microseconds.
func normalized(t *tasks.Task) *tasks.Task {
	c := t.Clone()
	c.DedupWindow = 0 // an input to Create, not kept
	if len(c.Event) == 0 {
		c.Event = nil
	}
	if len(c.Result) == 0 {
		c.Result = nil
	}
	if len(c.Labels) == 0 {
		c.Labels = nil
	}
	c.Times.Received = time.UnixMicro(c.Times.Received.UnixMicro()).UTC()
	for _, p := range []**time.Time{&c.Times.Queued, &c.Times.Dispatched, &c.Times.Started, &c.Times.Finished, &c.Times.Delivered} {
		if *p != nil {
			v := time.UnixMicro((*p).UnixMicro()).UTC()
			*p = &v
		}
	}
	return c
}

func sameTask(t *testing.T, what string, got, want *tasks.Task) {
	t.Helper()
	if g, w := normalized(got), normalized(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got  %s\n want %s", what, show(g), show(w))
	}
}

func show(t *tasks.Task) string {
	s := fmt.Sprintf("%+v", *t)
	for _, p := range []*time.Time{t.Times.Queued, t.Times.Dispatched, t.Times.Started, t.Times.Finished, t.Times.Delivered} {
		if p != nil {
			s += " " + p.Format(time.RFC3339Nano)
		} else {
			s += " nil"
		}
	}
	return s
}

func stamp(t time.Time) *time.Time {
	v := tasks.Norm(t)
	return &v
}

func wantTransitionError(t *testing.T, err error, from, to tasks.State) {
	t.Helper()
	var te *tasks.TransitionError
	if !errors.Is(err, tasks.ErrInvalidTransition) || !errors.As(err, &te) {
		t.Fatalf("got %v, want a *TransitionError", err)
	}
	if te.From != from || te.To != to {
		t.Fatalf("TransitionError{From: %s, To: %s}, want {%s, %s}", te.From, te.To, from, to)
	}
}

func testCreate(t *testing.T, e *env) {
	now := e.clock.Now()
	in := &tasks.Task{
		Tenant: "acme", Function: "resize",
		Event:  []byte(`{"specversion":"1.0","id":"e1","source":"s","type":"t"}`),
		Labels: map[string]string{"pipeline": "images"},
	}
	if err := e.s.Create(e.ctx, in); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if in.ID == "" || in.State != tasks.Queued || in.Version != 1 || in.Attempts != 0 {
		t.Fatalf("Create filled in %+v", in)
	}
	want := &tasks.Task{
		ID: in.ID, Tenant: "acme", Function: "resize", State: tasks.Queued, Version: 1,
		Event: in.Event, Labels: map[string]string{"pipeline": "images"},
		Times: tasks.Timestamps{Received: tasks.Norm(now), Queued: stamp(now)},
	}
	sameTask(t, "Create's task", in, want)
	sameTask(t, "Get", e.get("acme", in.ID), want)

	// Caller-chosen id, received time and initial state paused.
	past := now.Add(-time.Hour)
	p := e.create("acme", "resize", func(t *tasks.Task) {
		t.ID, t.State, t.Times.Received = "my-id", tasks.Paused, past
	})
	got := e.get("acme", "my-id")
	if got.State != tasks.Paused || !got.Times.Received.Equal(tasks.Norm(past)) || got.Times.Queued == nil {
		t.Errorf("paused create: got %s", show(got))
	}
	sameTask(t, "Create's paused task", p, got)

	// The same id again: ErrExists for this tenant, fine for another.
	err := e.s.Create(e.ctx, &tasks.Task{ID: "my-id", Tenant: "acme", Function: "resize"})
	if !errors.Is(err, tasks.ErrExists) {
		t.Errorf("Create with an existing id: got %v, want ErrExists", err)
	}
	e.create("other", "resize", func(t *tasks.Task) { t.ID = "my-id" })

	for _, bad := range []tasks.Task{
		{Function: "f"},
		{Tenant: "acme"},
		{Tenant: "acme", Function: "f", State: tasks.Running},
		{Tenant: "acme", Function: "f", State: tasks.Duplicate},
		{Tenant: "acme", Function: "f", State: "bogus"},
		{Tenant: strings.Repeat("x", tasks.MaxNameLen+1), Function: "f"},
		{Tenant: "acme", Function: "f", IdempotencyKey: strings.Repeat("k", tasks.MaxKeyLen+1)},
	} {
		if err := e.s.Create(e.ctx, &bad); !errors.Is(err, tasks.ErrInvalid) {
			t.Errorf("Create(%+v): got %v, want ErrInvalid", bad, err)
		}
	}
}

func testEveryTransition(t *testing.T, e *env) {
	for _, from := range tasks.States() {
		for _, to := range tasks.States() {
			cur := e.reach("acme", "f", from)
			next, err := e.s.Transition(e.ctx, "acme", cur.ID, to, nil)
			if tasks.Allowed(from, to) {
				if err != nil {
					t.Errorf("%s → %s: %v", from, to, err)
					continue
				}
				if next.State != to || next.Version != cur.Version+1 {
					t.Errorf("%s → %s: got state %s version %d (was %d)", from, to, next.State, next.Version, cur.Version)
				}
				sameTask(t, fmt.Sprintf("%s → %s: Get after", from, to), e.get("acme", cur.ID), next)
				continue
			}
			var te *tasks.TransitionError
			if !errors.As(err, &te) || !errors.Is(err, tasks.ErrInvalidTransition) {
				t.Errorf("%s → %s: got %v, want a *TransitionError", from, to, err)
				continue
			}
			if *te != (tasks.TransitionError{ID: cur.ID, From: from, To: to}) {
				t.Errorf("%s → %s: got %+v", from, to, *te)
			}
			sameTask(t, fmt.Sprintf("%s → %s refused: Get after", from, to), e.get("acme", cur.ID), cur)
		}
	}
	if _, err := e.s.Transition(e.ctx, "acme", "no-such-task", tasks.Running, nil); !errors.Is(err, tasks.ErrNotFound) {
		t.Errorf("Transition of a missing task: got %v, want ErrNotFound", err)
	}
}

func testTimestamps(t *testing.T, e *env) {
	t0 := e.clock.Now()
	task := e.create("acme", "f")
	step := func(to tasks.State, mutate func(*tasks.Task) error) (time.Time, *tasks.Task) {
		t.Helper()
		e.clock.Advance(time.Second)
		next, err := e.s.Transition(e.ctx, "acme", task.ID, to, mutate)
		if err != nil {
			t.Fatalf("→ %s: %v", to, err)
		}
		sameTask(t, "Get after → "+string(to), e.get("acme", task.ID), next)
		return e.clock.Now(), next
	}
	want := &tasks.Task{ID: task.ID, Tenant: "acme", Function: "f", State: tasks.Queued, Version: 1,
		Times: tasks.Timestamps{Received: tasks.Norm(t0), Queued: stamp(t0)}}
	sameTask(t, "created", task, want)

	t1, got := step(tasks.Running, nil)
	want.State, want.Version, want.Attempts = tasks.Running, 2, 1
	want.Times.Dispatched, want.Times.Started = stamp(t1), stamp(t1)
	sameTask(t, "running", got, want)

	_, got = step(tasks.Retrying, func(t *tasks.Task) error { t.Error, t.LastStatus = "503 from function", 503; return nil })
	want.State, want.Version, want.Error, want.LastStatus = tasks.Retrying, 3, "503 from function", 503
	sameTask(t, "retrying", got, want)

	// The dispatcher may stamp Dispatched itself (when it pulled the task).
	var pulled time.Time
	t3, got := step(tasks.Running, func(t *tasks.Task) error {
		pulled = e.clock.Now().Add(-300 * time.Millisecond)
		t.Times.Dispatched = &pulled
		return nil
	})
	want.State, want.Version, want.Attempts = tasks.Running, 4, 2
	want.Times.Dispatched, want.Times.Started = stamp(pulled), stamp(t3)
	sameTask(t, "running again", got, want)

	var delivered time.Time
	t4, got := step(tasks.Succeeded, func(t *tasks.Task) error {
		delivered = e.clock.Now()
		t.Result, t.LastStatus, t.Error, t.Times.Delivered = []byte(`{"ok":true}`), 200, "", &delivered
		return nil
	})
	want.State, want.Version, want.Result, want.LastStatus, want.Error = tasks.Succeeded, 5, []byte(`{"ok":true}`), 200, ""
	want.Times.Finished, want.Times.Delivered = stamp(t4), stamp(delivered)
	sameTask(t, "succeeded", got, want)

	// The failure path: Finished at failed, Delivered at dead-lettered.
	task = e.create("acme", "f")
	e.move(task, tasks.Running)
	tf, got := step(tasks.Failed, nil)
	if got.Times.Finished == nil || !got.Times.Finished.Equal(tasks.Norm(tf)) || got.Times.Delivered != nil {
		t.Errorf("failed: %s", show(got))
	}
	td, got := step(tasks.DeadLettered, nil)
	if !got.Times.Finished.Equal(tasks.Norm(tf)) || got.Times.Delivered == nil || !got.Times.Delivered.Equal(tasks.Norm(td)) {
		t.Errorf("dead-lettered: %s", show(got))
	}

	// A retry starts a new run: later stamps and the outcome cleared.
	tq, got := step(tasks.Queued, nil)
	if got.Attempts != 0 || got.Retries != 1 || !got.Times.Queued.Equal(tasks.Norm(tq)) ||
		got.Times.Dispatched != nil || got.Times.Started != nil || got.Times.Finished != nil || got.Times.Delivered != nil ||
		got.Error != "" || got.LastStatus != 0 || got.Result != nil {
		t.Errorf("retried: %s", show(got))
	}
	_, got = step(tasks.Running, nil)
	if got.Attempts != 1 || got.Retries != 1 {
		t.Errorf("running after a retry: attempts %d retries %d, want 1 1", got.Attempts, got.Retries)
	}
	_, got = step(tasks.Cancelled, nil)
	if got.Times.Finished == nil {
		t.Errorf("cancelled without Finished: %s", show(got))
	}
}

func testMutate(t *testing.T, e *env) {
	task := e.create("acme", "f", func(t *tasks.Task) { t.IdempotencyKey = "k" })
	// Store-owned fields cannot be changed by mutate.
	got, err := e.s.Transition(e.ctx, "acme", task.ID, tasks.Running, func(m *tasks.Task) error {
		if m.State != tasks.Running || m.Attempts != 1 || m.Version != 1 {
			t.Errorf("mutate sees state %s attempts %d version %d, want running 1 1", m.State, m.Attempts, m.Version)
		}
		m.ID, m.Tenant, m.Function, m.State = "x", "other", "g", tasks.Succeeded
		m.Attempts, m.Retries, m.IdempotencyKey, m.DuplicateOf, m.Version = 7, 7, "k2", "y", 99
		m.Times.Received = time.Unix(0, 0)
		m.Labels = map[string]string{"attempt": "1"}
		return nil
	})
	if err != nil {
		t.Fatalf("Transition: %v", err)
	}
	want := task.Clone()
	want.State, want.Attempts, want.Version, want.Labels = tasks.Running, 1, 2, map[string]string{"attempt": "1"}
	want.Times.Dispatched, want.Times.Started = stamp(e.clock.Now()), stamp(e.clock.Now())
	sameTask(t, "after mutate", got, want)
	sameTask(t, "Get after mutate", e.get("acme", task.ID), want)

	// An error from mutate aborts the transition and is returned.
	stale := errors.New("stale attempt")
	_, err = e.s.Transition(e.ctx, "acme", task.ID, tasks.Succeeded, func(*tasks.Task) error { return stale })
	if !errors.Is(err, stale) {
		t.Fatalf("mutate error: got %v, want %v", err, stale)
	}
	sameTask(t, "after an aborted transition", e.get("acme", task.ID), want)
}

func testCancelQueued(t *testing.T, e *env) {
	task := e.create("acme", "f")
	e.clock.Advance(time.Second)
	got := e.move(task, tasks.Cancelled)
	if got.Times.Finished == nil || !got.Times.Finished.Equal(tasks.Norm(e.clock.Now())) {
		t.Errorf("cancelled: Finished %v", got.Times.Finished)
	}
	// A dispatcher that pulls the task later learns it was cancelled.
	_, err := e.s.Transition(e.ctx, "acme", task.ID, tasks.Running, nil)
	wantTransitionError(t, err, tasks.Cancelled, tasks.Running)
	if n := e.batch(tasks.Query{Tenant: "acme"}, tasks.OpCancel); n != 0 {
		t.Errorf("cancelling a cancelled task changed %d", n)
	}
}

func testCancelRunning(t *testing.T, e *env) {
	task := e.move(e.create("acme", "f"), tasks.Running)
	if n := e.batch(tasks.Query{Tenant: "acme", Function: "f"}, tasks.OpCancel); n != 1 {
		t.Fatalf("Batch cancel: %d, want 1", n)
	}
	if s := e.state("acme", task.ID); s != tasks.Cancelled {
		t.Fatalf("state after cancel while running: %s", s)
	}
	// The in-flight attempt returns: its result is refused, From says why.
	_, err := e.s.Transition(e.ctx, "acme", task.ID, tasks.Succeeded, func(t *tasks.Task) error {
		t.Result = []byte("late")
		return nil
	})
	wantTransitionError(t, err, tasks.Cancelled, tasks.Succeeded)
	_, err = e.s.Transition(e.ctx, "acme", task.ID, tasks.Retrying, nil)
	wantTransitionError(t, err, tasks.Cancelled, tasks.Retrying)
	if got := e.get("acme", task.ID); got.Result != nil || got.State != tasks.Cancelled {
		t.Errorf("after the late result: %s", show(got))
	}
}

func testPauseResume(t *testing.T, e *env) {
	queued := e.create("acme", "f")
	retrying := e.reach("acme", "f", tasks.Retrying)
	running := e.reach("acme", "f", tasks.Running)
	done := e.reach("acme", "f", tasks.Succeeded)
	otherFn := e.create("acme", "g")
	otherTenant := e.create("globex", "f")

	if n := e.batch(tasks.Query{Tenant: "acme", Function: "f"}, tasks.OpPause); n != 2 {
		t.Fatalf("pause: %d tasks, want 2", n)
	}
	for _, c := range []struct {
		task *tasks.Task
		want tasks.State
	}{
		{queued, tasks.Paused}, {retrying, tasks.Paused}, {running, tasks.Running}, {done, tasks.Succeeded},
		{otherFn, tasks.Queued}, {otherTenant, tasks.Queued},
	} {
		if s := e.state(c.task.Tenant, c.task.ID); s != c.want {
			t.Errorf("after pause: %s/%s is %s, want %s", c.task.Function, c.task.ID, s, c.want)
		}
	}
	// A dispatcher holding a paused task's message must not run it.
	_, err := e.s.Transition(e.ctx, "acme", queued.ID, tasks.Running, nil)
	wantTransitionError(t, err, tasks.Paused, tasks.Running)
	_, err = e.s.Transition(e.ctx, "acme", retrying.ID, tasks.Running, nil)
	wantTransitionError(t, err, tasks.Paused, tasks.Running)
	// The running attempt goes on; its retry is paused by the next batch.
	e.move(running, tasks.Retrying)
	if n := e.batch(tasks.Query{Tenant: "acme", Function: "f", States: []tasks.State{tasks.Retrying}}, tasks.OpPause); n != 1 {
		t.Errorf("pause of the retrying task: %d, want 1", n)
	}

	e.clock.Advance(time.Minute)
	if n := e.batch(tasks.Query{Tenant: "acme", Function: "f"}, tasks.OpResume); n != 3 {
		t.Fatalf("resume: %d tasks, want 3", n)
	}
	for _, task := range []*tasks.Task{queued, retrying, running} {
		got := e.get("acme", task.ID)
		if got.State != tasks.Queued || !got.Times.Queued.Equal(tasks.Norm(e.clock.Now())) {
			t.Errorf("resumed: %s", show(got))
		}
		if got.Attempts != task.Attempts {
			t.Errorf("resume changed attempts: %d → %d", task.Attempts, got.Attempts)
		}
	}
	if n := e.batch(tasks.Query{Tenant: "acme"}, tasks.OpResume); n != 0 {
		t.Errorf("resume with nothing paused changed %d", n)
	}
}

// testPauseFlags: functions' pause flags are kept per tenant, setting one
// twice is harmless, and a flag moves no task.
func testPauseFlags(t *testing.T, e *env) {
	paused := func(tenant string, want ...string) {
		t.Helper()
		got, err := e.s.PausedFunctions(e.ctx, tenant)
		if err != nil {
			t.Fatalf("PausedFunctions(%s): %v", tenant, err)
		}
		if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Fatalf("PausedFunctions(%s) = %q, want %q", tenant, got, want)
		}
	}
	set := func(tenant, fn string, p bool) {
		t.Helper()
		if err := e.s.SetPaused(e.ctx, tenant, fn, p); err != nil {
			t.Fatalf("SetPaused(%s, %s, %v): %v", tenant, fn, p, err)
		}
	}
	paused("acme")
	queued := e.create("acme", "g")
	set("acme", "g", true)
	set("acme", "f", true)
	set("acme", "f", true)
	set("beta", "f", true)
	paused("acme", "f", "g")
	paused("beta", "f")
	paused("nobody")
	if s := e.state("acme", queued.ID); s != tasks.Queued {
		t.Errorf("a flag moved a task to %s", s)
	}
	set("acme", "f", false)
	set("acme", "f", false)
	set("acme", "never-paused", false)
	paused("acme", "g")
	paused("beta", "f")
	set("acme", "g", false)
	paused("acme")
	for _, bad := range [][2]string{{"", "f"}, {"acme", ""}} {
		if err := e.s.SetPaused(e.ctx, bad[0], bad[1], true); !errors.Is(err, tasks.ErrInvalid) {
			t.Errorf("SetPaused(%q, %q): got %v, want ErrInvalid", bad[0], bad[1], err)
		}
	}
	if _, err := e.s.PausedFunctions(e.ctx, ""); !errors.Is(err, tasks.ErrInvalid) {
		t.Errorf("PausedFunctions(\"\"): got %v, want ErrInvalid", err)
	}
}

func testRetry(t *testing.T, e *env) {
	var retryable []*tasks.Task
	for _, s := range []tasks.State{tasks.Failed, tasks.DeadLettered, tasks.Cancelled, tasks.Expired} {
		retryable = append(retryable, e.reach("acme", "f", s))
	}
	var others []*tasks.Task
	for _, s := range []tasks.State{tasks.Queued, tasks.Running, tasks.Retrying, tasks.Succeeded, tasks.Paused, tasks.Duplicate} {
		others = append(others, e.reach("acme", "f", s))
	}
	e.clock.Advance(time.Second)
	if n := e.batch(tasks.Query{Tenant: "acme"}, tasks.OpRetry); n != len(retryable) {
		t.Fatalf("retry: %d tasks, want %d", n, len(retryable))
	}
	for _, task := range retryable {
		got := e.get("acme", task.ID)
		if got.State != tasks.Queued || got.Attempts != 0 || got.Retries != 1 || got.Version != task.Version+1 ||
			!got.Times.Queued.Equal(tasks.Norm(e.clock.Now())) || got.Times.Finished != nil {
			t.Errorf("retried %s: %s", task.State, show(got))
		}
	}
	for _, task := range others {
		sameTask(t, "not retried "+string(task.State), e.get("acme", task.ID), task)
	}
	// A retried task runs again with a fresh attempt count.
	got := e.move(e.get("acme", retryable[0].ID), tasks.Running, tasks.Retrying, tasks.Running, tasks.Failed, tasks.Queued)
	if got.Attempts != 0 || got.Retries != 2 {
		t.Errorf("second retry: attempts %d retries %d, want 0 2", got.Attempts, got.Retries)
	}
}

func testExpire(t *testing.T, e *env) {
	old := []*tasks.Task{
		e.create("acme", "f"), e.reach("acme", "f", tasks.Retrying), e.reach("acme", "f", tasks.Paused),
	}
	running := e.reach("acme", "f", tasks.Running)
	cutoff := e.clock.Now().Add(time.Minute)
	e.clock.Advance(2 * time.Minute)
	young := e.create("acme", "f")
	if n := e.batch(tasks.Query{Tenant: "acme", Function: "f", ReceivedBefore: cutoff}, tasks.OpExpire); n != len(old) {
		t.Fatalf("expire: %d tasks, want %d", n, len(old))
	}
	for _, task := range old {
		got := e.get("acme", task.ID)
		if got.State != tasks.Expired || got.Times.Finished == nil || !got.Times.Finished.Equal(tasks.Norm(e.clock.Now())) {
			t.Errorf("expired: %s", show(got))
		}
	}
	if s := e.state("acme", running.ID); s != tasks.Running {
		t.Errorf("a running task was expired: %s", s)
	}
	if s := e.state("acme", young.ID); s != tasks.Queued {
		t.Errorf("a young task was expired: %s", s)
	}
	// One at a time, as a dispatcher does when it pulls an old task.
	e.move(young, tasks.Expired)
}

func testDuplicate(t *testing.T, e *env) {
	orig := e.create("acme", "f", func(t *tasks.Task) { t.IdempotencyKey = "order-1" })
	e.clock.Advance(time.Second)
	d := &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: "order-1", Event: []byte(`{}`)}
	err := e.s.Create(e.ctx, d)
	var de *tasks.DuplicateError
	if !errors.Is(err, tasks.ErrDuplicate) || !errors.As(err, &de) {
		t.Fatalf("second Create: got %v, want a *DuplicateError", err)
	}
	if de.Original != orig.ID || de.Duplicate != d.ID || d.ID == orig.ID {
		t.Fatalf("DuplicateError %+v; original %s, record %s", *de, orig.ID, d.ID)
	}
	want := &tasks.Task{ID: d.ID, Tenant: "acme", Function: "f", State: tasks.Duplicate, Version: 1,
		IdempotencyKey: "order-1", DuplicateOf: orig.ID, Event: []byte(`{}`),
		Times: tasks.Timestamps{Received: tasks.Norm(e.clock.Now()), Finished: stamp(e.clock.Now())}}
	sameTask(t, "Create's duplicate record", d, want)
	sameTask(t, "duplicate record", e.get("acme", d.ID), want)

	// The key is per tenant, not per function.
	if err := e.s.Create(e.ctx, &tasks.Task{Tenant: "acme", Function: "g", IdempotencyKey: "order-1"}); !errors.Is(err, tasks.ErrDuplicate) {
		t.Errorf("same key, other function: got %v, want ErrDuplicate", err)
	}
	other := e.create("globex", "f", func(t *tasks.Task) { t.IdempotencyKey = "order-1" })
	if other.State != tasks.Queued {
		t.Errorf("same key, other tenant: %s", other.State)
	}

	// The original's state does not matter: the key is held for the window.
	e.move(orig, tasks.Running, tasks.Succeeded)
	if err := e.s.Create(e.ctx, &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: "order-1"}); !errors.As(err, &de) || de.Original != orig.ID {
		t.Errorf("key of a succeeded task: got %v, want a duplicate of %s", err, orig.ID)
	}
	// Deleting a duplicate record keeps the original's key.
	if err := e.s.Delete(e.ctx, "acme", d.ID); err != nil {
		t.Fatalf("Delete duplicate: %v", err)
	}
	if err := e.s.Create(e.ctx, &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: "order-1"}); !errors.As(err, &de) || de.Original != orig.ID {
		t.Errorf("after deleting a duplicate record: got %v, want a duplicate of %s", err, orig.ID)
	}
	// Deleting the original releases it.
	if err := e.s.Delete(e.ctx, "acme", orig.ID); err != nil {
		t.Fatalf("Delete original: %v", err)
	}
	again := e.create("acme", "f", func(t *tasks.Task) { t.IdempotencyKey = "order-1" })
	if again.State != tasks.Queued || again.DuplicateOf != "" {
		t.Errorf("after deleting the original: %s", show(again))
	}
}

func testDedupWindow(t *testing.T, e *env) {
	orig := e.create("acme", "f", func(t *tasks.Task) { t.IdempotencyKey = "k" })
	e.clock.Advance(dedupWindow - time.Microsecond)
	var de *tasks.DuplicateError
	if err := e.s.Create(e.ctx, &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: "k"}); !errors.As(err, &de) || de.Original != orig.ID {
		t.Fatalf("just inside the window: got %v, want a duplicate of %s", err, orig.ID)
	}
	e.clock.Advance(time.Microsecond)
	second := e.create("acme", "f", func(t *tasks.Task) { t.IdempotencyKey = "k" })
	if second.State != tasks.Queued {
		t.Fatalf("after the window: %s", show(second))
	}
	if err := e.s.Create(e.ctx, &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: "k"}); !errors.As(err, &de) || de.Original != second.ID {
		t.Errorf("the window restarts with the new holder: got %v, want a duplicate of %s", err, second.ID)
	}
	// Both records stay; only the key moved.
	if s := e.state("acme", orig.ID); s != tasks.Queued {
		t.Errorf("the first holder is %s", s)
	}

	// The purge removes expired keys only.
	p, ok := e.s.(Purger)
	if !ok {
		t.Fatalf("%T does not implement storetest.Purger", e.s)
	}
	e.create("acme", "f", func(t *tasks.Task) { t.IdempotencyKey = "young" })
	e.clock.Advance(dedupWindow / 2)
	e.create("acme", "f", func(t *tasks.Task) { t.IdempotencyKey = "younger" })
	e.clock.Advance(dedupWindow / 2)
	n, err := p.PurgeExpiredKeys(e.ctx)
	if err != nil {
		t.Fatalf("PurgeExpiredKeys: %v", err)
	}
	if n != 2 { // "k" (second holder) and "young"
		t.Errorf("PurgeExpiredKeys purged %d keys, want 2", n)
	}
	if err := e.s.Create(e.ctx, &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: "younger"}); !errors.Is(err, tasks.ErrDuplicate) {
		t.Errorf("a live key after the purge: got %v, want ErrDuplicate", err)
	}
	for _, k := range []string{"k", "young"} {
		if got := e.create("acme", "f", func(t *tasks.Task) { t.IdempotencyKey = k }); got.State != tasks.Queued {
			t.Errorf("purged key %q: %s", k, got.State)
		}
	}
	if n, err := p.PurgeExpiredKeys(e.ctx); err != nil || n != 0 {
		t.Errorf("second purge: %d, %v; want 0, nil", n, err)
	}
}

// testTaskDedupWindow: a task's own window (its function's) overrides the
// store's, shorter or longer, and holds from the claiming Create.
func testTaskDedupWindow(t *testing.T, e *env) {
	withKey := func(key string, window time.Duration) *tasks.Task {
		return &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: key, DedupWindow: window}
	}
	if err := e.s.Create(e.ctx, withKey("bad", -time.Second)); !errors.Is(err, tasks.ErrInvalid) {
		t.Fatalf("negative window: got %v, want ErrInvalid", err)
	}
	const short, long = dedupWindow / 6, 2 * dedupWindow
	shortOrig, longOrig, storeOrig := withKey("short", short), withKey("long", long), withKey("store", 0)
	for _, task := range []*tasks.Task{shortOrig, longOrig, storeOrig} {
		if err := e.s.Create(e.ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	var de *tasks.DuplicateError
	dupOf := func(key string, window time.Duration, orig *tasks.Task, when string) {
		t.Helper()
		// The repeat's own window does not matter: the holder's does.
		if err := e.s.Create(e.ctx, withKey(key, window)); !errors.As(err, &de) || de.Original != orig.ID {
			t.Fatalf("%s, key %q: got %v, want a duplicate of %s", when, key, err, orig.ID)
		}
	}
	fresh := func(key string, when string) *tasks.Task {
		t.Helper()
		task := withKey(key, short)
		if err := e.s.Create(e.ctx, task); err != nil || task.State != tasks.Queued {
			t.Fatalf("%s, key %q: %v %s, want a new original", when, key, err, show(task))
		}
		return task
	}
	e.clock.Advance(short - time.Microsecond)
	dupOf("short", long, shortOrig, "just inside the short window")
	e.clock.Advance(time.Microsecond)
	newShort := fresh("short", "at the end of the short window")
	dupOf("short", 0, newShort, "the new holder's window")
	dupOf("long", 0, longOrig, "inside the long window")
	dupOf("store", 0, storeOrig, "inside the store's window")
	e.clock.Advance(dedupWindow - short)
	fresh("store", "at the end of the store's window")
	dupOf("long", short, longOrig, "past the store's window, inside the long one")
	e.clock.Advance(long - dedupWindow)
	fresh("long", "at the end of the long window")
}

func testDuplicateConcurrent(t *testing.T, e *env) {
	const n = 12
	errs := make([]error, n)
	created := make([]*tasks.Task, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			created[i] = &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: "race"}
			errs[i] = e.s.Create(e.ctx, created[i])
		})
	}
	wg.Wait()
	var originals []string
	for i, err := range errs {
		if err == nil {
			originals = append(originals, created[i].ID)
		} else if !errors.Is(err, tasks.ErrDuplicate) {
			t.Errorf("Create %d: %v", i, err)
		}
	}
	if len(originals) != 1 {
		t.Fatalf("%d creates won the key, want exactly 1", len(originals))
	}
	for i, err := range errs {
		var de *tasks.DuplicateError
		if errors.As(err, &de) && (de.Original != originals[0] || created[i].DuplicateOf != originals[0]) {
			t.Errorf("Create %d: duplicate of %s, want %s", i, de.Original, originals[0])
		}
	}
	counts, err := e.s.CountByState(e.ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if counts[tasks.Queued] != 1 || counts[tasks.Duplicate] != n-1 {
		t.Errorf("counts %v, want 1 queued and %d duplicates", counts, n-1)
	}
}

func testTenantIsolation(t *testing.T, e *env) {
	a := e.reach("acme", "f", tasks.Succeeded)
	aq := e.create("acme", "f", func(t *tasks.Task) { t.IdempotencyKey = "k" })
	for _, id := range []string{a.ID, aq.ID} {
		if _, err := e.s.Get(e.ctx, "globex", id); !errors.Is(err, tasks.ErrNotFound) {
			t.Errorf("Get of another tenant's task: got %v, want ErrNotFound", err)
		}
		for _, to := range tasks.States() {
			if _, err := e.s.Transition(e.ctx, "globex", id, to, nil); !errors.Is(err, tasks.ErrNotFound) {
				t.Errorf("Transition → %s of another tenant's task: got %v, want ErrNotFound", to, err)
			}
		}
		if err := e.s.Delete(e.ctx, "globex", id); !errors.Is(err, tasks.ErrNotFound) {
			t.Errorf("Delete of another tenant's task: got %v, want ErrNotFound", err)
		}
	}
	e.create("globex", "f")
	// globex's one task ends cancelled.
	for _, op := range []tasks.Op{tasks.OpPause, tasks.OpResume, tasks.OpRetry, tasks.OpDelete, tasks.OpCancel} {
		e.batch(tasks.Query{Tenant: "globex", Function: "f"}, op)
	}
	sameTask(t, "acme's done task after globex's batches", e.get("acme", a.ID), a)
	sameTask(t, "acme's queued task after globex's batches", e.get("acme", aq.ID), aq)
	if ids := e.listAll(tasks.Query{Tenant: "globex"}); len(ids) != 1 {
		t.Errorf("globex lists %d tasks, want its 1", len(ids))
	}
	counts, err := e.s.CountByState(e.ctx, "globex")
	if err != nil || len(counts) != 1 || counts[tasks.Cancelled] != 1 {
		t.Errorf("globex counts %v, %v; want 1 cancelled", counts, err)
	}
	// The same id and key in another tenant are unrelated.
	b := e.create("globex", "f", func(t *tasks.Task) { t.ID, t.IdempotencyKey = aq.ID, "k" })
	if b.State != tasks.Queued {
		t.Errorf("globex's task with acme's id and key: %s", show(b))
	}
	if _, err := e.s.CountByState(e.ctx, ""); !errors.Is(err, tasks.ErrInvalid) {
		t.Errorf("CountByState without a tenant: got %v, want ErrInvalid", err)
	}
}

func testListFilters(t *testing.T, e *env) {
	// 12 tasks over 4 instants (3 per instant, so ties on Received are
	// broken by id), two functions, several states.
	type made struct {
		task *tasks.Task
		at   time.Time
	}
	var all []made
	states := []tasks.State{tasks.Queued, tasks.Running, tasks.Succeeded}
	for i := range 4 {
		for j := range 3 {
			fn := "f"
			if j == 2 {
				fn = "g"
			}
			task := e.reach("acme", fn, states[(i+j)%3])
			all = append(all, made{task, e.clock.Now()})
		}
		e.clock.Advance(time.Second)
	}
	e.create("globex", "f")
	start := all[0].at

	// Expected order: newest first, then id descending.
	sorted := slices.Clone(all)
	slices.SortFunc(sorted, func(a, b made) int {
		if c := b.task.Times.Received.Compare(a.task.Times.Received); c != 0 {
			return c
		}
		return strings.Compare(b.task.ID, a.task.ID)
	})
	expect := func(keep func(made) bool) []string {
		var ids []string
		for _, m := range sorted {
			if keep(m) {
				ids = append(ids, m.task.ID)
			}
		}
		return ids
	}
	state := func(m made) tasks.State { return e.state("acme", m.task.ID) }
	for _, c := range []struct {
		name string
		q    tasks.Query
		keep func(made) bool
	}{
		{"all", tasks.Query{}, func(made) bool { return true }},
		{"function", tasks.Query{Function: "g"}, func(m made) bool { return m.task.Function == "g" }},
		{"one state", tasks.Query{States: []tasks.State{tasks.Running}}, func(m made) bool { return state(m) == tasks.Running }},
		{"two states", tasks.Query{States: []tasks.State{tasks.Queued, tasks.Succeeded}},
			func(m made) bool { return state(m) != tasks.Running }},
		{"function and state", tasks.Query{Function: "f", States: []tasks.State{tasks.Queued}},
			func(m made) bool { return m.task.Function == "f" && state(m) == tasks.Queued }},
		{"after", tasks.Query{ReceivedAfter: start.Add(2 * time.Second)}, func(m made) bool { return !m.at.Before(start.Add(2 * time.Second)) }},
		{"before", tasks.Query{ReceivedBefore: start.Add(2 * time.Second)}, func(m made) bool { return m.at.Before(start.Add(2 * time.Second)) }},
		{"range and function", tasks.Query{Function: "f", ReceivedAfter: start.Add(time.Second), ReceivedBefore: start.Add(3 * time.Second)},
			func(m made) bool {
				return m.task.Function == "f" && !m.at.Before(start.Add(time.Second)) && m.at.Before(start.Add(3*time.Second))
			}},
		{"state not present", tasks.Query{States: []tasks.State{tasks.Expired}}, func(made) bool { return false }},
		{"function not present", tasks.Query{Function: "nope"}, func(made) bool { return false }},
	} {
		for _, limit := range []int{1, 2, 5, 100} {
			q := c.q
			q.Tenant, q.Limit = "acme", limit
			if got, want := e.listAll(q), expect(c.keep); !slices.Equal(got, want) {
				t.Errorf("%s, limit %d:\n got  %v\n want %v", c.name, limit, got, want)
			}
		}
	}
	// A full page returns whole tasks equal to Get's.
	p, err := e.s.List(e.ctx, tasks.Query{Tenant: "acme", Limit: 3})
	if err != nil || len(p.Tasks) != 3 || p.Next == "" {
		t.Fatalf("List limit 3: %d tasks, next %q, %v", len(p.Tasks), p.Next, err)
	}
	for _, task := range p.Tasks {
		sameTask(t, "listed task", task, e.get("acme", task.ID))
	}
	// The last page has no cursor.
	p, err = e.s.List(e.ctx, tasks.Query{Tenant: "acme", Limit: len(all)})
	if err != nil || len(p.Tasks) != len(all) || p.Next != "" {
		t.Errorf("List of exactly all: %d tasks, next %q, %v", len(p.Tasks), p.Next, err)
	}
}

func testListArguments(t *testing.T, e *env) {
	for range tasks.DefaultLimit + 1 {
		e.create("acme", "f")
	}
	p, err := e.s.List(e.ctx, tasks.Query{Tenant: "acme"})
	if err != nil || len(p.Tasks) != tasks.DefaultLimit || p.Next == "" {
		t.Errorf("default limit: %d tasks, next %q, %v", len(p.Tasks), p.Next, err)
	}
	for _, q := range []tasks.Query{
		{},
		{Tenant: "acme", Limit: -1},
		{Tenant: "acme", Limit: tasks.MaxLimit + 1},
		{Tenant: "acme", States: []tasks.State{"bogus"}},
		{Tenant: "acme", Cursor: "!!not-a-cursor"},
		{Tenant: "acme", Cursor: "AAAA"},
	} {
		if _, err := e.s.List(e.ctx, q); !errors.Is(err, tasks.ErrInvalid) {
			t.Errorf("List(%+v): got %v, want ErrInvalid", q, err)
		}
	}
	if p, err := e.s.List(e.ctx, tasks.Query{Tenant: "nobody"}); err != nil || len(p.Tasks) != 0 || p.Next != "" {
		t.Errorf("List of an unknown tenant: %+v, %v", p, err)
	}
}

func testPaginationUnderInserts(t *testing.T, e *env) {
	var want []string
	for i := range 30 {
		task := e.create("acme", "f")
		want = append(want, task.ID)
		if i%3 == 2 {
			e.clock.Advance(time.Millisecond)
		}
	}
	// want is oldest first; List is newest first, ties by id descending.
	got := make([]*tasks.Task, 0, len(want))
	for _, id := range want {
		got = append(got, e.get("acme", id))
	}
	slices.SortFunc(got, func(a, b *tasks.Task) int {
		if c := b.Times.Received.Compare(a.Times.Received); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	want = want[:0]
	for _, task := range got {
		want = append(want, task.ID)
	}

	// A client reads the first page, then newer tasks are inserted
	// concurrently with its paging: it sees exactly the tasks that existed.
	q := tasks.Query{Tenant: "acme", Limit: 7}
	first, err := e.s.List(e.ctx, q)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	ids := make([]string, 0, len(want))
	for _, task := range first.Tasks {
		ids = append(ids, task.ID)
	}
	e.clock.Advance(time.Second)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var insertErr error
	inserted := 0
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := e.s.Create(e.ctx, &tasks.Task{Tenant: "acme", Function: "f"}); err != nil {
				insertErr = err
				return
			}
			inserted++
		}
	})
	for q.Cursor = first.Next; q.Cursor != ""; {
		p, err := e.s.List(e.ctx, q)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, task := range p.Tasks {
			ids = append(ids, task.ID)
		}
		if len(ids) > 10*len(want) {
			t.Fatal("List: cursor does not end")
		}
		q.Cursor = p.Next
	}
	close(stop)
	wg.Wait()
	if insertErr != nil {
		t.Fatalf("concurrent Create: %v", insertErr)
	}
	if !slices.Equal(ids, want) {
		t.Errorf("pages while %d tasks were inserted:\n got  %v\n want %v", inserted, ids, want)
	}
}

func testConcurrentTransition(t *testing.T, e *env) {
	const racers = 16
	for range 4 {
		task := e.create("acme", "f")
		var wg sync.WaitGroup
		errs := make([]error, racers)
		for i := range racers {
			wg.Go(func() {
				_, errs[i] = e.s.Transition(e.ctx, "acme", task.ID, tasks.Running, nil)
			})
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			if err == nil {
				wins++
				continue
			}
			var te *tasks.TransitionError
			if !errors.As(err, &te) || te.From != tasks.Running {
				t.Errorf("losing racer: got %v, want a TransitionError from running", err)
			}
		}
		if wins != 1 {
			t.Errorf("%d racers moved the task queued → running, want exactly 1", wins)
		}
		if got := e.get("acme", task.ID); got.Attempts != 1 || got.Version != 2 {
			t.Errorf("after the race: attempts %d version %d, want 1 2", got.Attempts, got.Version)
		}
	}
	// Racing a cancel against the dispatcher's completion: the task ends in
	// exactly one of the two outcomes and each call saw a consistent state.
	for range 4 {
		task := e.move(e.create("acme", "f"), tasks.Running)
		var wg sync.WaitGroup
		var cancelErr, doneErr error
		wg.Go(func() { _, cancelErr = e.s.Transition(e.ctx, "acme", task.ID, tasks.Cancelled, nil) })
		wg.Go(func() { _, doneErr = e.s.Transition(e.ctx, "acme", task.ID, tasks.Succeeded, nil) })
		wg.Wait()
		switch s := e.state("acme", task.ID); {
		case s == tasks.Cancelled && cancelErr == nil && errors.Is(doneErr, tasks.ErrInvalidTransition):
		case s == tasks.Succeeded && doneErr == nil && errors.Is(cancelErr, tasks.ErrInvalidTransition):
		default:
			t.Errorf("cancel vs succeed: state %s, cancel %v, succeed %v", s, cancelErr, doneErr)
		}
	}
}

func testCountByState(t *testing.T, e *env) {
	want := map[tasks.State]int{}
	for i, s := range tasks.States() {
		for range i%3 + 1 {
			e.reach("acme", "f", s)
			want[s]++
			if s == tasks.Duplicate {
				want[tasks.Queued]++ // the original
			}
		}
	}
	check := func(what string) {
		t.Helper()
		got, err := e.s.CountByState(e.ctx, "acme")
		if err != nil {
			t.Fatalf("CountByState: %v", err)
		}
		for s, n := range want {
			if n == 0 {
				delete(want, s)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: counts %v, want %v", what, got, want)
		}
		for _, s := range tasks.States() {
			if ids := e.listAll(tasks.Query{Tenant: "acme", States: []tasks.State{s}}); len(ids) != want[s] {
				t.Errorf("%s: List lists %d %s tasks, count says %d", what, len(ids), s, want[s])
			}
		}
	}
	check("created")
	n := e.batch(tasks.Query{Tenant: "acme"}, tasks.OpCancel)
	want[tasks.Cancelled] += n
	want[tasks.Queued], want[tasks.Running], want[tasks.Retrying], want[tasks.Paused] = 0, 0, 0, 0
	check("after cancelling all")
	n = e.batch(tasks.Query{Tenant: "acme", States: []tasks.State{tasks.Cancelled, tasks.Succeeded}}, tasks.OpDelete)
	if n != want[tasks.Cancelled]+want[tasks.Succeeded] {
		t.Errorf("deleted %d", n)
	}
	want[tasks.Cancelled], want[tasks.Succeeded] = 0, 0
	check("after deleting")
	if got, err := e.s.CountByState(e.ctx, "nobody"); err != nil || len(got) != 0 {
		t.Errorf("counts of an unknown tenant: %v, %v", got, err)
	}
}

func testDelete(t *testing.T, e *env) {
	for _, s := range tasks.States() {
		task := e.reach("acme", "f", s)
		err := e.s.Delete(e.ctx, "acme", task.ID)
		if !s.Done() {
			if !errors.Is(err, tasks.ErrNotDone) {
				t.Errorf("Delete of a %s task: got %v, want ErrNotDone", s, err)
			}
			if got := e.state("acme", task.ID); got != s {
				t.Errorf("refused Delete changed %s to %s", s, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("Delete of a %s task: %v", s, err)
			continue
		}
		if _, err := e.s.Get(e.ctx, "acme", task.ID); !errors.Is(err, tasks.ErrNotFound) {
			t.Errorf("Get after Delete: got %v, want ErrNotFound", err)
		}
		if err := e.s.Delete(e.ctx, "acme", task.ID); !errors.Is(err, tasks.ErrNotFound) {
			t.Errorf("second Delete: got %v, want ErrNotFound", err)
		}
		if ids := e.listAll(tasks.Query{Tenant: "acme", States: []tasks.State{s}}); slices.Contains(ids, task.ID) {
			t.Errorf("a deleted task is still listed")
		}
	}
}

func testBatchDelete(t *testing.T, e *env) {
	var keep, gone []*tasks.Task
	for _, s := range tasks.States() {
		for _, fn := range []string{"f", "g"} {
			task := e.reach("acme", fn, s)
			if fn == "f" && s.Done() {
				gone = append(gone, task)
			} else {
				keep = append(keep, task)
			}
		}
	}
	if n := e.batch(tasks.Query{Tenant: "acme", Function: "f"}, tasks.OpDelete); n != len(gone) {
		t.Errorf("batch delete: %d, want %d", n, len(gone))
	}
	for _, task := range gone {
		if _, err := e.s.Get(e.ctx, "acme", task.ID); !errors.Is(err, tasks.ErrNotFound) {
			t.Errorf("%s task not deleted: %v", task.State, err)
		}
	}
	for _, task := range keep {
		sameTask(t, "kept "+string(task.State)+" task of "+task.Function, e.get("acme", task.ID), task)
	}
}

func testBatchArguments(t *testing.T, e *env) {
	task := e.create("acme", "f")
	for _, c := range []struct {
		q  tasks.Query
		op tasks.Op
	}{
		{tasks.Query{Tenant: "acme"}, tasks.OpDispatch},
		{tasks.Query{Tenant: "acme"}, "bogus"},
		{tasks.Query{}, tasks.OpCancel},
		{tasks.Query{Tenant: "acme", States: []tasks.State{"bogus"}}, tasks.OpCancel},
	} {
		if _, err := e.s.Batch(e.ctx, c.q, c.op); !errors.Is(err, tasks.ErrInvalid) {
			t.Errorf("Batch(%+v, %q): got %v, want ErrInvalid", c.q, c.op, err)
		}
	}
	// Cursor and Limit are ignored; States narrows.
	if n := e.batch(tasks.Query{Tenant: "acme", Limit: 1, Cursor: "garbage", States: []tasks.State{tasks.Running}}, tasks.OpCancel); n != 0 {
		t.Errorf("cancel of running tasks changed %d queued ones", n)
	}
	sameTask(t, "unchanged by the refused batches", e.get("acme", task.ID), task)
	e.create("acme", "f")
	if n := e.batch(tasks.Query{Tenant: "acme", Limit: 1}, tasks.OpCancel); n != 2 {
		t.Errorf("cancel with Limit 1: %d, want 2", n)
	}
}

func testClose(t *testing.T, e *env) {
	task := e.create("acme", "f")
	if err := e.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := e.s.Get(e.ctx, "acme", task.ID); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("Get after Close: got %v, want ErrClosed", err)
	}
	if err := e.s.Create(e.ctx, &tasks.Task{Tenant: "acme", Function: "f"}); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("Create after Close: got %v, want ErrClosed", err)
	}
	if _, err := e.s.Transition(e.ctx, "acme", task.ID, tasks.Running, nil); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("Transition after Close: got %v, want ErrClosed", err)
	}
	if err := e.s.SetPaused(e.ctx, "acme", "f", true); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("SetPaused after Close: got %v, want ErrClosed", err)
	}
	if _, err := e.s.PausedFunctions(e.ctx, "acme"); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("PausedFunctions after Close: got %v, want ErrClosed", err)
	}
}
