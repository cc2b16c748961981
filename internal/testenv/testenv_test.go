package testenv

// These tests run against the real brokers started by `scripts/brokers.sh up all`.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	for _, f := range []string{"go.mod", "scripts/brokers.sh"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("RepoRoot() = %s, but %s: %v", root, f, err)
		}
	}
}

var legalName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,100}$`)

func TestUniqueName(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		n := UniqueName(t, "orders")
		if !legalName.MatchString(n) || !strings.HasPrefix(n, "orders-TestUniqueName-") {
			t.Fatalf("UniqueName = %q: want orders-TestUniqueName-<suffix>, legal characters only", n)
		}
		if seen[n] {
			t.Fatalf("UniqueName returned %q twice", n)
		}
		seen[n] = true
	}
	t.Run("odd/sub test name: with spaces, dots.and "+strings.Repeat("very-long-", 20), func(t *testing.T) {
		for _, prefix := range []string{"", "p", "a.b/c", strings.Repeat("x", 150)} {
			n := UniqueName(t, prefix)
			if !legalName.MatchString(n) {
				t.Errorf("UniqueName(%q) = %q (%d chars): not a legal Kafka/RocketMQ name of at most 100 chars", prefix, n, len(n))
			}
		}
	})
}

func TestKafkaProduceConsume(t *testing.T) {
	brokers := KafkaBrokers(t)
	topic := UniqueName(t, "testenv")

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V4_0_0_0
	cfg.ClientID = "sluice-testenv"
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Group.Session.Timeout = 6 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = time.Second

	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		t.Fatalf("cluster admin: %v", err)
	}
	defer admin.Close()
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false); err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	defer func() { _ = admin.DeleteTopic(topic) }()

	producer, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	const n = 20
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		v := fmt.Sprintf("event-%d", i)
		want[v] = true
		if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(fmt.Sprint(i)), Value: sarama.StringEncoder(v)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := producer.Close(); err != nil {
		t.Fatalf("producer close: %v", err)
	}

	group, err := sarama.NewConsumerGroup(brokers, UniqueName(t, "group"), cfg)
	if err != nil {
		t.Fatalf("consumer group: %v", err)
	}
	defer group.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h := &collect{want: n, done: cancel, got: map[string]bool{}}
	for ctx.Err() == nil {
		if err := group.Consume(ctx, []string{topic}, h); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
			t.Fatalf("consume: %v", err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) != n {
		t.Fatalf("consumed %d distinct records of %d within the deadline", len(h.got), n)
	}
	for v := range want {
		if !h.got[v] {
			t.Errorf("record %q not consumed", v)
		}
	}
}

type collect struct {
	mu   sync.Mutex
	got  map[string]bool
	want int
	done func()
}

func (c *collect) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (c *collect) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (c *collect) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		s.MarkMessage(m, "")
		c.mu.Lock()
		c.got[string(m.Value)] = true
		if len(c.got) >= c.want {
			c.done()
		}
		c.mu.Unlock()
	}
	return nil
}

func TestRocketMQTopicAndSend(t *testing.T) {
	ns := RocketMQNameServer(t)
	topic := UniqueName(t, "testenv")
	RocketMQCreateTopic(t, topic, 3)

	route, err := rocketmqRoute(firstNamesrv(ns), topic, probeTimeout)
	if err != nil {
		t.Fatalf("route: %v", err)
	}
	if !route.queuesOK(3) {
		t.Fatalf("route of %s = %+v, want 3 read/write queues", topic, route)
	}
	broker := route.BrokerAddrs[0]
	for q := 0; q < 3; q++ {
		before, err := rocketmqMaxOffset(broker, topic, q, probeTimeout)
		if err != nil {
			t.Fatalf("max offset before send: %v", err)
		}
		off, err := rocketmqSend(broker, topic, q, []byte("hello from testenv"), probeTimeout)
		if err != nil {
			t.Fatalf("send to queue %d: %v", q, err)
		}
		if off != before {
			t.Errorf("queue %d: message stored at offset %d, want %d", q, off, before)
		}
		// The broker builds its consume queue from the commit log
		// asynchronously, so the max offset catches up shortly after.
		var after int64
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if after, err = rocketmqMaxOffset(broker, topic, q, probeTimeout); err != nil {
				t.Fatalf("max offset after send: %v", err)
			}
			if after != before || time.Now().After(deadline) {
				break
			}
		}
		if after != before+1 {
			t.Errorf("queue %d: max offset %d -> %d after one send", q, before, after)
		}
	}

	// Updating the topic to more queues is visible too.
	RocketMQCreateTopic(t, topic, 5)
}

func TestRocketMQCreateTopicWithScript(t *testing.T) {
	// The fallback path: scripts/brokers.sh rocketmq-topic (Java admin client).
	ns := firstNamesrv(RocketMQNameServer(t))
	topic := UniqueName(t, "testenv")
	rocketmqCreateTopicScript(t, ns, topic, 2)
	rocketmqWaitRoute(t, ns, topic, 2)
}

func TestRocketMQUnknownTopicHasNoRoute(t *testing.T) {
	ns := RocketMQNameServer(t)
	if _, err := rocketmqRoute(firstNamesrv(ns), UniqueName(t, "absent"), probeTimeout); err == nil {
		t.Fatal("route of a topic never created: want an error")
	}
}

func TestRabbitMQLogin(t *testing.T) {
	raw := RabbitURL(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := hostPort(raw, map[string]string{"amqp": "5672"})
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := u.User.Password()
	vhost := strings.TrimPrefix(u.Path, "/")
	if vhost == "" {
		vhost = "/"
	}
	if err := amqpLogin(addr, u.User.Username(), pass, vhost, 10*time.Second); err != nil {
		t.Fatalf("AMQP login to %s as %s: %v", addr, u.User.Username(), err)
	}
	err = amqpLogin(addr, u.User.Username(), pass+"-wrong", vhost, 10*time.Second)
	if err == nil {
		t.Fatal("AMQP login with a wrong password succeeded")
	}
	t.Logf("wrong password refused as expected: %v", err)
}

func TestPostgresQuery(t *testing.T) {
	raw := PostgresURL(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := hostPort(raw, map[string]string{"postgres": "5432", "postgresql": "5432"})
	got, err := pgQuery(addr, u.User.Username(), strings.TrimPrefix(u.Path, "/"), "select current_user || '@' || current_database()", 10*time.Second)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	if want := u.User.Username() + "@" + strings.TrimPrefix(u.Path, "/"); got != want {
		t.Fatalf("select current_user@db = %q, want %q", got, want)
	}
}

func TestProbesRejectWrongServer(t *testing.T) {
	// Pointing a probe at another kind of server must fail, not pass on a TCP connect.
	if err := kafkaAPIVersions("127.0.0.1:5672", 3*time.Second); err == nil {
		t.Error("Kafka probe accepted RabbitMQ's port")
	}
	if err := amqpGreeting("127.0.0.1:9092", 3*time.Second); err == nil {
		t.Error("AMQP probe accepted Kafka's port")
	}
	if _, err := rocketmqBrokerCount("127.0.0.1:5433", 3*time.Second); err == nil {
		t.Error("RocketMQ probe accepted PostgreSQL's port")
	}
	if err := pgStartup("127.0.0.1:9876", "sluice", "sluice", 3*time.Second); err == nil {
		t.Error("PostgreSQL probe accepted RocketMQ's port")
	}
	if err := pgStartup("127.0.0.1:5433", "sluice", "no_such_db_"+UniqueName(t, "x")[:8], 3*time.Second); err == nil {
		t.Error("PostgreSQL probe accepted a database that does not exist")
	}
}

// ---- a tiny AMQP 0-9-1 client: just enough to log in and out ----

func amqpLogin(addr, user, pass, vhost string, timeout time.Duration) error {
	c, err := dialDeadline(addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return err
	}
	if _, err := amqpExpect(r, 10, 10); err != nil { // Connection.Start
		return err
	}
	var args []byte
	args = binary.BigEndian.AppendUint32(args, 0) // client-properties: empty table
	args = amqpShortStr(args, "PLAIN")
	resp := "\x00" + user + "\x00" + pass
	args = binary.BigEndian.AppendUint32(args, uint32(len(resp)))
	args = append(args, resp...)
	args = amqpShortStr(args, "en_US")
	if err := amqpSend(c, 10, 11, args); err != nil { // Start-Ok
		return err
	}
	tune, err := amqpExpect(r, 10, 30) // Tune (a refused login closes the socket here)
	if err != nil {
		return err
	}
	if len(tune) < 8 {
		return errors.New("short Connection.Tune")
	}
	tuneOk := append([]byte{}, tune[:6]...)           // channel-max, frame-max
	tuneOk = binary.BigEndian.AppendUint16(tuneOk, 0) // no heartbeats
	if err := amqpSend(c, 10, 31, tuneOk); err != nil {
		return err
	}
	open := amqpShortStr(nil, vhost)
	open = amqpShortStr(open, "")
	open = append(open, 0)
	if err := amqpSend(c, 10, 40, open); err != nil { // Connection.Open
		return err
	}
	if _, err := amqpExpect(r, 10, 41); err != nil { // Open-Ok
		return err
	}
	closeArgs := binary.BigEndian.AppendUint16(nil, 200)
	closeArgs = amqpShortStr(closeArgs, "bye")
	closeArgs = binary.BigEndian.AppendUint32(closeArgs, 0)
	if err := amqpSend(c, 10, 50, closeArgs); err != nil {
		return err
	}
	_, err = amqpExpect(r, 10, 51) // Close-Ok
	return err
}

func amqpShortStr(b []byte, s string) []byte {
	return append(append(b, byte(len(s))), s...)
}

func amqpSend(w io.Writer, class, method uint16, args []byte) error {
	payload := binary.BigEndian.AppendUint16(nil, class)
	payload = binary.BigEndian.AppendUint16(payload, method)
	payload = append(payload, args...)
	f := []byte{1, 0, 0}
	f = binary.BigEndian.AppendUint32(f, uint32(len(payload)))
	f = append(f, payload...)
	f = append(f, 0xCE)
	_, err := w.Write(f)
	return err
}

// amqpExpect reads one frame and returns the method arguments if it is class.method.
func amqpExpect(r *bufio.Reader, class, method uint16) ([]byte, error) {
	var h [7]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, fmt.Errorf("waiting for method %d.%d: %w", class, method, err)
	}
	size := binary.BigEndian.Uint32(h[3:])
	if size > 1<<20 {
		return nil, fmt.Errorf("frame too large: %d", size)
	}
	body := make([]byte, size+1)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	if h[0] != 1 || size < 4 || body[size] != 0xCE {
		return nil, fmt.Errorf("unexpected frame type %d", h[0])
	}
	gc, gm := binary.BigEndian.Uint16(body), binary.BigEndian.Uint16(body[2:])
	if gc == 10 && gm == 50 && (class != 10 || method != 50) {
		return nil, fmt.Errorf("server closed the connection: %q", amqpCloseReason(body[4:size]))
	}
	if gc != class || gm != method {
		return nil, fmt.Errorf("got method %d.%d, want %d.%d", gc, gm, class, method)
	}
	return body[4:size], nil
}

func amqpCloseReason(args []byte) string {
	if len(args) < 3 || int(args[2])+3 > len(args) {
		return ""
	}
	return fmt.Sprintf("%d %s", binary.BigEndian.Uint16(args), args[3:3+int(args[2])])
}

// ---- a tiny PostgreSQL client: trust auth and one simple query ----

func pgQuery(addr, user, db, sql string, timeout time.Duration) (string, error) {
	c, err := dialDeadline(addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	params := "user\x00" + user + "\x00database\x00" + db + "\x00\x00"
	msg := binary.BigEndian.AppendUint32(nil, uint32(8+len(params)))
	msg = binary.BigEndian.AppendUint32(msg, 196608)
	msg = append(msg, params...)
	if _, err := c.Write(msg); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	queried := false
	var value string
	for {
		typ, p, err := pgRead(r)
		if err != nil {
			return "", err
		}
		switch typ {
		case 'R':
			if binary.BigEndian.Uint32(p) != 0 {
				return "", fmt.Errorf("server wants a password (auth type %d); the test setup uses trust on 127.0.0.1", binary.BigEndian.Uint32(p))
			}
		case 'E':
			return "", fmt.Errorf("%s", pgError(p))
		case 'D': // DataRow: field count, then length-prefixed values
			if len(p) >= 6 {
				n := int32(binary.BigEndian.Uint32(p[2:]))
				if n >= 0 && int(n)+6 <= len(p) {
					value = string(p[6 : 6+n])
				}
			}
		case 'Z':
			if queried {
				_, _ = c.Write([]byte{'X', 0, 0, 0, 4})
				return value, nil
			}
			q := append([]byte(sql), 0)
			m := append([]byte{'Q'}, binary.BigEndian.AppendUint32(nil, uint32(4+len(q)))...)
			if _, err := c.Write(append(m, q...)); err != nil {
				return "", err
			}
			queried = true
		}
	}
}

// fakeTB records how a helper gave up. Fatalf ends the calling goroutine like
// the real one does.
type fakeTB struct {
	testing.TB
	mu      sync.Mutex
	fatal   string
	skipped bool
}

func (f *fakeTB) Helper()      {}
func (f *fakeTB) Name() string { return "TestFake" }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }
func (f *fakeTB) Skip(...any)       { f.skipped = true; runtime.Goexit() }
func (f *fakeTB) Skipf(string, ...any) {
	f.skipped = true
	runtime.Goexit()
}
func (f *fakeTB) SkipNow() { f.skipped = true; runtime.Goexit() }

func TestMissingBrokerFailsNotSkips(t *testing.T) {
	// Port 1 on loopback: nothing listens there.
	t.Setenv(EnvKafkaBrokers, "127.0.0.1:1")
	t.Setenv(EnvRabbitURL, "amqp://guest:guest@127.0.0.1:1/")
	t.Setenv(EnvRocketMQNamesrv, "127.0.0.1:1")
	t.Setenv(EnvPostgresURL, "postgres://sluice:sluice@127.0.0.1:1/sluice")
	cases := map[string]func(testing.TB){
		"kafka":    func(tb testing.TB) { KafkaBrokers(tb) },
		"rabbitmq": func(tb testing.TB) { RabbitURL(tb) },
		"rocketmq": func(tb testing.TB) { RocketMQNameServer(tb) },
		"postgres": func(tb testing.TB) { PostgresURL(tb) },
	}
	for name, call := range cases {
		f := &fakeTB{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			call(f)
		}()
		<-done
		if f.skipped {
			t.Errorf("%s: helper skipped the test; a missing broker must fail it", name)
		}
		if f.fatal == "" {
			t.Errorf("%s: helper returned although nothing listens on 127.0.0.1:1", name)
			continue
		}
		if !strings.Contains(f.fatal, "not reachable") || !strings.Contains(f.fatal, "scripts/brokers.sh up "+name) {
			t.Errorf("%s: failure message lacks the hint: %s", name, f.fatal)
		}
		if strings.Contains(f.fatal, "guest:guest") || strings.Contains(f.fatal, "sluice:sluice") {
			t.Errorf("%s: failure message shows a password: %s", name, f.fatal)
		}
	}
}
