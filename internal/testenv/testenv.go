// Package testenv finds the real brokers that Sluice's tests run against.
//
// The brokers are started once per machine (or CI run) by scripts/brokers.sh
// ("make brokers"), on fixed loopback ports. Each helper here returns the
// address a test should use, after checking once per test process that the
// broker really answers. A broker that is not there fails the test with
// t.Fatalf and a hint on how to start it: tests never skip for a missing
// broker.
//
// Environment variables override the defaults:
//
//	SLUICE_KAFKA_BROKERS     comma-separated, default 127.0.0.1:9092
//	SLUICE_RABBITMQ_URL      default amqp://guest:guest@127.0.0.1:5672/
//	SLUICE_ROCKETMQ_NAMESRV  default 127.0.0.1:9876 (';'-separated list allowed)
//	SLUICE_POSTGRES_URL      default postgres://sluice:sluice@127.0.0.1:5433/sluice?sslmode=disable
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variable names and their defaults.
const (
	EnvKafkaBrokers    = "SLUICE_KAFKA_BROKERS"
	EnvRabbitURL       = "SLUICE_RABBITMQ_URL"
	EnvRocketMQNamesrv = "SLUICE_ROCKETMQ_NAMESRV"
	EnvPostgresURL     = "SLUICE_POSTGRES_URL"

	DefaultKafkaBrokers    = "127.0.0.1:9092"
	DefaultRabbitURL       = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultRocketMQNamesrv = "127.0.0.1:9876"
	DefaultPostgresURL     = "postgres://sluice:sluice@127.0.0.1:5433/sluice?sslmode=disable"
)

// probeTimeout bounds one reachability check.
const probeTimeout = 5 * time.Second

// probes caches one reachability result per broker address for the whole
// test process, so only the first test pays for the check.
var (
	probesMu sync.Mutex
	probes   = map[string]*probe{}
)

type probe struct {
	once sync.Once
	err  error
}

func checkOnce(key string, check func() error) error {
	probesMu.Lock()
	p, ok := probes[key]
	if !ok {
		p = &probe{}
		probes[key] = p
	}
	probesMu.Unlock()
	p.once.Do(func() { p.err = check() })
	return p.err
}

func getenv(name, def string) (value, source string) {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v, name
	}
	return def, "default; set " + name + " to override"
}

func unreachable(t testing.TB, what, addr, source, broker string, err error) {
	t.Helper()
	t.Fatalf("testenv: %s is not reachable at %s (%s): %v\n"+
		"Start it with `scripts/brokers.sh up %s` (or `make brokers BROKERS=%s`; `scripts/brokers.sh up all` starts every broker). "+
		"Tests never skip for a missing broker.", what, addr, source, err, broker, broker)
}

// KafkaBrokers returns the Kafka bootstrap addresses. The first call in the
// process checks that at least one of them answers a Kafka ApiVersions request.
func KafkaBrokers(t testing.TB) []string {
	t.Helper()
	raw, source := getenv(EnvKafkaBrokers, DefaultKafkaBrokers)
	var addrs []string
	for _, a := range strings.Split(raw, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		t.Fatalf("testenv: %s is set but lists no address", EnvKafkaBrokers)
	}
	err := checkOnce("kafka|"+strings.Join(addrs, ","), func() error {
		var errs []error
		for _, a := range addrs {
			err := kafkaAPIVersions(a, probeTimeout)
			if err == nil {
				return nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
		}
		return errors.Join(errs...)
	})
	if err != nil {
		unreachable(t, "Kafka", raw, source, "kafka", err)
	}
	return addrs
}

// RabbitURL returns the AMQP URL of RabbitMQ. The first call in the process
// checks that the server answers the AMQP 0-9-1 protocol header.
func RabbitURL(t testing.TB) string {
	t.Helper()
	raw, source := getenv(EnvRabbitURL, DefaultRabbitURL)
	addr, err := hostPort(raw, map[string]string{"amqp": "5672", "amqps": "5671"})
	if err != nil {
		t.Fatalf("testenv: %s: %v", EnvRabbitURL, err)
	}
	if strings.HasPrefix(raw, "amqps:") {
		// TLS: a TCP connect is all we check.
		err = checkOnce("rabbitmq|"+addr, func() error { return dial(addr) })
	} else {
		err = checkOnce("rabbitmq|"+addr, func() error { return amqpGreeting(addr, probeTimeout) })
	}
	if err != nil {
		unreachable(t, "RabbitMQ", redact(raw), source, "rabbitmq", err)
	}
	return raw
}

// RocketMQNameServer returns the RocketMQ name server address (as the Go
// client takes it). The first call in the process checks that the name server
// answers and lists at least one broker.
func RocketMQNameServer(t testing.TB) string {
	t.Helper()
	raw, source := getenv(EnvRocketMQNamesrv, DefaultRocketMQNamesrv)
	first := firstNamesrv(raw)
	err := checkOnce("rocketmq|"+raw, func() error {
		n, err := rocketmqBrokerCount(first, probeTimeout)
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("the name server answers but lists no broker (is the RocketMQ broker running?)")
		}
		return nil
	})
	if err != nil {
		unreachable(t, "RocketMQ", raw, source, "rocketmq", err)
	}
	return raw
}

// PostgresURL returns the PostgreSQL connection URL. The first call in the
// process checks that the server accepts a session for the URL's user and
// database.
func PostgresURL(t testing.TB) string {
	t.Helper()
	raw, source := getenv(EnvPostgresURL, DefaultPostgresURL)
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("testenv: %s=%q is not a postgres:// URL", EnvPostgresURL, redact(raw))
	}
	addr, _ := hostPort(raw, map[string]string{"postgres": "5432", "postgresql": "5432"})
	user := u.User.Username()
	db := strings.TrimPrefix(u.Path, "/")
	if db == "" {
		db = user
	}
	err = checkOnce("postgres|"+raw, func() error { return pgStartup(addr, user, db, probeTimeout) })
	if err != nil {
		unreachable(t, "PostgreSQL", redact(raw), source, "postgres", err)
	}
	return raw
}

// RocketMQCreateTopic creates (or updates) a RocketMQ topic with the given
// number of read/write queues on every master broker and waits until the name
// server returns a route for it with that many queues.
//
// It sends the admin request itself (milliseconds); if that fails it falls
// back to `scripts/brokers.sh rocketmq-topic`, which uses the Java admin
// client (a JVM start, a few seconds).
func RocketMQCreateTopic(t testing.TB, name string, queues int) {
	t.Helper()
	if queues < 1 {
		t.Fatalf("testenv: RocketMQCreateTopic(%q, %d): queues must be >= 1", name, queues)
	}
	ns := firstNamesrv(RocketMQNameServer(t))
	if err := rocketmqCreateTopic(ns, name, queues, probeTimeout); err != nil {
		t.Logf("testenv: creating RocketMQ topic %q directly failed (%v); using scripts/brokers.sh rocketmq-topic", name, err)
		rocketmqCreateTopicScript(t, ns, name, queues)
	}
	rocketmqWaitRoute(t, ns, name, queues)
}

// rocketmqCreateTopicScript creates a topic with `scripts/brokers.sh rocketmq-topic`.
func rocketmqCreateTopicScript(t testing.TB, ns, name string, queues int) {
	t.Helper()
	script := filepath.Join(RepoRoot(t), "scripts", "brokers.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script, "rocketmq-topic", name, strconv.Itoa(queues))
	cmd.Env = append(os.Environ(), EnvRocketMQNamesrv+"="+ns)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: creating RocketMQ topic %q with %s: %v\n%s", name, script, err, out)
	}
}

func rocketmqWaitRoute(t testing.TB, ns, name string, queues int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		route, err := rocketmqRoute(ns, name, probeTimeout)
		if err == nil && route.queuesOK(queues) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: RocketMQ topic %q was created but its route does not show %d queues: route %+v, err %v", name, queues, route, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// UniqueName returns a topic/queue/group name unique to this test run:
// prefix, the sanitized test name and a random suffix, joined by '-'. Only
// letters, digits, '-' and '_' are used (legal for Kafka, RocketMQ and
// RabbitMQ alike), and the result is at most 100 characters.
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testenv: random suffix: %v", err)
	}
	suffix := hex.EncodeToString(b[:])
	p := sanitize(prefix)
	name := sanitize(t.Name())
	const maxLen = 100
	room := maxLen - len(suffix) - 1
	if p != "" {
		room -= len(p) + 1
	}
	if room < 0 {
		p = p[:len(p)+room]
		room = 0
	}
	if len(name) > room {
		name = name[len(name)-room:] // the end of a subtest name is the distinctive part
		name = strings.TrimLeft(name, "-_")
	}
	parts := make([]string, 0, 3)
	for _, s := range []string{p, name, suffix} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "-")
}

func sanitize(s string) string {
	var b strings.Builder
	lastSep := true
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
			lastSep = false
		case r == '-' || r == '_':
			if !lastSep {
				b.WriteRune(r)
				lastSep = true
			}
		default:
			if !lastSep {
				b.WriteByte('_')
				lastSep = true
			}
		}
	}
	return strings.TrimRight(b.String(), "-_")
}

const modulePath = "github.com/sluicehq/sluice"

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// RepoRoot returns the root of the Sluice module (the directory holding its
// go.mod), found from the working directory, or from this source file.
func RepoRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() { rootDir, rootErr = findRepoRoot() })
	if rootErr != nil {
		t.Fatalf("testenv: %v", rootErr)
	}
	return rootDir
}

func findRepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if isModuleRoot(dir) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("cannot find the %s module root (a go.mod declaring it) above %v", modulePath, starts)
}

func isModuleRoot(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "module" && strings.Trim(f[1], `"`) == modulePath {
			return true
		}
	}
	return false
}

// hostPort extracts host:port from a URL, with a default port per scheme.
func hostPort(raw string, defPorts map[string]string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("%q has no host", redact(raw))
	}
	port := u.Port()
	if port == "" {
		port = defPorts[u.Scheme]
	}
	if port == "" {
		return "", fmt.Errorf("%q has no port", redact(raw))
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// redact hides a URL's password in messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

func firstNamesrv(list string) string {
	for _, a := range strings.FieldsFunc(list, func(r rune) bool { return r == ';' || r == ',' }) {
		if a = strings.TrimSpace(a); a != "" {
			return a
		}
	}
	return list
}

func dial(addr string) error {
	c, err := net.DialTimeout("tcp", addr, probeTimeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// FreeAddr returns a loopback host:port that nothing listens on right now:
// for a server a test is about to start, or as a destination that refuses
// connections (an unreachable broker or function).
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// FreePort is FreeAddr's port.
func FreePort(t testing.TB) int {
	t.Helper()
	_, p, err := net.SplitHostPort(FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
