package boltstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/runtime/tasks"
)

// TestGroupCommitReruns: writes share transactions (writer.go), and a write
// that fails makes its batch roll back and run again without it, the
// pending creates (deferred.go) written again with it. Creates racing with
// failing writes — a create of an id that exists (refused at admission)
// and a transition of a task that does not (refused in the transaction) —
// must still leave every task as its own Create reported: one original
// per key, duplicates pointing at it, and the caller's task updated
// exactly once.
func TestGroupCommitReruns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := Open(path, tasks.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Create(ctx, &tasks.Task{ID: "taken", Tenant: "t", Function: "f"}); err != nil {
		t.Fatal(err)
	}
	const n = 200
	created := make([]*tasks.Task, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			task := &tasks.Task{Tenant: "t", Function: "f", IdempotencyKey: fmt.Sprintf("k%d", i%7)}
			switch i % 6 {
			case 0:
				task = &tasks.Task{ID: "taken", Tenant: "t", Function: "f"} // fails: the id exists
			case 3:
				_, err := s.Transition(ctx, "t", "missing", tasks.Running, nil) // fails in the transaction
				if !errors.Is(err, tasks.ErrNotFound) {
					errs[i] = fmt.Errorf("transition of a missing task: %v", err)
				}
				return
			}
			errs[i] = s.Create(ctx, task)
			created[i] = task
		}()
	}
	wg.Wait()
	originals := map[string]string{}
	for i, task := range created {
		var dup *tasks.DuplicateError
		switch {
		case i%6 == 3:
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
		case i%6 == 0:
			if !errors.Is(errs[i], tasks.ErrExists) {
				t.Fatalf("create %d: %v, want ErrExists", i, errs[i])
			}
		case errors.As(errs[i], &dup):
			if task.State != tasks.Duplicate || task.DuplicateOf != dup.Original || task.ID != dup.Duplicate {
				t.Fatalf("duplicate %d: %+v vs %v", i, task, dup)
			}
		case errs[i] == nil:
			if task.State != tasks.Queued || task.DuplicateOf != "" {
				t.Fatalf("original %d: %+v", i, task)
			}
			if prev, ok := originals[task.IdempotencyKey]; ok {
				t.Fatalf("key %s has two originals: %s and %s", task.IdempotencyKey, prev, task.ID)
			}
			originals[task.IdempotencyKey] = task.ID
		default:
			t.Fatalf("create %d: %v", i, errs[i])
		}
	}
	if len(originals) != 7 {
		t.Fatalf("%d originals, want one per key (7)", len(originals))
	}
	for i, task := range created {
		if i%3 == 0 {
			continue
		}
		stored, err := s.Get(ctx, "t", task.ID)
		if err != nil || stored.State != task.State || stored.DuplicateOf != task.DuplicateOf {
			t.Fatalf("stored %d: %+v, %v; Create reported %+v", i, stored, err, task)
		}
		if task.State == tasks.Duplicate && task.DuplicateOf != originals[task.IdempotencyKey] {
			t.Fatalf("duplicate %d points at %s, original is %s", i, task.DuplicateOf, originals[task.IdempotencyKey])
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path)
}
