package pgstore

import (
	"errors"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tasks/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, c Config) *Store {
	t.Helper()
	s, err := Open(t.Context(), c)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	url := testenv.PostgresURL(t)
	storetest.Run(t, func(t *testing.T, o tasks.Options) tasks.Store {
		return open(t, Config{URL: url, Schema: storetest.PostgresSchema(t, url, "sluice_test_"), Options: o})
	})
}

// TestTwoInstances shares one schema between two stores (two pools, as two
// Sluice instances would have): a task created by one is seen by the other,
// and racing dispatchers on both move each task queued → running exactly once.
func TestTwoInstances(t *testing.T) {
	url := testenv.PostgresURL(t)
	c := Config{URL: url, Schema: storetest.PostgresSchema(t, url, "sluice_test_")}
	a, b := open(t, c), open(t, c)
	ctx := t.Context()
	const n, racersPerStore = 10, 4
	var ids []string
	for range n {
		task := &tasks.Task{Tenant: "acme", Function: "f"}
		if err := a.Create(ctx, task); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.ID)
	}
	var mu sync.Mutex
	wins := map[string]int{}
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b} {
		for range racersPerStore {
			wg.Go(func() {
				for _, id := range ids {
					_, err := s.Transition(ctx, "acme", id, tasks.Running, nil)
					switch {
					case err == nil:
						mu.Lock()
						wins[id]++
						mu.Unlock()
					case !errors.Is(err, tasks.ErrInvalidTransition):
						t.Errorf("Transition: %v", err)
					}
				}
			})
		}
	}
	wg.Wait()
	for _, id := range ids {
		if wins[id] != 1 {
			t.Errorf("task %s moved to running %d times, want 1", id, wins[id])
		}
		got, err := b.Get(ctx, "acme", id)
		if err != nil || got.Attempts != 1 || got.State != tasks.Running {
			t.Errorf("task %s: %+v, %v", id, got, err)
		}
	}
	// Idempotency keys are shared too.
	if err := a.Create(ctx, &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(ctx, &tasks.Task{Tenant: "acme", Function: "f", IdempotencyKey: "k"}); !errors.Is(err, tasks.ErrDuplicate) {
		t.Errorf("key created on a, then on b: got %v, want ErrDuplicate", err)
	}
}

// TestMigrationIdempotent opens one schema from several stores at once and
// again later: the schema is created once and its version recorded.
func TestMigrationIdempotent(t *testing.T) {
	url := testenv.PostgresURL(t)
	c := Config{URL: url, Schema: storetest.PostgresSchema(t, url, "sluice_test_")}
	var wg sync.WaitGroup
	stores := make([]*Store, 4)
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = Open(t.Context(), c) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	s := open(t, c)
	v, err := s.SchemaVersion(t.Context())
	if err != nil || v != len(migrations()) {
		t.Errorf("schema version %d, %v; want %d", v, err, len(migrations()))
	}
	var rows int
	if err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM sluice_tasks_schema`).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("version table has %d rows, %v; want 1", rows, err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(t.Context(), Config{URL: "mysql://nope"}); err == nil {
		t.Error("Open with a non-PostgreSQL URL succeeded")
	}
	// A schema from a newer Sluice is refused rather than misread.
	url := testenv.PostgresURL(t)
	c := Config{URL: url, Schema: storetest.PostgresSchema(t, url, "sluice_test_")}
	s := open(t, c)
	if _, err := s.pool.Exec(t.Context(), `UPDATE sluice_tasks_schema SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(t.Context(), c); err == nil {
		s2.Close()
		t.Error("Open of a newer schema succeeded")
	}
}
