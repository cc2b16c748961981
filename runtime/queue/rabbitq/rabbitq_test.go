package rabbitq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpconf"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/queue/queuetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open connects a queue with a prefix of its own, so that the tests'
// queues stay apart from everything else on the broker.
func open(t testing.TB, cfg Config) *Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg.URL = testenv.RabbitURL(t)
	cfg.Prefix = testenv.UniqueName(t, "sluice")
	q, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	purgeAtCleanup(t, cfg.URL, cfg.Prefix)
	return q
}

// purgeAtCleanup deletes, when t ends, the queues, retry queues and
// registry stream made under prefix, so that test runs do not pile up
// quorum queues and streams on the shared broker (every stream holds file
// handles of the broker's: a few hundred left behind exhausted its 1,024
// and it stopped accepting connections).
func purgeAtCleanup(t testing.TB, url, prefix string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		q, err := Open(ctx, Config{URL: url, Prefix: prefix}, nil)
		if err != nil {
			t.Errorf("purge %s: %v", prefix, err)
			return
		}
		defer func() { _ = q.Close(context.Background()) }()
		names, err := q.Queues(ctx)
		if err != nil {
			t.Errorf("purge %s: %v", prefix, err)
		}
		targets := []string{q.registryName()}
		for _, name := range names {
			targets = append(targets, q.QueueName(name), q.retryName(name))
		}
		for _, rn := range targets {
			err := q.withChannel(ctx, func(ch *amqp.Channel) error {
				_, err := ch.QueueDelete(rn, false, false, false)
				return err
			})
			if err != nil {
				t.Errorf("purge %s: delete %s: %v", prefix, rn, err)
			}
		}
	})
}

// TestQueueSuite runs the behaviour shared with the other queues, on
// quorum queues (the default) and on classic ones.
func TestQueueSuite(t *testing.T) {
	for _, typ := range []string{pipelines.RabbitQueueQuorum, pipelines.RabbitQueueClassic} {
		t.Run(typ, func(t *testing.T) {
			queuetest.Run(t, queuetest.Harness{
				Open:  func(t *testing.T) queue.Queue { return open(t, Config{QueueType: typ}) },
				Moves: true,
			})
		})
	}
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestDuplicatePublishStoresTwice: RabbitMQ does not deduplicate; a
// repeated msgID is stored again and no Receipt says Duplicate.
func TestDuplicatePublishStoresTwice(t *testing.T) {
	q := open(t, Config{})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	name := testenv.UniqueName(t, "dup")
	for range 2 {
		r, err := q.Publish(ctxOf(t), name, "same-id", []byte("x"), nil)
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if r.Duplicate {
			t.Fatalf("Receipt %+v reports a duplicate", r)
		}
	}
	if n, err := q.Depth(ctxOf(t), name); err != nil || n != 2 {
		t.Fatalf("Depth = %d, %v; want 2", n, err)
	}
}

// TestTooLarge: a message over MaxMessageBytes fails with ErrTooLarge.
func TestTooLarge(t *testing.T) {
	q := open(t, Config{MaxMessageBytes: 1024})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	_, err := q.Publish(ctxOf(t), "big", "", make([]byte, 4096), nil)
	if !errors.Is(err, queue.ErrTooLarge) {
		t.Fatalf("Publish of 4 KiB with a 1 KiB limit: %v, want ErrTooLarge", err)
	}
}

// openPrefix opens a second Queue on the same prefix as q, as another
// process would.
func openPrefix(t *testing.T, q *Queue) *Queue {
	t.Helper()
	o, err := Open(ctxOf(t), Config{URL: q.cfg.URL, Prefix: q.cfg.Prefix}, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = o.Close(context.Background()) })
	return o
}

func connect(t *testing.T, q *Queue, name string) connectors.Source {
	t.Helper()
	src := q.Source(name, connectors.Options{Window: 8, Name: "test"})
	if err := src.Connect(ctxOf(t)); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = src.Close(ctx)
	})
	return src
}

func depth(t *testing.T, q *Queue, name string) int {
	t.Helper()
	n, err := q.Depth(ctxOf(t), name)
	if err != nil {
		t.Fatalf("Depth(%s): %v", name, err)
	}
	return n
}

// TestRetryAfterWaitsInRetryQueue: a message acknowledged with RetryAfter
// is not delivered again before the delay, counts in Depth meanwhile (it
// waits in the retry queue), and comes back as it was.
func TestRetryAfterWaitsInRetryQueue(t *testing.T) {
	q := open(t, Config{})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	name := "retry"
	ev := cetest.Full(t, "later")
	data, headers, err := queue.EncodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Publish(ctxOf(t), name, "msg-later", data, headers); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	src := connect(t, q, name)
	_, ack, err := src.Read(ctxOf(t))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	const delay = 1500 * time.Millisecond
	acked := time.Now()
	if err := ack(ctxOf(t), queue.RetryAfter(errors.New("not now"), delay)); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if n := depth(t, q, name); n != 1 {
		t.Fatalf("Depth while waiting for the retry = %d, want 1", n)
	}
	msg, ack, err := src.Read(ctxOf(t))
	if err != nil {
		t.Fatalf("Read after the delay: %v", err)
	}
	if waited := time.Since(acked); waited < delay {
		t.Fatalf("delivered again after %s, before the %s asked for", waited, delay)
	}
	cetest.Equal(t, ev, msg.Event)
	if msg.Coordinates.ID != "msg-later" || msg.Coordinates.Topic != name {
		t.Fatalf("Coordinates = %+v, want ID msg-later and Topic %s", msg.Coordinates, name)
	}
	if err := ack(ctxOf(t), nil); err != nil {
		t.Fatalf("ack: %v", err)
	}
	waitDepth(t, q, name, 0)
	// Both queues go, the retry queue included.
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := src.Close(closeCtx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	deleteWhenIdle(t, q, name)
	err = q.withChannel(ctxOf(t), func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclarePassive(q.retryName(name), true, false, false, false, nil)
		return err
	})
	if ae := (*amqp.Error)(nil); !errors.As(err, &ae) || ae.Code != amqp.NotFound {
		t.Fatalf("retry queue after DeleteQueue: %v, want NOT_FOUND", err)
	}
}

// waitDepth waits until Depth(name) is want.
func waitDepth(t *testing.T, q *Queue, name string, want int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := depth(t, q, name)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Depth(%s) = %d, want %d", name, n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deleteWhenIdle deletes name once the broker no longer counts a closed
// reader's consumer.
func deleteWhenIdle(t *testing.T, q *Queue, name string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := q.DeleteQueue(ctxOf(t), name)
		if err == nil {
			return
		}
		if !errors.Is(err, queue.ErrNotEmpty) || time.Now().After(deadline) {
			t.Fatalf("DeleteQueue: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQueuesSeenByOtherInstances: the registry is shared: a second Queue
// on the same prefix lists what the first created, and not what it
// deleted.
func TestQueuesSeenByOtherInstances(t *testing.T) {
	q := open(t, Config{})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	for _, name := range []string{"a.one", "b.two"} {
		if err := q.CreateQueue(ctxOf(t), name); err != nil {
			t.Fatalf("CreateQueue(%s): %v", name, err)
		}
	}
	other := openPrefix(t, q)
	got, err := other.Queues(ctxOf(t))
	if err != nil || !slices.Equal(got, []string{"a.one", "b.two"}) {
		t.Fatalf("Queues() = %v, %v; want [a.one b.two]", got, err)
	}
	if err := q.DeleteQueue(ctxOf(t), "a.one"); err != nil {
		t.Fatalf("DeleteQueue: %v", err)
	}
	got, err = other.Queues(ctxOf(t))
	if err != nil || !slices.Equal(got, []string{"b.two"}) {
		t.Fatalf("Queues() after the deletion = %v, %v; want [b.two]", got, err)
	}
}

// TestPublishAfterDeletionElsewhere: a queue deleted by another process
// since this one declared it is declared again (the mandatory publish
// comes back unroutable instead of vanishing).
func TestPublishAfterDeletionElsewhere(t *testing.T) {
	q := open(t, Config{})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	if _, err := q.Publish(ctxOf(t), "gone", "", []byte("x"), nil); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	other := openPrefix(t, q)
	src := connect(t, other, "gone")
	_, ack, err := src.Read(ctxOf(t))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if err := ack(ctxOf(t), nil); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if err := other.DeleteQueue(ctxOf(t), "gone"); !errors.Is(err, queue.ErrNotEmpty) {
		t.Fatalf("DeleteQueue with a reader attached: %v, want ErrNotEmpty", err)
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := src.Close(closeCtx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	deleteWhenIdle(t, other, "gone")
	if _, err := q.Publish(ctxOf(t), "gone", "", []byte("y"), nil); err != nil {
		t.Fatalf("Publish after the deletion elsewhere: %v", err)
	}
	if n := depth(t, q, "gone"); n != 1 {
		t.Fatalf("Depth = %d, want 1", n)
	}
}

// TestMoveFilter: Move transfers only what the filter accepts, showing it
// the message as published; the rest stays.
func TestMoveFilter(t *testing.T) {
	q := open(t, Config{})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	for i, tenant := range []string{"x", "y", "x"} {
		ev := cetest.New(t, fmt.Sprintf("m-%d", i), map[string]any{"i": i})
		ev.SetExtension("tenant", tenant)
		data, headers, err := queue.EncodeEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Publish(ctxOf(t), "from", fmt.Sprintf("id-%d", i), data, headers); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	var seen []string
	n, err := q.Move(ctxOf(t), "from", "to", func(m *queue.Stored) bool {
		if m.Queue != "from" || m.Headers[queue.ContentTypeHeader] != "application/json" || len(m.Data) == 0 {
			t.Errorf("filter saw %+v", m)
		}
		seen = append(seen, m.MsgID)
		return m.Headers[queue.HeaderPrefix+"tenant"] == "x"
	})
	if err != nil || n != 2 {
		t.Fatalf("Move = %d, %v; want 2", n, err)
	}
	slices.Sort(seen)
	if !slices.Equal(seen, []string{"id-0", "id-1", "id-2"}) {
		t.Fatalf("filter saw %v, want each message once", seen)
	}
	if to := depth(t, q, "to"); to != 2 {
		t.Fatalf("Depth of the target after Move = %d, want 2", to)
	}
	// The broker requeues the rejected message once Move's channel closed,
	// asynchronously.
	waitDepth(t, q, "from", 1)
	src := connect(t, q, "to")
	for range 2 {
		msg, ack, err := src.Read(ctxOf(t))
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if msg.Event.Extensions()["tenant"] != "x" || !strings.HasPrefix(msg.Coordinates.ID, "id-") {
			t.Fatalf("moved message %s: %+v", msg.Coordinates.ID, msg.Event)
		}
		_ = ack(ctxOf(t), nil)
	}
}

// TestPlainMessage: a message that is not a CloudEvent is wrapped into one
// whose id is the msgID.
func TestPlainMessage(t *testing.T) {
	q := open(t, Config{})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	if _, err := q.Publish(ctxOf(t), "plain", "m1", []byte("hello"), nil); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	src := connect(t, q, "plain")
	msg, ack, err := src.Read(ctxOf(t))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	defer func() { _ = ack(ctxOf(t), nil) }()
	if msg.DecodeErr != nil || msg.Event.Type() != queue.WrappedEventType || msg.Event.ID() != "m1" ||
		msg.Coordinates.ID != "m1" || string(msg.Event.Data()) != "hello" {
		t.Fatalf("plain message read as %+v (%v), coordinates %+v", msg.Event, msg.DecodeErr, msg.Coordinates)
	}
}

// TestReconnectAfterConnectionLoss: the Queue dials again when its
// connection was lost.
func TestReconnectAfterConnectionLoss(t *testing.T) {
	q := open(t, Config{})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	if _, err := q.Publish(ctxOf(t), "lost", "", []byte("1"), nil); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	q.mu.Lock()
	conn := q.conn
	q.mu.Unlock()
	if err := conn.Close(); err != nil {
		t.Fatalf("closing the connection: %v", err)
	}
	if _, err := q.Publish(ctxOf(t), "lost", "", []byte("2"), nil); err != nil {
		t.Fatalf("Publish after the connection was lost: %v", err)
	}
	if n := depth(t, q, "lost"); n != 2 {
		t.Fatalf("Depth = %d, want 2", n)
	}
}

// TestUnreachableBroker: Open gives up when its context ends; a Queue whose
// broker vanished fails calls at once between backoff attempts.
func TestUnreachableBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	url := "amqp://guest:guest@" + testenv.FreeAddr(t) + "/"
	_, err := Open(ctx, Config{URL: url}, nil)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open of a closed port: %v, want the context's deadline", err)
	}
	q := open(t, Config{})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	q.dialer, err = amqpconf.New(url, time.Second, nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	q.mu.Lock()
	conn := q.conn
	q.mu.Unlock()
	_ = conn.Close()
	for range 2 { // the dial, then the backoff's refusal
		var de *dialError
		if _, err := q.Publish(ctxOf(t), "away", "", []byte("x"), nil); !errors.As(err, &de) {
			t.Fatalf("Publish without a broker: %v, want a dialError", err)
		}
	}
}

// TestTLS: the queue and its readers work over RabbitMQ's TLS listener,
// the server's certificate verified against the test CA.
func TestTLS(t *testing.T) {
	prefix := testenv.UniqueName(t, "sluice")
	q, err := Open(ctxOf(t), Config{
		URL: testenv.RabbitTLSURL(t), Prefix: prefix,
		TLS: &pipelines.TLSSpec{Enabled: true, CAFile: testenv.TLSCAFile(t)},
	}, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	purgeAtCleanup(t, testenv.RabbitURL(t), prefix)
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	if _, err := q.Publish(ctxOf(t), "tls", "m1", []byte("x"), nil); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	src := connect(t, q, "tls")
	msg, ack, err := src.Read(ctxOf(t))
	if err != nil || msg.Coordinates.ID != "m1" {
		t.Fatalf("Read: %v, %v", msg, err)
	}
	if err := ack(ctxOf(t), nil); err != nil {
		t.Fatalf("ack: %v", err)
	}
	waitDepth(t, q, "tls", 0)
}

// TestRetireSequence follows the async service's retire of a dedicated
// queue: Move what is ready while a reader holds some messages, stop the
// reader (its messages go back), Move again, delete. Every message ends up
// in the target queue once, and the emptied queue is gone.
func TestRetireSequence(t *testing.T) {
	q := open(t, Config{})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	for i := range 5 {
		if _, err := q.Publish(ctxOf(t), "from", fmt.Sprintf("id-%d", i), []byte("x"), nil); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	src := q.Source("from", connectors.Options{Window: 2, Name: "held"})
	if err := src.Connect(ctxOf(t)); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	for range 2 {
		if _, _, err := src.Read(ctxOf(t)); err != nil {
			t.Fatalf("Read: %v", err)
		}
	}
	if n := depth(t, q, "from"); n != 5 {
		t.Fatalf("Depth with 2 held = %d, want 5", n)
	}
	moved, err := q.Move(ctxOf(t), "from", "to", nil)
	if err != nil || moved != 3 {
		t.Fatalf("Move with 2 held = %d, %v; want 3", moved, err)
	}
	if err := q.DeleteQueue(ctxOf(t), "from"); !errors.Is(err, queue.ErrNotEmpty) {
		t.Fatalf("DeleteQueue with 2 held: %v, want ErrNotEmpty", err)
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = src.Close(closeCtx) // unacknowledged: the broker requeues them
	waitDepth(t, q, "from", 2)
	moved, err = q.Move(ctxOf(t), "from", "to", nil)
	if err != nil || moved != 2 {
		t.Fatalf("Move after the reader stopped = %d, %v; want 2", moved, err)
	}
	deleteWhenIdle(t, q, "from")
	if n := depth(t, q, "to"); n != 5 {
		t.Fatalf("Depth of the target = %d, want 5", n)
	}
	queues, err := q.Queues(ctxOf(t))
	if err != nil || !slices.Equal(queues, []string{"to"}) {
		t.Fatalf("Queues() = %v, %v; want [to]", queues, err)
	}
}

// TestRetryAfterRetryQueueDeletedElsewhere: a retry queue this process
// declared and another one deleted (with its queue) is declared again: the
// retry still waits out its delay.
func TestRetryAfterRetryQueueDeletedElsewhere(t *testing.T) {
	q := open(t, Config{})
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	other := openPrefix(t, q)
	const delay = time.Second
	retryOnce := func(publisher *Queue) {
		t.Helper()
		if _, err := publisher.Publish(ctxOf(t), "again", "m", []byte("x"), nil); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		src := q.Source("again", connectors.Options{Window: 1, Name: "retry"})
		if err := src.Connect(ctxOf(t)); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := src.Close(ctx); err != nil {
				t.Errorf("Close: %v", err)
			}
		}()
		_, ack, err := src.Read(ctxOf(t))
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		acked := time.Now()
		if err := ack(ctxOf(t), queue.RetryAfter(errors.New("later"), delay)); err != nil {
			t.Fatalf("ack: %v", err)
		}
		_, ack, err = src.Read(ctxOf(t))
		if err != nil {
			t.Fatalf("Read after the delay: %v", err)
		}
		if waited := time.Since(acked); waited < delay {
			t.Fatalf("delivered again after %s, before the %s asked for", waited, delay)
		}
		if err := ack(ctxOf(t), nil); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	retryOnce(q)
	deleteWhenIdle(t, other, "again")
	retryOnce(other) // so that q learns of the deletion only from the retry
}
