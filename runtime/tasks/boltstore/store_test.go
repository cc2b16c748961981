package boltstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tasks/storetest"
)

// childEnv makes the test binary, re-executed by TestSurvivesSIGKILL, act
// as a writer process on the store file it names.
const childEnv = "SLUICE_BOLTSTORE_CHILD"

// deferredLine marks the child's report of a deferred create (not durable yet).
const deferredLine = "deferred"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(child(path))
	}
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, o tasks.Options) tasks.Store {
		path := filepath.Join(t.TempDir(), "tasks.db")
		s, err := Open(path, o)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { checkFile(t, path) }) // runs after the suite's Close
		return s
	})
}

// checkFile runs bbolt's consistency check on a closed store file.
func checkFile(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		t.Errorf("reopen for check: %v", err)
		return
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() { // drain: Check's goroutine sends every error
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Errorf("bbolt check: %v", err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	ctx := t.Context()
	s, err := Open(path, tasks.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: "k", Event: []byte(`{"id":"1"}`)}
	if err := s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	ran, err := s.Transition(ctx, "acme", a.ID, tasks.Running, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path, tasks.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(ctx, "acme", a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != tasks.Running || got.Version != ran.Version || string(got.Event) != `{"id":"1"}` {
		t.Errorf("after reopen: %+v", got)
	}
	// The idempotency key survived too.
	if err := s.Create(ctx, &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: "k"}); !errors.Is(err, tasks.ErrDuplicate) {
		t.Errorf("key after reopen: got %v, want ErrDuplicate", err)
	}
	counts, err := s.CountByState(ctx, "acme")
	if err != nil || counts[tasks.Running] != 1 || counts[tasks.Duplicate] != 1 {
		t.Errorf("counts after reopen: %v, %v", counts, err)
	}
}

func TestSecondOpenFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := Open(path, tasks.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := Open(path, tasks.Options{}); err == nil {
		s2.Close()
		t.Fatal("a second Open of a store in use succeeded")
	}
}

// TestSurvivesSIGKILL runs a child process that creates and transitions
// tasks, printing each id once its write returned; after some writes the
// child is killed with SIGKILL mid-stream. Every printed (committed) write
// must be in the reopened store, and every deferred create the child made
// beside them either there whole or not at all.
func TestSurvivesSIGKILL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// committed maps each id the child reported to the state it reported;
	// deferred, the ids of its deferred creates to their event.
	committed, deferred := map[string]tasks.State{}, map[string]string{}
	read := func(line string) {
		id, rest, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("child said %q", line)
		}
		if n, ok := strings.CutPrefix(rest, deferredLine+" "); ok {
			deferred[id] = `{"d":` + n + `}`
			return
		}
		committed[id] = tasks.State(rest)
	}
	lines := bufio.NewScanner(out)
	const killAfter = 300
	for len(committed) < killAfter && lines.Scan() {
		read(lines.Text())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Lines written before the kill are committed too.
	for lines.Scan() {
		read(lines.Text())
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("the child exited normally; it should have been killed")
	}
	if len(committed) < killAfter {
		t.Fatalf("the child committed only %d tasks", len(committed))
	}

	checkFile(t, path)
	s, err := Open(path, tasks.Options{})
	if err != nil {
		t.Fatalf("reopen after SIGKILL: %v", err)
	}
	defer s.Close()
	ctx := t.Context()
	for id, state := range committed {
		got, err := s.Get(ctx, "acme", id)
		if err != nil {
			t.Errorf("committed task %s: %v", id, err)
			continue
		}
		// The child may have moved it further after printing.
		if got.State != state && !(state == tasks.Queued && got.State == tasks.Running) {
			t.Errorf("task %s is %s, the child committed %s", id, got.State, state)
		}
	}
	// A deferred create is written whole, or lost whole with the kill.
	lost := 0
	for id, event := range deferred {
		got, err := s.Get(ctx, "acme", id)
		switch {
		case errors.Is(err, tasks.ErrNotFound):
			lost++
		case err != nil:
			t.Errorf("deferred task %s: %v", id, err)
		case got.State != tasks.Queued || string(got.Event) != event:
			t.Errorf("deferred task %s: %+v, want queued with %s", id, got, event)
		}
	}
	t.Logf("%d of %d deferred creates were lost with the kill", lost, len(deferred))
	counts, err := s.CountByState(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	listed := 0
	for q := (tasks.Query{Tenant: "acme", Limit: tasks.MaxLimit}); ; {
		page, err := s.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		listed += len(page.Tasks)
		if q.Cursor = page.Next; q.Cursor == "" {
			break
		}
	}
	if total := counts[tasks.Queued] + counts[tasks.Running]; total != listed || total < len(committed) {
		t.Errorf("after SIGKILL: counts %v, %d listed, %d committed", counts, listed, len(committed))
	}
}

// child creates tasks and moves every other one to running until killed,
// printing "<id> <state>" after each write returns.
func child(path string) int {
	s, err := Open(path, tasks.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	ctx := context.Background()
	w := bufio.NewWriter(os.Stdout)
	deadline := time.Now().Add(2 * time.Minute) // never outlive a parent that failed to kill us
	for i := 0; time.Now().Before(deadline); i++ {
		t := &tasks.Task{Tenant: "acme", Function: "f", Event: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		if err := s.Create(ctx, t); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 2
		}
		fmt.Fprintln(w, t.ID, tasks.Queued)
		// A deferred create beside each one: not durable when reported.
		d := &tasks.Task{Tenant: "acme", Function: "f", Event: []byte(fmt.Sprintf(`{"d":%d}`, i))}
		if err := s.CreateDeferred(ctx, d); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 2
		}
		fmt.Fprintln(w, d.ID, deferredLine, i)
		if i%2 == 1 {
			if _, err := s.Transition(ctx, "acme", t.ID, tasks.Running, nil); err != nil {
				fmt.Fprintln(os.Stderr, "child:", err)
				return 2
			}
			fmt.Fprintln(w, t.ID, tasks.Running)
		}
		if err := w.Flush(); err != nil {
			return 2
		}
	}
	return 1
}
