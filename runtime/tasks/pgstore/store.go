// Package pgstore is the PostgreSQL task store, which several Sluice
// instances can share: every write is either one statement guarded by a
// compare-and-set on the task's version or one transaction, so two instances
// never both move a task queued → running.
//
// Open migrates the schema (idempotently, serialized across instances by an
// advisory lock) into the configured schema. The store's clock (Options.Now)
// stamps tasks and dedup windows, so instances sharing a database should
// keep their clocks in sync (NTP); the database's own clock is not used.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/runtime/tasks"
)

// Config says where the store lives.
type Config struct {
	// URL is a PostgreSQL connection URL or DSN (pgxpool settings such as
	// pool_max_conns may be given in it).
	URL string
	// Schema holds the store's tables; created if missing. Empty: the
	// connection's default search_path (usually public).
	Schema string
	// Options are the common store options.
	Options tasks.Options
}

// Store is the PostgreSQL task store. It is safe for concurrent use, and
// several Stores (in one or many processes) may share one schema.
type Store struct {
	pool  *pgxpool.Pool
	opts  tasks.Options
	sweep *tasks.Sweeper

	mu     sync.RWMutex // guards closed; held (read) by every operation so Close waits for them
	closed bool
}

var _ tasks.Store = (*Store)(nil)

// Open connects, migrates the schema and starts the key sweep. The caller
// owns the store and must Close it.
func Open(ctx context.Context, c Config) (*Store, error) {
	pc, err := pgxpool.ParseConfig(c.URL)
	if err != nil {
		return nil, fmt.Errorf("pgstore: parse URL: %w", err)
	}
	if c.Schema != "" {
		pc.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{c.Schema}.Sanitize()
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("pgstore: connect: %w", err)
	}
	if err := migrate(ctx, pool, c.Schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: migrate: %w", err)
	}
	s := &Store{pool: pool, opts: c.Options.WithDefaults()}
	s.sweep = tasks.StartSweeper(s.opts.SweepInterval, func(ctx context.Context) {
		if _, err := s.PurgeExpiredKeys(ctx); err != nil && !errors.Is(err, tasks.ErrClosed) && ctx.Err() == nil {
			s.opts.Logger.Warn("tasks: purging expired idempotency keys", "schema", c.Schema, "err", err)
		}
	})
	return s, nil
}

// migrations are applied in order; entry i brings the schema to version i+1.
// Never edit an entry: append a new one.
func migrations() []string {
	return []string{`
CREATE TABLE IF NOT EXISTS sluice_tasks (
	tenant          text COLLATE "C" NOT NULL,
	id              text COLLATE "C" NOT NULL,
	function        text COLLATE "C" NOT NULL,
	state           text NOT NULL,
	attempts        integer NOT NULL DEFAULT 0,
	retries         integer NOT NULL DEFAULT 0,
	idempotency_key text NOT NULL DEFAULT '',
	duplicate_of    text NOT NULL DEFAULT '',
	event           bytea,
	result          bytea,
	error           text NOT NULL DEFAULT '',
	last_status     integer NOT NULL DEFAULT 0,
	labels          jsonb,
	received_at     timestamptz NOT NULL,
	queued_at       timestamptz,
	dispatched_at   timestamptz,
	started_at      timestamptz,
	finished_at     timestamptz,
	delivered_at    timestamptz,
	version         bigint NOT NULL,
	PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS sluice_tasks_by_received ON sluice_tasks (tenant, received_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS sluice_tasks_by_state ON sluice_tasks (tenant, state, received_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS sluice_tasks_by_function ON sluice_tasks (tenant, function, received_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS sluice_task_keys (
	tenant     text COLLATE "C" NOT NULL,
	key        text COLLATE "C" NOT NULL,
	task_id    text COLLATE "C" NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (tenant, key)
);
CREATE INDEX IF NOT EXISTS sluice_task_keys_by_expiry ON sluice_task_keys (expires_at);
`, `
CREATE TABLE IF NOT EXISTS sluice_paused_functions (
	tenant    text COLLATE "C" NOT NULL,
	function  text COLLATE "C" NOT NULL,
	paused_at timestamptz NOT NULL,
	PRIMARY KEY (tenant, function)
);
`}
}

// migrate brings the schema up to date in one transaction. The advisory
// lock serializes instances starting together (CREATE ... IF NOT EXISTS
// alone races on the catalog).
func migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('sluice_tasks_migrate'))`); err != nil {
			return err
		}
		if schema != "" {
			if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS sluice_tasks_schema (version integer NOT NULL)`); err != nil {
			return err
		}
		var version int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM sluice_tasks_schema`).Scan(&version); err != nil {
			return err
		}
		ms := migrations()
		if version > len(ms) {
			return fmt.Errorf("schema version %d is newer than this Sluice (%d)", version, len(ms))
		}
		for i := version; i < len(ms); i++ {
			if _, err := tx.Exec(ctx, ms[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		if version < len(ms) {
			if _, err := tx.Exec(ctx, `DELETE FROM sluice_tasks_schema`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO sluice_tasks_schema (version) VALUES ($1)`, len(ms)); err != nil {
				return err
			}
		}
		return nil
	})
}

// SchemaVersion returns the schema version recorded in the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.do(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM sluice_tasks_schema`).Scan(&v)
	})
	return v, err
}

// Close stops the sweep, waits for running operations and closes the pool.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.sweep.Stop()
	s.pool.Close()
	return nil
}

// do runs fn unless the store is closed.
func (s *Store) do(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return tasks.ErrClosed
	}
	return fn()
}

func (s *Store) now() time.Time { return tasks.Norm(s.opts.Now()) }

// columns of sluice_tasks in the order scanTask reads and insert writes
// them (after tenant).
const columns = `id, function, state, attempts, retries, idempotency_key, duplicate_of, event, result,
	error, last_status, labels, received_at, queued_at, dispatched_at, started_at, finished_at, delivered_at, version`

func scanTask(row pgx.Row, tenant string) (*tasks.Task, error) {
	t := &tasks.Task{Tenant: tenant}
	var labels []byte
	ts := &t.Times
	err := row.Scan(&t.ID, &t.Function, &t.State, &t.Attempts, &t.Retries, &t.IdempotencyKey, &t.DuplicateOf,
		&t.Event, &t.Result, &t.Error, &t.LastStatus, &labels, &ts.Received, &ts.Queued, &ts.Dispatched,
		&ts.Started, &ts.Finished, &ts.Delivered, &t.Version)
	if err != nil {
		return nil, err
	}
	if labels != nil {
		if err := json.Unmarshal(labels, &t.Labels); err != nil {
			return nil, fmt.Errorf("corrupt labels of task %s: %w", t.ID, err)
		}
	}
	ts.Received = ts.Received.UTC()
	for _, p := range []*time.Time{ts.Queued, ts.Dispatched, ts.Started, ts.Finished, ts.Delivered} {
		if p != nil {
			*p = p.UTC()
		}
	}
	return t, nil
}

// labelsArg is the jsonb parameter for labels: NULL when there are none.
func labelsArg(m map[string]string) (any, error) {
	if len(m) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// Create implements tasks.Store, in one transaction: the idempotency key
// (taken over only if expired) and the task row.
func (s *Store) Create(ctx context.Context, t *tasks.Task) error {
	now := s.now()
	if err := tasks.Prepare(t, now); err != nil {
		return err
	}
	labels, err := labelsArg(t.Labels)
	if err != nil {
		return fmt.Errorf("%w: labels: %v", tasks.ErrInvalid, err)
	}
	var dup *tasks.DuplicateError
	err = s.do(ctx, func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if t.IdempotencyKey != "" {
				var owner string
				// On conflict the row is locked even when the WHERE fails,
				// so the SELECT below sees the live owner.
				err := tx.QueryRow(ctx, `
INSERT INTO sluice_task_keys AS k (tenant, key, task_id, expires_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant, key) DO UPDATE SET task_id = EXCLUDED.task_id, expires_at = EXCLUDED.expires_at
	WHERE k.expires_at <= $5
RETURNING task_id`, t.Tenant, t.IdempotencyKey, t.ID, now.Add(s.opts.KeyWindow(t)), now).Scan(&owner)
				switch {
				case errors.Is(err, pgx.ErrNoRows):
					if err := tx.QueryRow(ctx, `SELECT task_id FROM sluice_task_keys WHERE tenant = $1 AND key = $2`,
						t.Tenant, t.IdempotencyKey).Scan(&owner); err != nil {
						return err
					}
					tasks.MarkDuplicate(t, owner, now)
					dup = &tasks.DuplicateError{Original: owner, Duplicate: t.ID}
				case err != nil:
					return err
				}
			}
			_, err := tx.Exec(ctx, `INSERT INTO sluice_tasks (tenant, `+columns+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)`,
				t.Tenant, t.ID, t.Function, t.State, t.Attempts, t.Retries, t.IdempotencyKey, t.DuplicateOf,
				t.Event, t.Result, t.Error, t.LastStatus, labels, t.Times.Received, t.Times.Queued,
				t.Times.Dispatched, t.Times.Started, t.Times.Finished, t.Times.Delivered, t.Version)
			if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == "23505" {
				return fmt.Errorf("%w: %s", tasks.ErrExists, t.ID)
			}
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("pgstore: create: %w", err)
	}
	if dup != nil {
		return dup
	}
	return nil
}

// Get implements tasks.Store.
func (s *Store) Get(ctx context.Context, tenant, id string) (*tasks.Task, error) {
	var t *tasks.Task
	err := s.do(ctx, func() error {
		var err error
		t, err = s.get(ctx, tenant, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: get: %w", err)
	}
	return t, nil
}

func (s *Store) get(ctx context.Context, tenant, id string) (*tasks.Task, error) {
	t, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM sluice_tasks WHERE tenant = $1 AND id = $2`, tenant, id), tenant)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", tasks.ErrNotFound, id)
	}
	return t, err
}

// updateSQL writes a task's mutable columns if its version is still $17.
const updateSQL = `UPDATE sluice_tasks SET state = $3, attempts = $4, retries = $5, event = $6, result = $7,
	error = $8, last_status = $9, labels = $10, queued_at = $11, dispatched_at = $12, started_at = $13,
	finished_at = $14, delivered_at = $15, version = $16
WHERE tenant = $1 AND id = $2 AND version = $17`

func updateArgs(next *tasks.Task, prevVersion int64) ([]any, error) {
	labels, err := labelsArg(next.Labels)
	if err != nil {
		return nil, fmt.Errorf("%w: labels: %v", tasks.ErrInvalid, err)
	}
	ts := next.Times
	return []any{next.Tenant, next.ID, next.State, next.Attempts, next.Retries, next.Event, next.Result,
		next.Error, next.LastStatus, labels, ts.Queued, ts.Dispatched, ts.Started, ts.Finished, ts.Delivered,
		next.Version, prevVersion}, nil
}

// Transition implements tasks.Store: read, advance, then write only if the
// version is unchanged; on a lost race, read again (the move may have
// become illegal meanwhile).
func (s *Store) Transition(ctx context.Context, tenant, id string, to tasks.State, mutate func(*tasks.Task) error) (*tasks.Task, error) {
	var next *tasks.Task
	err := s.do(ctx, func() error {
		for {
			cur, err := s.get(ctx, tenant, id)
			if err != nil {
				return err
			}
			next, err = tasks.Advance(cur, to, s.now(), mutate)
			if err != nil {
				return err
			}
			args, err := updateArgs(next, cur.Version)
			if err != nil {
				return err
			}
			tag, err := s.pool.Exec(ctx, updateSQL, args...)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				return nil
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: transition: %w", err)
	}
	return next, nil
}

// deleteSQL deletes the tasks selected by the WHERE clause that follows
// it and releases the idempotency keys they hold; it returns how many tasks
// went.
const deleteSQL = `WITH d AS (DELETE FROM sluice_tasks WHERE %s RETURNING tenant, id, idempotency_key),
released AS (DELETE FROM sluice_task_keys k USING d WHERE k.tenant = d.tenant AND k.key = d.idempotency_key AND k.task_id = d.id)
SELECT count(*) FROM d`

// Delete implements tasks.Store.
func (s *Store) Delete(ctx context.Context, tenant, id string) error {
	err := s.do(ctx, func() error {
		var n int
		err := s.pool.QueryRow(ctx, fmt.Sprintf(deleteSQL, `tenant = $1 AND id = $2 AND state = ANY($3)`),
			tenant, id, stateNames(tasks.OpDelete.Sources())).Scan(&n)
		if err != nil || n == 1 {
			return err
		}
		cur, err := s.get(ctx, tenant, id)
		if err != nil {
			return err
		}
		return fmt.Errorf("%w: task %s is %s", tasks.ErrNotDone, id, cur.State)
	})
	if err != nil {
		return fmt.Errorf("pgstore: delete: %w", err)
	}
	return nil
}

func stateNames(states []tasks.State) []string {
	out := make([]string, len(states))
	for i, s := range states {
		out[i] = string(s)
	}
	return out
}

// where renders cq's filters and cursor as a WHERE clause and its arguments.
func where(cq tasks.CheckedQuery) (string, []any) {
	args := []any{cq.Tenant}
	conds := []string{"tenant = $1"}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if cq.Function != "" {
		conds = append(conds, "function = "+arg(cq.Function))
	}
	if len(cq.States) > 0 {
		conds = append(conds, "state = ANY("+arg(stateNames(cq.States))+")")
	}
	if !cq.ReceivedAfter.IsZero() {
		conds = append(conds, "received_at >= "+arg(cq.ReceivedAfter))
	}
	if !cq.ReceivedBefore.IsZero() {
		conds = append(conds, "received_at < "+arg(cq.ReceivedBefore))
	}
	if cq.After != nil {
		conds = append(conds, "(received_at, id) < ("+arg(cq.After.Received)+", "+arg(cq.After.ID)+` COLLATE "C")`)
	}
	return strings.Join(conds, " AND "), args
}

// List implements tasks.Store.
func (s *Store) List(ctx context.Context, q tasks.Query) (tasks.Page, error) {
	cq, err := q.Check()
	if err != nil {
		return tasks.Page{}, err
	}
	var page tasks.Page
	err = s.do(ctx, func() error {
		cond, args := where(cq)
		args = append(args, cq.Limit+1)
		rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM sluice_tasks WHERE `+cond+
			` ORDER BY received_at DESC, id DESC LIMIT $`+strconv.Itoa(len(args)), args...)
		if err != nil {
			return err
		}
		page.Tasks, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*tasks.Task, error) { return scanTask(r, cq.Tenant) })
		if err != nil {
			return err
		}
		if len(page.Tasks) > cq.Limit {
			page.Tasks = page.Tasks[:cq.Limit]
			page.Next = tasks.CursorAfter(page.Tasks[cq.Limit-1])
		}
		return nil
	})
	if err != nil {
		return tasks.Page{}, fmt.Errorf("pgstore: list: %w", err)
	}
	return page, nil
}

// Batch implements tasks.Store in one transaction: the matching rows are
// locked (FOR UPDATE), advanced in Go (the same effects as Transition) and
// written back in one round trip.
func (s *Store) Batch(ctx context.Context, q tasks.Query, op tasks.Op) (int, error) {
	if !op.Batchable() {
		return 0, fmt.Errorf("%w: %q is not a batch operation", tasks.ErrInvalid, op)
	}
	q.Cursor, q.Limit = "", 0
	cq, err := q.Check()
	if err != nil {
		return 0, err
	}
	// Only the states op applies to (narrowed further by q.States).
	var states []tasks.State
	for _, st := range op.Sources() {
		if len(q.States) == 0 || slices.Contains(q.States, st) {
			states = append(states, st)
		}
	}
	if len(states) == 0 {
		return 0, nil
	}
	cq.States = states
	n := 0
	err = s.do(ctx, func() error {
		cond, args := where(cq)
		if op == tasks.OpDelete {
			return s.pool.QueryRow(ctx, fmt.Sprintf(deleteSQL, cond), args...).Scan(&n)
		}
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			n = 0
			rows, err := tx.Query(ctx, `SELECT `+columns+` FROM sluice_tasks WHERE `+cond+` FOR UPDATE`, args...)
			if err != nil {
				return err
			}
			matched, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*tasks.Task, error) { return scanTask(r, cq.Tenant) })
			if err != nil {
				return err
			}
			now := s.now()
			var b pgx.Batch
			for _, cur := range matched {
				next, ok := op.Apply(cur, now)
				if !ok {
					continue
				}
				args, err := updateArgs(next, cur.Version)
				if err != nil {
					return err
				}
				b.Queue(updateSQL, args...).Exec(func(tag pgconn.CommandTag) error {
					if tag.RowsAffected() != 1 {
						return fmt.Errorf("task %s changed under its row lock", cur.ID)
					}
					n++
					return nil
				})
			}
			if b.Len() == 0 {
				return nil
			}
			return tx.SendBatch(ctx, &b).Close()
		})
	})
	if err != nil {
		return 0, fmt.Errorf("pgstore: batch %s: %w", op, err)
	}
	return n, nil
}

// CountByState implements tasks.Store.
func (s *Store) CountByState(ctx context.Context, tenant string) (map[tasks.State]int, error) {
	if err := tasks.CheckName("tenant", tenant); err != nil {
		return nil, err
	}
	out := map[tasks.State]int{}
	err := s.do(ctx, func() error {
		rows, err := s.pool.Query(ctx, `SELECT state, count(*) FROM sluice_tasks WHERE tenant = $1 GROUP BY state`, tenant)
		if err != nil {
			return err
		}
		var st tasks.State
		var n int
		_, err = pgx.ForEachRow(rows, []any{&st, &n}, func() error {
			out[st] = n
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: count: %w", err)
	}
	return out, nil
}

// SetPaused implements tasks.Store.
func (s *Store) SetPaused(ctx context.Context, tenant, function string, paused bool) error {
	for _, f := range []struct{ what, v string }{{"tenant", tenant}, {"function", function}} {
		if err := tasks.CheckName(f.what, f.v); err != nil {
			return err
		}
	}
	err := s.do(ctx, func() error {
		var err error
		if paused {
			_, err = s.pool.Exec(ctx, `INSERT INTO sluice_paused_functions (tenant, function, paused_at) VALUES ($1, $2, $3)
ON CONFLICT (tenant, function) DO NOTHING`, tenant, function, s.now())
		} else {
			_, err = s.pool.Exec(ctx, `DELETE FROM sluice_paused_functions WHERE tenant = $1 AND function = $2`, tenant, function)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: set paused: %w", err)
	}
	return nil
}

// PausedFunctions implements tasks.Store.
func (s *Store) PausedFunctions(ctx context.Context, tenant string) ([]string, error) {
	if err := tasks.CheckName("tenant", tenant); err != nil {
		return nil, err
	}
	var out []string
	err := s.do(ctx, func() error {
		rows, err := s.pool.Query(ctx, `SELECT function FROM sluice_paused_functions WHERE tenant = $1 ORDER BY function`, tenant)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: paused functions: %w", err)
	}
	return out, nil
}

// PurgeExpiredKeys deletes idempotency keys whose dedup window has passed
// and returns how many. The background sweep calls it; Create ignores
// expired keys whether or not they were purged.
func (s *Store) PurgeExpiredKeys(ctx context.Context) (int, error) {
	var n int64
	err := s.do(ctx, func() error {
		tag, err := s.pool.Exec(ctx, `DELETE FROM sluice_task_keys WHERE expires_at <= $1`, s.now())
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("pgstore: purge keys: %w", err)
	}
	return int(n), nil
}
