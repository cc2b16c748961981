package tasks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type edge struct {
	from, to State
	by       Op
}

// wantEdges is the state machine as designed (docs/tasks.md); Edge must
// say exactly this.
func wantEdges() []edge {
	return []edge{
		{Queued, Running, OpDispatch},
		{Queued, Paused, OpPause},
		{Queued, Cancelled, OpCancel},
		{Queued, Expired, OpExpire},
		{Running, Succeeded, OpDispatch},
		{Running, Retrying, OpDispatch},
		{Running, Failed, OpDispatch},
		{Running, Cancelled, OpCancel},
		{Retrying, Running, OpDispatch},
		{Retrying, Paused, OpPause},
		{Retrying, Cancelled, OpCancel},
		{Retrying, Expired, OpExpire},
		{Failed, DeadLettered, OpDispatch},
		{Failed, Queued, OpRetry},
		{DeadLettered, Queued, OpRetry},
		{Cancelled, Queued, OpRetry},
		{Expired, Queued, OpRetry},
		{Paused, Queued, OpResume},
		{Paused, Cancelled, OpCancel},
		{Paused, Expired, OpExpire},
	}
}

func edgesOfTable() []edge {
	var out []edge
	for _, from := range States() {
		for _, to := range States() {
			if by, ok := Edge(from, to); ok {
				out = append(out, edge{from, to, by})
			}
		}
	}
	return out
}

func sortEdges(es []edge) {
	sort.Slice(es, func(i, j int) bool {
		if es[i].from != es[j].from {
			return es[i].from < es[j].from
		}
		return es[i].to < es[j].to
	})
}

func TestEdgeTable(t *testing.T) {
	got, want := edgesOfTable(), wantEdges()
	sortEdges(got)
	sortEdges(want)
	if !slices.Equal(got, want) {
		t.Errorf("Edge:\n got  %v\n want %v", got, want)
	}
	// Notable moves that must stay illegal.
	for _, c := range []struct{ from, to State }{
		{Queued, Succeeded},  // never ran
		{Queued, Queued},     // no self loops
		{Running, Running},   // a second dispatcher must lose
		{Running, Queued},    // a running attempt is not silently re-queued
		{Running, Paused},    // pause takes effect between attempts
		{Running, Expired},   // an attempt in flight is not expired
		{Retrying, Failed},   // the dispatcher decides on the attempt, in Running
		{Succeeded, Queued},  // a success is not retried: invoke again
		{Succeeded, Running}, //
		{Duplicate, Queued},  // a duplicate never runs
		{Duplicate, Running}, //
		{DeadLettered, Failed},
		{Cancelled, Running}, // a late dispatcher must see the cancel
		{Paused, Running},    // nor run a paused task
		{Expired, Running},
		{"bogus", Queued},
		{Queued, "bogus"},
	} {
		if Allowed(c.from, c.to) {
			t.Errorf("%s → %s is allowed", c.from, c.to)
		}
	}
}

func TestOps(t *testing.T) {
	for _, c := range []struct {
		op      Op
		target  State
		sources []State
	}{
		{OpCancel, Cancelled, []State{Queued, Running, Retrying, Paused}},
		{OpPause, Paused, []State{Queued, Retrying}},
		{OpResume, Queued, []State{Paused}},
		{OpRetry, Queued, []State{Failed, DeadLettered, Cancelled, Expired}},
		{OpExpire, Expired, []State{Queued, Retrying, Paused}},
		{OpDelete, "", []State{Succeeded, Failed, DeadLettered, Cancelled, Expired, Duplicate}},
		{OpDispatch, "", nil},
		{"bogus", "", nil},
	} {
		if to, _ := c.op.Target(); to != c.target {
			t.Errorf("%s.Target() = %q, want %q", c.op, to, c.target)
		}
		if got := c.op.Sources(); !slices.Equal(got, c.sources) {
			t.Errorf("%s.Sources() = %v, want %v", c.op, got, c.sources)
		}
		if c.op.Batchable() != (c.sources != nil) {
			t.Errorf("%s.Batchable() = %v", c.op, c.op.Batchable())
		}
		if _, err := ParseOp(string(c.op)); (err == nil) != c.op.Batchable() {
			t.Errorf("ParseOp(%q): %v", c.op, err)
		}
	}
	// Apply: only from a source state, with Advance's effects.
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	failed := &Task{ID: "x", State: Failed, Attempts: 3, Version: 5, Error: "boom"}
	next, ok := OpRetry.Apply(failed, now)
	if !ok || next.State != Queued || next.Attempts != 0 || next.Retries != 1 || next.Error != "" || next.Version != 6 {
		t.Errorf("retry of a failed task: %+v, %v", next, ok)
	}
	if _, ok := OpRetry.Apply(&Task{State: Succeeded}, now); ok {
		t.Error("retry applied to a succeeded task")
	}
	if _, ok := OpDelete.Apply(&Task{State: Succeeded}, now); ok {
		t.Error("Apply of OpDelete moved a task")
	}
}

func TestAdvance(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(time.Hour + 1234*time.Nanosecond) // below µs precision: truncated
	cur := &Task{ID: "x", Tenant: "a", Function: "f", State: Queued, Version: 1,
		Times: Timestamps{Received: t0, Queued: &t0}, Labels: map[string]string{"k": "v"}}
	next, err := Advance(cur, Running, now, func(t *Task) error {
		t.Labels["k"] = "changed" // a copy: cur is untouched
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cur.Labels["k"] != "v" || cur.State != Queued || cur.Version != 1 {
		t.Errorf("Advance changed its input: %+v", cur)
	}
	want := Norm(now)
	if next.Attempts != 1 || !next.Times.Dispatched.Equal(want) || !next.Times.Started.Equal(want) ||
		next.Times.Started.Nanosecond()%1000 != 0 || next.Version != 2 {
		t.Errorf("running: %+v", next)
	}
	_, err = Advance(next, Queued, now, nil)
	var te *TransitionError
	if !errors.As(err, &te) || !errors.Is(err, ErrInvalidTransition) || *te != (TransitionError{ID: "x", From: Running, To: Queued}) {
		t.Errorf("running → queued: %v", err)
	}
	called := false
	if _, err := Advance(next, Queued, now, func(*Task) error { called = true; return nil }); err == nil || called {
		t.Error("mutate ran for an illegal transition")
	}
}

func TestPrepare(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 999, time.UTC)
	task := &Task{Tenant: "a", Function: "f", Attempts: 5, Retries: 2, DuplicateOf: "y", Version: 9,
		Times: Timestamps{Finished: &now}}
	if err := Prepare(task, now); err != nil {
		t.Fatal(err)
	}
	if task.ID == "" || task.State != Queued || task.Version != 1 || task.Attempts != 0 || task.Retries != 0 ||
		task.DuplicateOf != "" || task.Times.Finished != nil || !task.Times.Received.Equal(Norm(now)) ||
		!task.Times.Queued.Equal(Norm(now)) {
		t.Errorf("Prepare: %+v", task)
	}
	other := &Task{Tenant: "a", Function: "f"}
	if err := Prepare(other, now); err != nil || other.ID == task.ID {
		t.Errorf("ids %q and %q, %v", task.ID, other.ID, err)
	}
	for _, bad := range []*Task{
		nil,
		{Tenant: "a"},
		{Function: "f"},
		{Tenant: "a", Function: "f", State: Running},
		{Tenant: "a", Function: "f", ID: strings.Repeat("i", MaxNameLen+1)},
		{Tenant: "a\xff", Function: "f"},
		{Tenant: "a", Function: "f", IdempotencyKey: strings.Repeat("k", MaxKeyLen+1)},
	} {
		if err := Prepare(bad, now); !errors.Is(err, ErrInvalid) {
			t.Errorf("Prepare(%+v): got %v, want ErrInvalid", bad, err)
		}
	}
}

func TestQueryCheck(t *testing.T) {
	at := time.Date(2030, 1, 1, 0, 0, 0, 123456789, time.UTC)
	c := Cursor{Received: Norm(at), ID: "task-1"}
	cq, err := Query{Tenant: "a", Cursor: c.Encode()}.Check()
	if err != nil || cq.After == nil || *cq.After != c || cq.Limit != DefaultLimit {
		t.Fatalf("cursor round trip: %+v, %v", cq, err)
	}
	if got := CursorAfter(&Task{ID: "task-1", Times: Timestamps{Received: Norm(at)}}); got != c.Encode() {
		t.Errorf("CursorAfter = %q, want %q", got, c.Encode())
	}
	for _, q := range []Query{
		{},
		{Tenant: "a", Limit: -1},
		{Tenant: "a", Limit: MaxLimit + 1},
		{Tenant: "a", States: []State{Queued, "nope"}},
		{Tenant: "a", Cursor: "%%%"},
		{Tenant: "a", Cursor: "AAAA"},
	} {
		if _, err := q.Check(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Check(%+v): got %v, want ErrInvalid", q, err)
		}
	}
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cq, _ = Query{Tenant: "a", Function: "f", States: []State{Queued}, ReceivedAfter: t0, ReceivedBefore: t0.Add(time.Hour)}.Check()
	for _, c := range []struct {
		task *Task
		want bool
	}{
		{&Task{Tenant: "a", Function: "f", State: Queued, Times: Timestamps{Received: t0}}, true},
		{&Task{Tenant: "a", Function: "f", State: Queued, Times: Timestamps{Received: t0.Add(time.Hour)}}, false},
		{&Task{Tenant: "a", Function: "f", State: Queued, Times: Timestamps{Received: t0.Add(-1)}}, false},
		{&Task{Tenant: "b", Function: "f", State: Queued, Times: Timestamps{Received: t0}}, false},
		{&Task{Tenant: "a", Function: "g", State: Queued, Times: Timestamps{Received: t0}}, false},
		{&Task{Tenant: "a", Function: "f", State: Running, Times: Timestamps{Received: t0}}, false},
	} {
		if got := cq.Match(c.task); got != c.want {
			t.Errorf("Match(%+v) = %v", c.task, got)
		}
	}
}

func TestStates(t *testing.T) {
	for _, s := range States() {
		if got, err := ParseState(s.String()); err != nil || got != s {
			t.Errorf("ParseState(%q) = %q, %v", s, got, err)
		}
	}
	if _, err := ParseState("bogus"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseState(bogus): %v", err)
	}
	var done []State
	for _, s := range States() {
		if s.Done() {
			done = append(done, s)
		}
	}
	if want := []State{Succeeded, Failed, DeadLettered, Cancelled, Expired, Duplicate}; !slices.Equal(done, want) {
		t.Errorf("done states %v, want %v", done, want)
	}
}

func TestSweeper(t *testing.T) {
	var runs atomic.Int32
	ran := make(chan struct{}, 1)
	s := StartSweeper(time.Millisecond, func(ctx context.Context) {
		runs.Add(1)
		select {
		case ran <- struct{}{}:
		default:
		}
	})
	select {
	case <-ran:
	case <-time.After(time.Minute):
		t.Fatal("the sweeper never ran")
	}
	s.Stop()
	n := runs.Load()
	time.Sleep(10 * time.Millisecond)
	if runs.Load() != n {
		t.Error("the sweeper ran after Stop returned")
	}
}

// TestDocsDiagram keeps the Mermaid diagram in docs/tasks.md equal to Edge.
func TestDocsDiagram(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "docs", "tasks.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "```mermaid")
	end := strings.Index(doc[start+1:], "```")
	if start < 0 || end < 0 {
		t.Fatal("docs/tasks.md has no mermaid block")
	}
	arrow := regexp.MustCompile(`^\s*(\w+)\s*-->\s*(\w+)\s*:\s*(\w+)`)
	// Mermaid ids cannot contain '-'.
	id := func(s string) State { return State(strings.ReplaceAll(s, "dead_lettered", "dead-lettered")) }
	var got []edge
	for _, line := range strings.Split(doc[start:start+1+end], "\n") {
		if m := arrow.FindStringSubmatch(line); m != nil && m[1] != "state" {
			got = append(got, edge{id(m[1]), id(m[2]), Op(m[3])})
		}
	}
	want := edgesOfTable()
	sortEdges(got)
	sortEdges(want)
	if !slices.Equal(got, want) {
		t.Errorf("docs/tasks.md diagram:\n got  %v\n want %v", got, want)
	}
}
