package async

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/queue/kafkaq"
	"github.com/sluicehq/sluice/runtime/tasks"
)

// openKafkaQueue connects a Kafka task queue with a prefix of its own; it
// is closed when the test ends, after the services using it stopped.
func openKafkaQueue(t *testing.T, prefix string) *kafkaq.Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	q, err := kafkaq.Open(ctx, kafkaq.Config{Brokers: testenv.KafkaBrokers(t), Prefix: prefix}, nil)
	if err != nil {
		t.Fatalf("kafkaq.Open: %v", err)
	}
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	return q
}

// TestKafkaQueue runs the service on the Kafka task queue: tasks are
// accepted and run; a stop in the middle of a backlog and a restart (on a
// new connection, as a new process would) resume what was queued or
// interrupted; and a duplicate message of a finished task — Kafka does not
// deduplicate publishes — is dropped without calling the function again.
func TestKafkaQueue(t *testing.T) {
	dir := t.TempDir()
	prefix := testenv.UniqueName(t, "sluice")
	fn := newFnServer(t)
	b := newBlocking()
	fn.setHandler(b.handle)
	e := startEnv(t, fn, envOpts{dir: dir, queue: openKafkaQueue(t, prefix), tweak: func(c *Config) { c.DrainTimeout = 200 * time.Millisecond }})
	var ids []string
	for range 20 {
		ids = append(ids, e.accept(keyAcme, "echo", `{}`))
	}
	receive(t, b.started, "a call")
	e.shutdown()

	fn.setHandler(nil)
	e = startEnv(t, fn, envOpts{dir: dir, queue: openKafkaQueue(t, prefix)})
	interrupted := 0
	for _, id := range ids {
		if v := e.waitState(keyAcme, id, tasks.Succeeded); v.Attempts > 1 {
			interrupted++
		}
	}
	if interrupted == 0 {
		t.Fatal("no attempt was interrupted by the stop")
	}
	more := e.accept(keyAcme, "echo", `{"after":"restart"}`)
	e.waitState(keyAcme, more, tasks.Succeeded)

	// Pause and resume: a paused task's message comes back through the
	// queue (re-published after PausedRedelivery) until it can run.
	var st FunctionState
	if code, _ := e.call(http.MethodPost, "/v1/functions/echo:pause", keyAcme, nil, nil, &st); code != http.StatusOK || !st.Paused {
		t.Fatalf("pause: %d %+v", code, st)
	}
	paused := []string{e.accept(keyAcme, "echo", `{}`), e.accept(keyAcme, "echo", `{}`)}
	e.waitState(keyAcme, e.accept(keyAcme, "other", `{}`), tasks.Succeeded)
	for _, id := range paused {
		if _, v := e.task(keyAcme, id); v.State != tasks.Paused || fn.callsOf(id) != 0 {
			t.Fatalf("paused task %+v", v)
		}
	}
	if code, _ := e.call(http.MethodPost, "/v1/functions/echo:resume", keyAcme, nil, nil, &st); code != http.StatusOK || st.Paused {
		t.Fatalf("resume: %d %+v", code, st)
	}
	for _, id := range paused {
		if v := e.waitState(keyAcme, id, tasks.Succeeded); v.Attempts != 1 {
			t.Fatalf("resumed task %+v", v)
		}
	}

	// Publish the finished task's message again, as a retried Publish
	// whose first write did land would.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	task, err := e.store.Get(ctx, "acme", more)
	if err != nil {
		t.Fatalf("Get(%s): %v", more, err)
	}
	if _, err := e.svc.publishTask(ctx, task, nil); err != nil {
		t.Fatalf("publish a duplicate: %v", err)
	}
	name := e.svc.place.Route("acme", "echo")
	eventually(t, "the duplicate to be consumed", func() bool { return e.depth(name) == 0 })
	if v := e.waitState(keyAcme, more, tasks.Succeeded); v.Attempts != 1 {
		t.Fatalf("task %s after its duplicate: %+v", more, v)
	}
	if n := fn.callsOf(more); n != 1 {
		t.Fatalf("task %s: function called %d times, want 1 (the duplicate must not run)", more, n)
	}
}

// immovable is a queue that says it cannot Move (as Kafka's), counting the
// placement loop's Depth calls.
type immovable struct {
	queue.Queue
	canMove bool
	depths  atomic.Int64
}

func (q *immovable) CanMove() bool { return q.canMove }

func (q *immovable) Depth(ctx context.Context, name string) (int, error) {
	q.depths.Add(1)
	return q.Queue.Depth(ctx, name)
}

// TestPlacementNeedsMove: the placement loop (the only reader of queue
// depths) runs only on a queue that can Move.
func TestPlacementNeedsMove(t *testing.T) {
	for _, canMove := range []bool{true, false} {
		t.Run(fmt.Sprintf("canMove=%v", canMove), func(t *testing.T) {
			dir := t.TempDir()
			emb, err := queue.OpenEmbedded(context.Background(), queue.EmbeddedConfig{DataDir: filepath.Join(dir, "queue")}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = emb.Close(context.Background()) })
			q := &immovable{Queue: emb, canMove: canMove}
			e := startEnv(t, nil, envOpts{dir: dir, queue: q, tweak: func(c *Config) { c.PlacementInterval = 10 * time.Millisecond }})
			if canMove {
				eventually(t, "the placement loop to sample depths", func() bool { return q.depths.Load() > 0 })
				return
			}
			for range 5 {
				e.waitState(keyAcme, e.accept(keyAcme, "echo", `{}`), tasks.Succeeded)
			}
			e.shutdown()
			if n := q.depths.Load(); n != 0 {
				t.Fatalf("the placement loop ran on a queue that cannot move (%d depth samples)", n)
			}
		})
	}
}
