package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/kafka/kafkace"
	"github.com/sluicehq/sluice/connectors/kafka/kafkaconf"
	"github.com/sluicehq/sluice/connectors/kafka/kafkatest"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
)

func TestNewRejectsBadSpecs(t *testing.T) {
	ok := pipelines.KafkaSource{Brokers: []string{"127.0.0.1:9092"}, Topics: []string{"t"}, Group: "g"}
	tests := []struct {
		name   string
		mutate func(*pipelines.KafkaSource)
		opts   connectors.Options
	}{
		{"no brokers", func(s *pipelines.KafkaSource) { s.Brokers = nil }, connectors.Options{}},
		{"no topics", func(s *pipelines.KafkaSource) { s.Topics = nil }, connectors.Options{}},
		{"empty topic", func(s *pipelines.KafkaSource) { s.Topics = []string{""} }, connectors.Options{}},
		{"no group", func(s *pipelines.KafkaSource) { s.Group = "" }, connectors.Options{}},
		{"bad start", func(s *pipelines.KafkaSource) { s.Start = "middle" }, connectors.Options{}},
		{"bad version", func(s *pipelines.KafkaSource) { s.Version = "x" }, connectors.Options{}},
		{"negative window", func(*pipelines.KafkaSource) {}, connectors.Options{Window: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := ok
			tc.mutate(&spec)
			if _, err := New(spec, tc.opts, nil); !errors.Is(err, kafkaconf.ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}

func TestNewConfiguresConsumer(t *testing.T) {
	spec := pipelines.KafkaSource{Brokers: []string{"127.0.0.1:9092"}, Topics: []string{"t"}, Group: "g", Start: "latest"}
	src, err := New(spec, connectors.Options{Window: 8, Name: "orders"}, nil, WithSaramaConfig(func(c *sarama.Config) {
		c.Consumer.Offsets.AutoCommit.Enable = true // must be overridden
	}))
	if err != nil {
		t.Fatal(err)
	}
	c := src.cfg
	if c.Consumer.Offsets.AutoCommit.Enable {
		t.Error("auto-commit enabled")
	}
	if c.Consumer.Offsets.Initial != sarama.OffsetNewest {
		t.Errorf("Initial = %d, want OffsetNewest", c.Consumer.Offsets.Initial)
	}
	if c.Metadata.Full {
		t.Error("Metadata.Full: the source would keep the metadata of every topic in the cluster")
	}
	if c.ChannelBufferSize != 8 || src.window != 8 {
		t.Errorf("ChannelBufferSize = %d, window = %d; want 8, 8", c.ChannelBufferSize, src.window)
	}
	if c.ClientID != "sluice-orders" {
		t.Errorf("ClientID = %q", c.ClientID)
	}
	if err := src.Close(context.Background()); err != nil {
		t.Errorf("Close before Connect: %v", err)
	}
}

func TestMapping(t *testing.T) {
	m := newMapper([]string{"b1:9092", "b2:9092"}, "")
	l := newLane(nil, "orders", 3, nil)
	ts := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	ce := cetest.Full(t, "ce-1")
	rec, err := kafkace.Encode(ce, "")
	if err != nil {
		t.Fatal(err)
	}
	ceHeaders := make([]*sarama.RecordHeader, len(rec.Headers))
	for i := range rec.Headers {
		ceHeaders[i] = &rec.Headers[i]
	}
	tests := []struct {
		name    string
		rec     *sarama.ConsumerMessage
		decode  bool // DecodeErr expected
		checkEv func(t *testing.T, msg *connectors.Message)
	}{
		{
			name: "plain record with key and content type",
			rec: &sarama.ConsumerMessage{Topic: "orders", Partition: 3, Offset: 42, Key: []byte("k1"), Value: []byte(`{"a":1}`),
				Timestamp: ts, Headers: []*sarama.RecordHeader{{Key: []byte("content-type"), Value: []byte("application/json")}}},
			checkEv: func(t *testing.T, msg *connectors.Message) {
				ev := msg.Event
				if ev.ID() != "orders-3-42" || ev.Source() != "kafka://b1:9092/orders" || ev.Type() != DefaultEventType {
					t.Errorf("id/source/type = %q %q %q", ev.ID(), ev.Source(), ev.Type())
				}
				if ev.Subject() != "k1" || !ev.Time().Equal(ts) || ev.DataContentType() != "application/json" || string(ev.Data()) != `{"a":1}` {
					t.Errorf("event = %v", ev)
				}
				x := ev.Extensions()
				if x["partitionkey"] != "k1" || x[ExtTopic] != "orders" || x[ExtPartition] != int32(3) || x[ExtOffset] != "42" {
					t.Errorf("extensions = %v", x)
				}
				if msg.Key != "k1" || msg.Size != 7 {
					t.Errorf("Key = %q, Size = %d", msg.Key, msg.Size)
				}
			},
		},
		{
			name: "plain record without key or headers",
			rec:  &sarama.ConsumerMessage{Topic: "orders", Partition: 3, Offset: 7, Value: []byte{0xff, 0x00}},
			checkEv: func(t *testing.T, msg *connectors.Message) {
				ev := msg.Event
				if ev.DataContentType() != DefaultContentType || ev.Subject() != "" || !ev.Time().IsZero() {
					t.Errorf("event = %v", ev)
				}
				if _, ok := ev.Extensions()["partitionkey"]; ok || msg.Key != "" {
					t.Errorf("partitionkey set without a key")
				}
				if err := ev.Validate(); err != nil {
					t.Errorf("wrapped event invalid: %v", err)
				}
			},
		},
		{
			name: "binary CloudEvent",
			rec:  &sarama.ConsumerMessage{Topic: "orders", Partition: 3, Offset: 8, Key: rec.Key, Value: rec.Value, Headers: ceHeaders},
			checkEv: func(t *testing.T, msg *connectors.Message) {
				cetest.Equal(t, ce, msg.Event)
				if msg.Key != "key-ce-1" {
					t.Errorf("Key = %q", msg.Key)
				}
			},
		},
		{
			name: "broken CloudEvent is wrapped with DecodeErr",
			rec: &sarama.ConsumerMessage{Topic: "orders", Partition: 3, Offset: 9, Value: []byte("raw"),
				Headers: []*sarama.RecordHeader{{Key: []byte("ce_specversion"), Value: []byte("1.0")}}},
			decode: true,
			checkEv: func(t *testing.T, msg *connectors.Message) {
				if msg.Event.ID() != "orders-3-9" || string(msg.Event.Data()) != "raw" {
					t.Errorf("wrapper = %v", msg.Event)
				}
			},
		},
		{
			name: "invalid structured JSON",
			rec: &sarama.ConsumerMessage{Topic: "orders", Partition: 3, Offset: 10, Value: []byte("{"),
				Headers: []*sarama.RecordHeader{{Key: []byte("content-type"), Value: []byte(kafkace.StructuredContentType)}}},
			decode: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			msg := m.message(tc.rec, l, now)
			if (msg.DecodeErr != nil) != tc.decode {
				t.Fatalf("DecodeErr = %v, want error: %v", msg.DecodeErr, tc.decode)
			}
			if tc.decode && !errors.Is(msg.DecodeErr, kafkace.ErrInvalidCloudEvent) {
				t.Errorf("DecodeErr = %v, want ErrInvalidCloudEvent", msg.DecodeErr)
			}
			want := connectors.Coordinates{System: "kafka", Topic: "orders", Partition: 3, Offset: tc.rec.Offset}
			if msg.Coordinates != want || msg.Lane != "orders/3" || msg.ReceivedAt != now || msg.Revoked == nil {
				t.Errorf("message = %+v", msg)
			}
			if tc.checkEv != nil {
				tc.checkEv(t, msg)
			}
		})
	}
}

// BenchmarkMapping measures the per-record mapping cost (the hot path).
func BenchmarkMapping(b *testing.B) {
	m := newMapper([]string{"b1:9092"}, "")
	l := newLane(nil, "orders", 0, nil)
	ce := cetest.Full(b, "bench")
	enc, err := kafkace.Encode(ce, "")
	if err != nil {
		b.Fatal(err)
	}
	hs := make([]*sarama.RecordHeader, len(enc.Headers))
	for i := range enc.Headers {
		hs[i] = &enc.Headers[i]
	}
	value := bytes.Repeat([]byte("x"), 1024)
	for _, bc := range []struct {
		name string
		rec  *sarama.ConsumerMessage
	}{
		{"plain", &sarama.ConsumerMessage{Topic: "orders", Key: []byte("k"), Value: value, Timestamp: time.Now()}},
		{"binary", &sarama.ConsumerMessage{Topic: "orders", Key: enc.Key, Value: enc.Value, Headers: hs}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			now := time.Now()
			for b.Loop() {
				_ = m.message(bc.rec, l, now)
			}
		})
	}
}

// fakeRecorder records what the source reports.
type fakeRecorder struct {
	mu        sync.Mutex
	lags      map[string]int64
	released  map[string]bool
	connected []bool
}

func newFakeRecorder() *fakeRecorder {
	return &fakeRecorder{lags: map[string]int64{}, released: map[string]bool{}}
}

func (r *fakeRecorder) PartitionLag(topic string, partition int32, lag int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lags[fmt.Sprintf("%s/%d", topic, partition)] = lag
}

func (r *fakeRecorder) PartitionReleased(topic string, partition int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.released[fmt.Sprintf("%s/%d", topic, partition)] = true
}

func (r *fakeRecorder) Connected(ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connected = append(r.connected, ok)
}

func (r *fakeRecorder) lag(lane string) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.lags[lane]
	return v, ok
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestConnectUnreachable: Connect retries with backoff, logs each attempt,
// reports unhealthy, and returns ctx's error.
func TestConnectUnreachable(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	rec := newFakeRecorder()
	spec := pipelines.KafkaSource{Brokers: []string{"127.0.0.1:1"}, Topics: []string{"t"}, Group: "g"}
	src, err := New(spec, connectors.Options{}, logger, WithRecorder(rec))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err = src.Connect(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect = %v, want DeadlineExceeded", err)
	}
	if err := src.Health(); err == nil {
		t.Error("Health = nil while unreachable")
	}
	out := logs.String()
	if !strings.Contains(out, "kafka connect failed") || !strings.Contains(out, "attempt=2") || !strings.Contains(out, "next_delay=") {
		t.Errorf("logs do not show retries with attempt and delay:\n%s", out)
	}
	if err := src.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestRealBrokerMapping reads plain and broken records from the broker and
// checks the recorder's lag and connection reports.
func TestRealBrokerMapping(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "map")
	kafkatest.CreateTopic(t, brokers, topic, 1)
	ts := time.Now().Truncate(time.Millisecond)
	kafkatest.Produce(t, brokers, []*sarama.ProducerMessage{
		{Topic: topic, Key: sarama.StringEncoder("k1"), Value: sarama.StringEncoder("hello"), Timestamp: ts,
			Headers: []sarama.RecordHeader{{Key: []byte("content-type"), Value: []byte("text/plain")}}},
		{Topic: topic, Value: sarama.StringEncoder("broken"),
			Headers: []sarama.RecordHeader{{Key: []byte("ce_specversion"), Value: []byte("1.0")}, {Key: []byte("ce_id"), Value: []byte("x")}}},
		{Topic: topic, Value: sarama.StringEncoder("third")},
	})
	rec := newFakeRecorder()
	src := newTestSource(t, brokers, topic, testenv.UniqueName(t, "grp"), connectors.Options{}, WithRecorder(rec))
	connect(t, src)

	msg, ack := readOne(t, src)
	ev := msg.Event
	if msg.DecodeErr != nil || ev.ID() != topic+"-0-0" || ev.Source() != "kafka://"+brokers[0]+"/"+topic ||
		ev.Subject() != "k1" || ev.DataContentType() != "text/plain" || string(ev.Data()) != "hello" || !ev.Time().Equal(ts) {
		t.Errorf("plain record mapped to %v (DecodeErr %v)", ev, msg.DecodeErr)
	}
	mustAck(t, ack, nil)
	msg, ack = readOne(t, src)
	if !errors.Is(msg.DecodeErr, kafkace.ErrInvalidCloudEvent) || string(msg.Event.Data()) != "broken" {
		t.Errorf("broken CloudEvent: DecodeErr = %v, data %q", msg.DecodeErr, msg.Event.Data())
	}
	mustAck(t, ack, nil)
	_, ack = readOne(t, src)

	// Two of three committed: lag 1 once the next report comes.
	lane := topic + "/0"
	waitUntil(t, "lag 1 reported", func() bool { v, ok := rec.lag(lane); return ok && v == 1 })
	mustAck(t, ack, nil)
	waitUntil(t, "lag 0 reported", func() bool { v, ok := rec.lag(lane); return ok && v == 0 })

	if err := src.Close(closeCtx(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !rec.released[lane] {
		t.Errorf("PartitionReleased not reported for %s", lane)
	}
	if len(rec.connected) < 2 || !rec.connected[0] || rec.connected[len(rec.connected)-1] {
		t.Errorf("Connected reports = %v, want true first and false last", rec.connected)
	}
}

// TestStuckPartitionDoesNotBlockOthers: a partition whose window is full
// stops; the other partition keeps flowing.
func TestStuckPartitionDoesNotBlockOthers(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	// On a loaded machine a group session can end (a missed heartbeat); the
	// stuck partition is then revoked and legitimately delivered again, which
	// says nothing about the window. Such a run is repeated on a fresh topic
	// and group; a read while the held messages are still owned fails at once.
	for run := 1; ; run++ {
		if stuckPartitionRun(t, brokers) {
			return
		}
		if run == 3 {
			t.Fatal("the group session restarted in every run; the window could not be tested")
		}
		t.Logf("run %d: session restarted under load; repeating", run)
	}
}

// stuckPartitionRun reports false when the run was disturbed by a rebalance.
func stuckPartitionRun(t *testing.T, brokers []string) bool {
	topic := testenv.UniqueName(t, "stuck")
	kafkatest.CreateTopic(t, brokers, topic, 2)
	const perPartition, window = 30, 2
	var msgs []*sarama.ProducerMessage
	for i := range 2 * perPartition {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Partition: int32(i % 2), Value: sarama.StringEncoder(fmt.Sprint(i))})
	}
	kafkatest.Produce(t, brokers, msgs)
	src := newTestSource(t, brokers, topic, testenv.UniqueName(t, "grp"), connectors.Options{Window: window})
	connect(t, src)
	defer func() { // a disturbed run leaves held messages unacked: bound the wait
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = src.Close(ctx)
	}()

	stuck := topic + "/0"
	var held []*connectors.Message
	var heldAcks []connectors.AckFunc
	flowing := 0
	for flowing < perPartition {
		msg, ack := readOne(t, src)
		if msg.Lane == stuck {
			held = append(held, msg) // never acked: partition 0 is stuck
			heldAcks = append(heldAcks, ack)
			continue
		}
		flowing++
		mustAck(t, ack, nil)
	}
	if len(held) > window {
		t.Fatalf("stuck partition delivered %d messages, window is %d", len(held), window)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if msg, _, err := src.Read(ctx); err == nil {
		if !revokedAll(held) {
			t.Fatalf("read %s/%d beyond the window", msg.Lane, msg.Coordinates.Offset)
		}
		return false
	}
	for _, ack := range heldAcks {
		mustAck(t, ack, nil)
	}
	// Acks open the window again.
	for range perPartition - len(held) {
		msg, ack := readOne(t, src)
		if msg.Lane != stuck {
			t.Fatalf("unexpected message from %s", msg.Lane)
		}
		mustAck(t, ack, nil)
	}
	return true
}

func revokedAll(msgs []*connectors.Message) bool {
	for _, m := range msgs {
		select {
		case <-m.Revoked:
		default:
			return false
		}
	}
	return true
}

// TestRebalanceRevokesLanes: when a second consumer joins, the first one's
// lanes are revoked: Revoked closes, acks during the grace are committed,
// acks after it return ErrRevoked, and the new owners get what was not
// acknowledged.
func TestRebalanceRevokesLanes(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "rebal")
	group := testenv.UniqueName(t, "grp")
	kafkatest.CreateTopic(t, brokers, topic, 2)
	evs := make([]string, 4)
	var msgs []*sarama.ProducerMessage
	for i := range evs {
		evs[i] = fmt.Sprintf("m%d", i)
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Partition: int32(i % 2), Value: sarama.StringEncoder(evs[i])})
	}
	kafkatest.Produce(t, brokers, msgs)

	a := newTestSource(t, brokers, topic, group, connectors.Options{}, WithRevokeGrace(8*time.Second))
	connect(t, a)
	got := map[string]struct {
		msg *connectors.Message
		ack connectors.AckFunc
	}{}
	for range 4 {
		msg, ack := readOne(t, a)
		got[string(msg.Event.Data())] = struct {
			msg *connectors.Message
			ack connectors.AckFunc
		}{msg, ack}
	}
	mustAck(t, got["m0"].ack, nil) // p0 offset 0 done

	b := newTestSource(t, brokers, topic, group, connectors.Options{})
	bConnected := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		bConnected <- b.Connect(ctx)
	}()
	t.Cleanup(func() { _ = b.Close(closeCtx(t)) })

	select {
	case <-got["m1"].msg.Revoked:
	case <-time.After(90 * time.Second):
		t.Fatal("lane not revoked after a second consumer joined")
	}
	mustAck(t, got["m1"].ack, nil)                  // during the grace: recorded, p1 offset 0 done
	mustAck(t, got["m2"].ack, errors.New("failed")) // nack: p0 stays at offset 1
	// m3 is not acked: the grace expires and p1 is committed at offset 1.
	if err := <-bConnected; err != nil {
		t.Fatalf("second consumer Connect: %v", err)
	}
	if err := got["m3"].ack(context.Background(), nil); !errors.Is(err, connectors.ErrRevoked) {
		t.Fatalf("ack after revoke = %v, want ErrRevoked", err)
	}
	// Hand everything to b, which must get exactly m2 and m3 back.
	if err := a.Close(closeCtx(t)); err != nil {
		t.Fatalf("Close a: %v", err)
	}
	redelivered := map[string]bool{}
	for range 2 {
		msg, ack := readOne(t, b)
		redelivered[string(msg.Event.Data())] = true
		mustAck(t, ack, nil)
	}
	if !redelivered["m2"] || !redelivered["m3"] {
		t.Fatalf("redelivered %v, want m2 and m3", redelivered)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if msg, _, err := b.Read(ctx); err == nil {
		t.Fatalf("unexpected redelivery of %s", msg.Event.Data())
	}
}

// TestCloseWaitsForAcks: acks that arrive while Close waits are committed.
func TestCloseWaitsForAcks(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "close")
	group := testenv.UniqueName(t, "grp")
	kafkatest.CreateTopic(t, brokers, topic, 1)
	kafkatest.Produce(t, brokers, []*sarama.ProducerMessage{
		{Topic: topic, Value: sarama.StringEncoder("a")}, {Topic: topic, Value: sarama.StringEncoder("b")},
	})
	src := newTestSource(t, brokers, topic, group, connectors.Options{})
	connect(t, src)
	m1, ack1 := readOne(t, src)
	_, ack2 := readOne(t, src)
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		closed <- src.Close(ctx)
	}()
	<-m1.Revoked
	mustAck(t, ack2, nil)
	mustAck(t, ack1, nil)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := ack1(context.Background(), nil); !errors.Is(err, connectors.ErrClosed) {
		t.Errorf("ack after Close = %v, want ErrClosed", err)
	}
	again := newTestSource(t, brokers, topic, group, connectors.Options{})
	connect(t, again)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if msg, _, err := again.Read(ctx); err == nil {
		t.Fatalf("message %s redelivered after being acked during Close", msg.Event.Data())
	}
}

func connect(t *testing.T, src *Source) {
	t.Helper()
	t.Cleanup(func() { _ = src.Close(closeCtx(t)) })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
}

func closeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustAck(t *testing.T, ack connectors.AckFunc, procErr error) {
	t.Helper()
	if err := ack(context.Background(), procErr); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReconnectAfterBrokerRestart stops the (in-process, persistent) broker
// under a connected source: Health reports the outage, and once the broker
// is back the source resumes from its committed position. kfake stands in
// for Kafka here because the shared test broker must not be stopped.
func TestReconnectAfterBrokerRestart(t *testing.T) {
	const topic = "restart"
	dir := t.TempDir()
	port := testenv.FreePort(t)
	start := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.Ports(port), kfake.DataDir(dir), kfake.SeedTopics(1, topic))
		if err != nil {
			t.Fatalf("kfake: %v", err)
		}
		return c
	}
	cluster := start()
	brokers := []string{fmt.Sprintf("127.0.0.1:%d", port)}
	produceTo := func(v string) {
		c := kafkatest.Config()
		c.Version = sarama.V2_8_0_0
		c.Producer.Return.Successes = true
		p, err := sarama.NewSyncProducer(brokers, c)
		if err != nil {
			t.Fatalf("producer: %v", err)
		}
		defer p.Close()
		if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(v)}); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	produceTo("before")
	src := newTestSource(t, brokers, topic, "grp", connectors.Options{})
	connect(t, src)
	msg, ack := readOne(t, src)
	if string(msg.Event.Data()) != "before" {
		t.Fatalf("got %q", msg.Event.Data())
	}
	mustAck(t, ack, nil)
	waitUntil(t, "the ack to be committed", func() bool { return kafkatest.Committed(t, brokers, "grp", topic, 0) == 1 })

	cluster.Close()
	waitUntil(t, "Health to report the outage", func() bool { return src.Health() != nil })

	cluster = start()
	defer cluster.Close()
	produceTo("after")
	msg, ack = readOne(t, src)
	if string(msg.Event.Data()) != "after" {
		t.Fatalf("after the restart got %q, want \"after\" (the acked message was redelivered?)", msg.Event.Data())
	}
	mustAck(t, ack, nil)
	waitUntil(t, "Health to recover", func() bool { return src.Health() == nil })
	if err := src.Close(closeCtx(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// TestStartLatest: with start: latest and no committed offset, records
// produced before Connect are skipped and every record produced after
// Connect returned is delivered.
func TestStartLatest(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.UniqueName(t, "latest")
	kafkatest.CreateTopic(t, brokers, topic, 2)
	kafkatest.Produce(t, brokers, []*sarama.ProducerMessage{
		{Topic: topic, Partition: 0, Value: sarama.StringEncoder("old")},
		{Topic: topic, Partition: 1, Value: sarama.StringEncoder("old")},
	})
	spec := pipelines.KafkaSource{Brokers: brokers, Topics: []string{topic}, Group: testenv.UniqueName(t, "grp"), Start: "latest"}
	src, err := New(spec, connectors.Options{}, testLogger(), testOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	connect(t, src)
	kafkatest.Produce(t, brokers, []*sarama.ProducerMessage{
		{Topic: topic, Partition: 0, Value: sarama.StringEncoder("new")},
		{Topic: topic, Partition: 1, Value: sarama.StringEncoder("new")},
	})
	for range 2 {
		msg, ack := readOne(t, src)
		if string(msg.Event.Data()) != "new" {
			t.Fatalf("got %q from %s, want only records produced after Connect", msg.Event.Data(), msg.Lane)
		}
		mustAck(t, ack, nil)
	}
}

// TestProcessingTimeFollowsPartitions: with one partition in all sarama's
// default feeder timeout is kept (a timed-out partition leaves the fetch
// for 100 ms, and there is no other partition to stall); with several the
// short one (one full lane must not hold every partition's next fetch).
func TestProcessingTimeFollowsPartitions(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	for _, tc := range []struct {
		partitions int
		want       time.Duration
	}{{1, soloProcessingTime}, {3, maxProcessingTime}} {
		topic := testenv.UniqueName(t, "mpt")
		kafkatest.CreateTopic(t, brokers, topic, tc.partitions)
		src := newTestSource(t, brokers, topic, testenv.UniqueName(t, "grp"), connectors.Options{})
		connect(t, src)
		if got := src.cfg.Consumer.MaxProcessingTime; got != tc.want {
			t.Errorf("%d partitions: MaxProcessingTime %v, want %v", tc.partitions, got, tc.want)
		}
	}
}
