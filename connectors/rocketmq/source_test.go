package rocketmq

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqtest"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
)

// fixture is a fresh topic (and group) on the real broker.
type fixture struct {
	ns    []string
	topic string
	group string
}

func newFixture(t *testing.T, queues int) fixture {
	t.Helper()
	f := fixture{ns: []string{testenv.RocketMQNameServer(t)}, topic: testenv.UniqueName(t, "t"), group: testenv.UniqueName(t, "g")}
	testenv.RocketMQCreateTopic(t, f.topic, queues)
	return f
}

func (f fixture) spec() pipelines.RocketMQSource {
	return pipelines.RocketMQSource{NameServers: f.ns, Topic: f.topic, Group: f.group}
}

func events(t *testing.T, n int) []cloudevents.Event {
	t.Helper()
	p := testenv.UniqueName(t, "ev")
	evs := make([]cloudevents.Event, n)
	for i := range evs {
		evs[i] = cetest.New(t, fmt.Sprintf("%s-%03d", p, i), map[string]int{"i": i})
	}
	return evs
}

// TestWrappedMessages reads messages that are not CloudEvents, and one that
// claims to be but is broken, from the real broker.
func TestWrappedMessages(t *testing.T) {
	f := newFixture(t, 1)
	p := rocketmqtest.NewProducer(t, f.ns)
	plain := primitive.NewMessage(f.topic, []byte("hello"))
	plain.WithTag("created")
	plain.WithKeys([]string{"k1", "k2"})
	plain.WithProperty("customer", "c-9")
	plain.WithProperty("content-type", "text/plain")
	res := p.Send(t, plain, 0)
	broken := primitive.NewMessage(f.topic, []byte("x"))
	broken.WithProperty("ce_specversion", "1.0")
	broken.WithProperty("ce_type", "no.id")
	p.Send(t, broken, 0)

	spec := f.spec()
	spec.KeyProperty = "customer"
	spec.EventType = "com.example.plain"
	src := newTestSource(t, spec, connectorsOptions(0))
	connect(t, src)

	msg, ack := readOne(t, src)
	ev := msg.Event
	if msg.DecodeErr != nil {
		t.Fatalf("DecodeErr = %v", msg.DecodeErr)
	}
	if ev.ID() != res.MsgID || msg.Coordinates.ID != res.MsgID {
		t.Errorf("id %q, coordinates id %q, want the client message id %q", ev.ID(), msg.Coordinates.ID, res.MsgID)
	}
	exts := ev.Extensions()
	if ev.Source() != "rocketmq://"+f.ns[0]+"/"+f.topic || ev.Type() != "com.example.plain" || ev.Subject() != "created" ||
		ev.DataContentType() != "text/plain" || string(ev.Data()) != "hello" ||
		exts[ExtTags] != "created" || exts[ExtKeys] != "k1 k2" || exts[ExtOffset] != "0" || exts["partitionkey"] != "k1" {
		t.Errorf("wrapped event = %v", ev)
	}
	if d := time.Since(ev.Time()); d < 0 || d > time.Hour {
		t.Errorf("time %v is not the born timestamp", ev.Time())
	}
	if msg.Key != "c-9" {
		t.Errorf("Key = %q, want the customer property", msg.Key)
	}
	if err := ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}

	msg, ack = readOne(t, src)
	if !errors.Is(msg.DecodeErr, rocketmqce.ErrInvalidCloudEvent) || msg.Coordinates.Offset != 1 {
		t.Errorf("broken message: DecodeErr %v, offset %d", msg.DecodeErr, msg.Coordinates.Offset)
	}
	if err := ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}

// TestTagSelector: only the subscribed tags arrive, in order.
func TestTagSelector(t *testing.T) {
	f := newFixture(t, 1)
	p := rocketmqtest.NewProducer(t, f.ns)
	evs := events(t, 6)
	tags := []string{"a", "b", "c", "a", "b", "c"}
	for i, ev := range evs {
		m := rocketmqtest.Message(t, f.topic, ev)
		m.WithTag(tags[i])
		p.Send(t, m, 0)
	}
	spec := f.spec()
	spec.Tags = "a || c"
	src := newTestSource(t, spec, connectorsOptions(0))
	connect(t, src)
	for _, want := range []int{0, 2, 3, 5} {
		msg, ack := readOne(t, src)
		if msg.Event.ID() != evs[want].ID() {
			t.Fatalf("got %s, want %s", msg.Event.ID(), evs[want].ID())
		}
		if err := ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	expectNothing(t, src, 2*time.Second)
}

// TestStartLatest: a new group with start: latest skips what was there
// before Connect and gets what is sent after it returns.
func TestStartLatest(t *testing.T) {
	f := newFixture(t, 2)
	evs := events(t, 6)
	rocketmqtest.PublishEvents(t, f.ns, f.topic, 2, evs[:4])
	spec := f.spec()
	spec.Start = pipelines.StartLatest
	src := newTestSource(t, spec, connectorsOptions(0), WithAssignWait(30*time.Second))
	connect(t, src)
	rocketmqtest.PublishEvents(t, f.ns, f.topic, 2, evs[4:])
	got := map[string]bool{}
	for range 2 {
		msg, ack := readOne(t, src)
		got[msg.Event.ID()] = true
		_ = ack(context.Background(), nil)
	}
	if !got[evs[4].ID()] || !got[evs[5].ID()] {
		t.Errorf("got %v, want only the events sent after Connect", got)
	}
	expectNothing(t, src, 2*time.Second)
}

// TestOrderAndWindowWithConcurrentAcks: with acks arriving late and out of
// order from other goroutines, every queue is delivered in order, at most
// window messages per queue are ever unacknowledged, and nothing is lost or
// delivered twice.
func TestOrderAndWindowWithConcurrentAcks(t *testing.T) {
	const queues, n, window = 3, 300, 8
	f := newFixture(t, queues)
	evs := events(t, n)
	rocketmqtest.PublishEvents(t, f.ns, f.topic, queues, evs)
	src := newTestSource(t, f.spec(), connectorsOptions(window))
	connect(t, src)

	var (
		mu      sync.Mutex
		open    = map[string]int{} // lane → read, not acked
		maxOpen int
		wg      sync.WaitGroup
	)
	last := map[string]int64{}
	seen := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for len(seen) < n {
		msg, ack, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("Read after %d: %v", len(seen), err)
		}
		id := msg.Event.ID()
		if seen[id] {
			t.Fatalf("%s delivered twice", id)
		}
		seen[id] = true
		if off, ok := last[msg.Lane]; ok && msg.Coordinates.Offset <= off {
			t.Fatalf("lane %s: offset %d after %d", msg.Lane, msg.Coordinates.Offset, off)
		}
		last[msg.Lane] = msg.Coordinates.Offset
		mu.Lock()
		open[msg.Lane]++
		maxOpen = max(maxOpen, open[msg.Lane])
		mu.Unlock()
		wg.Go(func() {
			time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
			mu.Lock()
			open[msg.Lane]--
			mu.Unlock()
			if err := ack(context.Background(), nil); err != nil {
				t.Errorf("ack %s: %v", id, err)
			}
		})
	}
	wg.Wait()
	if maxOpen > window {
		t.Errorf("%d messages of one queue were unacknowledged at once, window %d", maxOpen, window)
	}
	if len(last) != queues {
		t.Errorf("read from lanes %v, want %d", last, queues)
	}
	expectNothing(t, src, time.Second)
	if err := src.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	src.mu.Lock()
	parked := src.parked
	src.mu.Unlock()
	if parked != 0 {
		t.Errorf("%d consume callbacks still parked after Close", parked)
	}
}

// TestRebalanceRevokes: when a second consumer joins, the first one's
// moved queues are revoked (Revoked closes, acks report ErrRevoked) and the
// second one receives every message the first did not acknowledge.
func TestRebalanceRevokes(t *testing.T) {
	const queues, n = 4, 40
	f := newFixture(t, queues)
	evs := events(t, n)
	rocketmqtest.PublishEvents(t, f.ns, f.topic, queues, evs)
	a := newTestSource(t, f.spec(), connectorsOptions(0))
	connect(t, a)
	held := make([]struct {
		msg *connectors.Message
		ack connectors.AckFunc
	}, 0, n)
	for range n {
		msg, ack := readOne(t, a)
		held = append(held, struct {
			msg *connectors.Message
			ack connectors.AckFunc
		}{msg, ack})
	}

	b := newTestSource(t, f.spec(), connectorsOptions(0))
	connect(t, b)
	var revoked []int
	deadline := time.Now().Add(90 * time.Second)
	for len(revoked) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no lane of the first consumer was revoked after the second joined")
		}
		time.Sleep(50 * time.Millisecond)
		for i, h := range held {
			select {
			case <-h.msg.Revoked:
				revoked = append(revoked, i)
			default:
			}
		}
	}
	ackedByA := map[string]bool{}
	for i, h := range held {
		err := h.ack(context.Background(), nil)
		isRevoked := false
		for _, r := range revoked {
			isRevoked = isRevoked || r == i
		}
		switch {
		case isRevoked && !errors.Is(err, connectors.ErrRevoked):
			t.Errorf("ack of revoked %s = %v, want ErrRevoked", h.msg.Event.ID(), err)
		case !isRevoked && err != nil:
			// Revoked after the scan: only ErrRevoked is acceptable.
			if !errors.Is(err, connectors.ErrRevoked) {
				t.Errorf("ack %s: %v", h.msg.Event.ID(), err)
			}
		case err == nil:
			ackedByA[h.msg.Event.ID()] = true
		}
	}
	want := map[string]bool{}
	for _, e := range evs {
		if !ackedByA[e.ID()] {
			want[e.ID()] = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for len(want) > 0 {
		msg, ack, err := b.Read(ctx)
		if err != nil {
			t.Fatalf("second consumer: %v; still missing %d of the first's unacknowledged messages", err, len(want))
		}
		delete(want, msg.Event.ID())
		_ = ack(context.Background(), nil)
	}
}

// TestBrokerRetry: with retry: broker a nacked message comes back through
// the group's %RETRY% topic (same event), and once maxReconsumeTimes is
// used up it goes to %DLQ%<group> instead.
func TestBrokerRetry(t *testing.T) {
	f := newFixture(t, 1)
	evs := events(t, 2)
	rocketmqtest.PublishEvents(t, f.ns, f.topic, 1, evs)
	spec := f.spec()
	spec.Retry = pipelines.RocketMQRetryBroker
	spec.MaxReconsumeTimes = 1
	src := newTestSource(t, spec, connectorsOptions(0))
	connect(t, src)

	nack := errors.New("test: failed")
	for i := range 2 {
		_, ack := readOne(t, src)
		var err error
		if i == 1 {
			err = nack
		}
		if aerr := ack(context.Background(), err); aerr != nil {
			t.Fatal(aerr)
		}
	}
	// The broker's first delay level for a reconsumed message is 10 s.
	msg, ack := readOne(t, src)
	if msg.Event.ID() != evs[1].ID() || msg.Coordinates.Topic != "%RETRY%"+f.group {
		t.Fatalf("redelivered %s from %s, want %s from %%RETRY%%%s", msg.Event.ID(), msg.Coordinates.Topic, evs[1].ID(), f.group)
	}
	if err := ack(context.Background(), nack); err != nil {
		t.Fatal(err)
	}
	dlq := rocketmqtest.ReadMessages(t, f.ns, "%DLQ%"+f.group, 1)
	if got := rocketmqtest.Decode(t, dlq[0]); got.ID() != evs[1].ID() {
		t.Errorf("dead letter %s, want %s", got.ID(), evs[1].ID())
	}
}

// TestConnectWaitsForTopic: Connect retries while the topic has no route,
// reporting it through Health, and consumes once it exists.
func TestConnectWaitsForTopic(t *testing.T) {
	ns := []string{testenv.RocketMQNameServer(t)}
	topic := testenv.UniqueName(t, "late")
	src := newTestSource(t, pipelines.RocketMQSource{NameServers: ns, Topic: topic, Group: testenv.UniqueName(t, "g")}, connectorsOptions(0))
	defer src.Close(context.Background())
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		done <- src.Connect(ctx)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for err := src.Health(); !errors.Is(err, ErrNoRoute); err = src.Health() {
		if time.Now().After(deadline) {
			t.Fatalf("Health = %v, want ErrNoRoute while the topic is missing", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	testenv.RocketMQCreateTopic(t, topic, 1)
	if err := <-done; err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if err := src.Health(); err != nil {
		t.Errorf("Health after Connect: %v", err)
	}
	evs := events(t, 1)
	rocketmqtest.PublishEvents(t, ns, topic, 1, evs)
	msg, ack := readOne(t, src)
	if msg.Event.ID() != evs[0].ID() {
		t.Errorf("got %s", msg.Event.ID())
	}
	_ = ack(context.Background(), nil)
}

// TestConnectNameServerDown: with no name server answering, Connect keeps
// retrying until its context ends, and Health says why.
func TestConnectNameServerDown(t *testing.T) {
	src := newTestSource(t, pipelines.RocketMQSource{NameServers: []string{testenv.FreeAddr(t)}, Topic: "t", Group: "g"}, connectorsOptions(0))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := src.Connect(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Connect = %v, want the context's deadline", err)
	}
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Health = %v, want the connection error", err)
	}
	if err := src.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, _, err := src.Read(context.Background()); !errors.Is(err, connectors.ErrClosed) {
		t.Errorf("Read after Close = %v, want ErrClosed", err)
	}
}

// TestPullWindowBoundsHeldMessages: with nothing acknowledged, a queue's
// pulls stop once its lane holds window messages (plus at most one pull
// batch), although many more are waiting in the broker.
func TestPullWindowBoundsHeldMessages(t *testing.T) {
	const window = 4
	f := newFixture(t, 1)
	rocketmqtest.PublishEvents(t, f.ns, f.topic, 1, events(t, 100))
	src := newTestSource(t, f.spec(), connectorsOptions(window))
	connect(t, src)
	var acks []connectors.AckFunc
	for range window {
		_, ack := readOne(t, src)
		acks = append(acks, ack)
	}
	defer func() {
		for _, ack := range acks {
			_ = ack(context.Background(), nil)
		}
	}()
	expectNothing(t, src, 2*time.Second) // time for further pulls, were they allowed
	src.mu.Lock()
	held := 0
	for _, l := range src.order {
		held = max(held, len(l.entries))
	}
	parked := src.parked
	src.mu.Unlock()
	if held < window || held >= 2*window {
		t.Errorf("a lane holds %d messages, want between %d and %d (window plus less than one pull batch)", held, window, 2*window-1)
	}
	if parked > held {
		t.Errorf("%d callbacks parked for %d held messages", parked, held)
	}
}
