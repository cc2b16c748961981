package main

// End-to-end ledger test of the sluice binary against a real RabbitMQ:
// Sluice is SIGKILLed mid-stream, and later the broker itself is restarted
// mid-stream (scripts/brokers.sh restart rabbitmq). Nothing may be lost.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpce"
	"github.com/sluicehq/sluice/connectors/rabbitmq/rabbittest"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
)

// rabbitPublishInputs publishes binary-mode CloudEvents with the given ids
// to queue, as persistent messages; partitionkey k<i mod keys>, data
// {"id","key","seq"}.
func rabbitPublishInputs(t *testing.T, url, queue string, ids []string, keys int) {
	t.Helper()
	const batch = 500
	for start := 0; start < len(ids); start += batch {
		var msgs []amqp.Publishing
		for i := start; i < min(start+batch, len(ids)); i++ {
			key := fmt.Sprintf("k%d", i%keys)
			ev := cetest.New(t, ids[i], map[string]any{"id": ids[i], "key": key, "seq": i})
			ev.SetSource("/e2e")
			ev.SetType("com.example.e2e")
			ev.SetExtension("partitionkey", key)
			p, err := amqpce.Encode(ev)
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, p)
		}
		rabbittest.Publish(t, url, "", queue, msgs)
	}
}

// rabbitCollector drains a queue now and then (basic.get with ack) and
// keeps what it took, so that results survive the broker restart in the
// test's memory. A poll while the broker is down just finds nothing.
type rabbitCollector struct {
	url, queue string

	mu   sync.Mutex
	msgs []amqp.Delivery
}

func (c *rabbitCollector) poll() {
	conn, err := amqp.Dial(c.url)
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	for {
		d, ok, err := ch.Get(c.queue, true)
		if err != nil || !ok {
			return
		}
		c.mu.Lock()
		c.msgs = append(c.msgs, d)
		c.mu.Unlock()
	}
}

func (c *rabbitCollector) snapshot() []amqp.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]amqp.Delivery(nil), c.msgs...)
}

// rabbitResultIDs maps input ids to how many results carry them (the
// example function puts the input event in data.processed).
func rabbitResultIDs(ds []amqp.Delivery) map[string]int {
	out := map[string]int{}
	for _, d := range ds {
		var v struct {
			Processed struct {
				ID string `json:"id"`
			} `json:"processed"`
		}
		if json.Unmarshal(d.Body, &v) == nil && v.Processed.ID != "" {
			out[v.Processed.ID]++
		}
	}
	return out
}

// rabbitDeadIDs maps dead-lettered ids to their sluicereason extension.
func rabbitDeadIDs(ds []amqp.Delivery) map[string]string {
	out := map[string]string{}
	for _, d := range ds {
		id, _ := d.Headers[amqpce.Prefix+"id"].(string)
		reason, _ := d.Headers[amqpce.Prefix+"sluicereason"].(string)
		out[id] = reason
	}
	return out
}

func writeRabbitPipeline(t *testing.T, url, in, results, dlq, fnAddr string, window int) string {
	t.Helper()
	y := fmt.Sprintf(`apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: e2e-rabbit, tenant: test}
spec:
  source:
    rabbitmq:
      url: %q
      queue: %s
      declare: {queue: {durable: true}}
      keyFrom: "header:cloudEvents_partitionkey"
  function: {url: "http://%s/", mode: binary, timeout: 5s}
  delivery:
    ordering: key
    concurrency: {initial: 8, min: 1, max: 16}
    retry: {attempts: 12, backoff: exponential, delay: 5ms, maxDelay: 100ms, retryAfterMax: 1s}
    window: %d
  results:
    onSuccess: [{rabbitmq: {url: %q, routingKey: %s}}]
    onFailure: [{rabbitmq: {url: %q, routingKey: %s}}]
`, url, in, fnAddr, window, url, results, url, dlq)
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// restartRabbitMQ restarts the shared broker, keeping its data.
//
// brokers.sh keeps the broker's data under the state directory of the
// checkout it runs from; a test running in another checkout (a worktree)
// would start the broker on an empty data directory. So the state
// directory is taken from the running node (its Mnesia directory is
// <state>/rabbitmq/mnesia/<node>) and passed on.
func restartRabbitMQ(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "eval", "rabbit_mnesia:dir().").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl eval rabbit_mnesia:dir(): %v\n%s", err, out)
	}
	mnesia := strings.Trim(strings.TrimSpace(string(out)), `"`)
	base := filepath.Dir(mnesia)
	if filepath.Base(base) != "mnesia" || filepath.Base(filepath.Dir(base)) != "rabbitmq" {
		t.Fatalf("the running RabbitMQ keeps its data in %s, not under a scripts/brokers.sh state directory: refusing to restart it", mnesia)
	}
	state := filepath.Dir(filepath.Dir(base))
	script := filepath.Join(testenv.RepoRoot(t), "scripts", "brokers.sh")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", script, "restart", "rabbitmq")
	cmd.Env = append(os.Environ(), "SLUICE_BROKERS_DIR="+state)
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s restart rabbitmq: %v\n%s", script, err, out)
	}
	t.Logf("rabbitmq restarted in %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
}

// TestRabbitMQLedgerSurvivesSIGKILLAndBrokerRestart: 4,000 keyed events
// through RabbitMQ → function (10 % transient failures, poison ids
// rejected) → RabbitMQ results and dead-letter queues. Sluice is SIGKILLed
// mid-stream and restarted; later the broker is restarted under the running
// Sluice. Afterwards every id was answered 2xx and has its result, or was
// dead-lettered with its reason; duplicates are counted and bounded by the
// prefetch window per fault.
func TestRabbitMQLedgerSurvivesSIGKILLAndBrokerRestart(t *testing.T) {
	url := testenv.RabbitURL(t)
	in, results, dlq := testenv.UniqueName(t, "in"), testenv.UniqueName(t, "results"), testenv.UniqueName(t, "dlq")
	const total, poison, window = 4000, 20, 128
	for _, q := range []string{in, results, dlq} {
		rabbittest.DeclareQueue(t, url, q, nil)
	}
	ids := make([]string, total)
	isPoison := map[string]bool{}
	for i := range ids {
		ids[i] = fmt.Sprintf("ledger-%05d", i)
		if i%(total/poison) == 11 {
			ids[i] = fmt.Sprintf("poison-%05d", i)
			isPoison[ids[i]] = true
		}
	}
	rabbitPublishInputs(t, url, in, ids, 64)

	ledger := filepath.Join(t.TempDir(), "ledger.txt")
	fnAddr := testenv.FreeAddr(t)
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-fail-rate", "0.1", "-poison-prefix", "poison-",
		"-latency", "5ms", "-ledger", ledger, "-seed", "7", "-quiet")
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	pipeline := writeRabbitPipeline(t, url, in, results, dlq, fnAddr, window)
	resC := &rabbitCollector{url: url, queue: results}
	dlqC := &rabbitCollector{url: url, queue: dlq}

	// Fault 1: SIGKILL mid-stream.
	s, _ := startSluice(t, pipeline)
	waitFor(t, "a fifth answered", 3*time.Minute, func() bool { return len(ledgerLines(t, ledger)) >= total/5 })
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.done
	killedAt := len(ledgerLines(t, ledger))
	t.Logf("SIGKILLed sluice after %d distinct ids answered", killedAt)

	// Fault 2: broker restart under a running Sluice.
	s, _ = startSluice(t, pipeline)
	waitFor(t, "half answered", 3*time.Minute, func() bool { return len(ledgerLines(t, ledger)) >= total/2 })
	restartAt := len(ledgerLines(t, ledger))
	restartRabbitMQ(t)
	if restartAt >= total-poison {
		t.Fatalf("all events were answered before the broker restart; the test needs a mid-stream restart")
	}

	waitFor(t, "every id answered or dead-lettered", 5*time.Minute, func() bool {
		resC.poll()
		dlqC.poll()
		return len(rabbitResultIDs(resC.snapshot())) >= total-poison && len(rabbitDeadIDs(dlqC.snapshot())) >= poison
	})
	if err := s.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("sluice exit after SIGTERM: %v", err)
	}
	if log, err := os.ReadFile(s.log); err != nil || !strings.Contains(string(log), "rabbitmq reconnected") {
		t.Errorf("the sluice log does not show the source reconnecting after the broker restart (read error %v)", err)
	}
	resC.poll()
	dlqC.poll()

	answered := ledgerLines(t, ledger)
	dead := rabbitDeadIDs(dlqC.snapshot())
	dups, resultDups := checkLedger(t, ids, isPoison, answered, rabbitResultIDs(resC.snapshot()), dead)
	// Each fault redelivers at most the unacknowledged messages: the
	// prefetch window.
	bound := 2 * window
	t.Logf("ledger: %d ids (%d answered before the kill, %d before the broker restart), %d poison dead-lettered, "+
		"%d duplicate 2xx answers and %d duplicate results (bound %d)",
		total, killedAt, restartAt, len(dead), dups, resultDups, bound)
	if dups > bound {
		t.Errorf("%d duplicate answers exceed the bound %d (2 faults × window %d)", dups, bound, window)
	}
}
