package main

// End-to-end ledger test of the sluice binary against a real RocketMQ:
// Sluice is SIGKILLed mid-stream, and later the broker itself is restarted
// mid-stream (scripts/brokers.sh restart rocketmq-broker). Nothing may be
// lost.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/sluicehq/sluice/connectors/rocketmq/rmqwire"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqtest"
	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/internal/testenv"
)

// rocketPublishInputs sends binary-mode CloudEvents with the given ids,
// event i to queue i mod queues; partitionkey (and KEYS) k<i mod keys>,
// data {"id","key","seq"}.
func rocketPublishInputs(t *testing.T, ns []string, topic string, queues int, ids []string, keys int) {
	t.Helper()
	p := rocketmqtest.NewProducer(t, ns)
	for i, id := range ids {
		key := fmt.Sprintf("k%d", i%keys)
		ev := cetest.New(t, id, map[string]any{"id": id, "key": key, "seq": i})
		ev.SetSource("/e2e")
		ev.SetType("com.example.e2e")
		ev.SetExtension("partitionkey", key)
		p.Send(t, rocketmqtest.Message(t, topic, ev), i%queues)
	}
}

// rocketCollector reads a topic now and then (every queue from the start,
// without a consumer group) and keeps what it read, so that results survive
// the broker restart in the test's memory. A poll while the broker is down
// just finds nothing.
type rocketCollector struct {
	ns    []string
	topic string

	mu   sync.Mutex
	next map[string]int64 // broker/queue → next offset
	msgs []*primitive.MessageExt
}

func newRocketCollector(ns []string, topic string) *rocketCollector {
	return &rocketCollector{ns: ns, topic: topic, next: map[string]int64{}}
}

func (c *rocketCollector) poll() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bqs, err := rmqwire.Client{}.Route(ctx, c.ns, c.topic)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, bq := range bqs {
		for q := range bq.Queues {
			k := fmt.Sprintf("%s/%d", bq.Name, q)
			for {
				msgs, next, err := rmqwire.Client{}.Pull(ctx, bq.Addr, "e2e-collector", c.topic, q, c.next[k], 32)
				if err != nil || len(msgs) == 0 {
					break
				}
				c.next[k] = next
				c.msgs = append(c.msgs, msgs...)
			}
		}
	}
}

func (c *rocketCollector) snapshot() []*primitive.MessageExt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*primitive.MessageExt(nil), c.msgs...)
}

// rocketResultIDs maps input ids to how many results carry them (the
// example function puts the input event in data.processed).
func rocketResultIDs(ms []*primitive.MessageExt) map[string]int {
	out := map[string]int{}
	for _, m := range ms {
		var v struct {
			Processed struct {
				ID string `json:"id"`
			} `json:"processed"`
		}
		if json.Unmarshal(m.Body, &v) == nil && v.Processed.ID != "" {
			out[v.Processed.ID]++
		}
	}
	return out
}

// rocketDeadIDs maps dead-lettered ids to their sluicereason extension.
func rocketDeadIDs(ms []*primitive.MessageExt) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		out[m.GetProperty("ce_id")] = m.GetProperty("ce_sluicereason")
	}
	return out
}

func writeRocketPipeline(t *testing.T, ns, in, group, results, dlq, fnAddr string, window int) string {
	t.Helper()
	y := fmt.Sprintf(`apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: e2e-rocket, tenant: test}
spec:
  source:
    rocketmq: {nameServers: [%q], topic: %s, group: %s}
  function: {url: "http://%s/", mode: binary, timeout: 5s}
  delivery:
    ordering: key
    concurrency: {initial: 8, min: 1, max: 16}
    retry: {attempts: 12, backoff: exponential, delay: 5ms, maxDelay: 100ms, retryAfterMax: 1s}
    window: %d
  results:
    onSuccess: [{rocketmq: {topic: %s}}]
    onFailure: [{rocketmq: {topic: %s}}]
`, ns, in, group, fnAddr, window, results, dlq)
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// restartRocketMQBroker restarts the shared broker (not the name server),
// keeping its data.
//
// brokers.sh keeps the broker's data under the state directory of the
// checkout it runs from; a test running in another checkout would start
// the broker on an empty store. So the state directory is taken from the
// running broker (brokers.sh status names its logs) and passed on.
func restartRocketMQBroker(t *testing.T) {
	t.Helper()
	script := filepath.Join(testenv.RepoRoot(t), "scripts", "brokers.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", script, "status", "rocketmq").CombinedOutput()
	m := regexp.MustCompile(`logs (\S+)/rocketmq/namesrv\.log`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("%s status rocketmq: %v\n%s", script, err, out)
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", script, "restart", "rocketmq-broker")
	cmd.Env = append(os.Environ(), "SLUICE_BROKERS_DIR="+string(m[1]))
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s restart rocketmq-broker: %v\n%s", script, err, out)
	}
	t.Logf("rocketmq broker restarted in %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
}

// TestRocketMQLedgerSurvivesSIGKILLAndBrokerRestart: 3,000 keyed events
// through RocketMQ → function (10 % transient failures, poison ids
// rejected) → RocketMQ results and dead-letter topics. Sluice is SIGKILLed
// mid-stream and restarted; later the broker is restarted under the running
// Sluice. Afterwards every id was answered 2xx and has its result, or was
// dead-lettered with its reason. Duplicates are reported: a SIGKILL
// redelivers what was not committed, and the client persists offsets to the
// broker only every 5 s.
func TestRocketMQLedgerSurvivesSIGKILLAndBrokerRestart(t *testing.T) {
	ns := []string{testenv.RocketMQNameServer(t)}
	in, results, dlq := testenv.UniqueName(t, "in"), testenv.UniqueName(t, "results"), testenv.UniqueName(t, "dlq")
	group := testenv.UniqueName(t, "grp")
	const total, poison, window, queues = 3000, 15, 64, 4
	testenv.RocketMQCreateTopic(t, in, queues)
	testenv.RocketMQCreateTopic(t, results, queues)
	testenv.RocketMQCreateTopic(t, dlq, 2)
	ids := make([]string, total)
	isPoison := map[string]bool{}
	for i := range ids {
		ids[i] = fmt.Sprintf("ledger-%05d", i)
		if i%(total/poison) == 11 {
			ids[i] = fmt.Sprintf("poison-%05d", i)
			isPoison[ids[i]] = true
		}
	}
	rocketPublishInputs(t, ns, in, queues, ids, 64)

	ledger := filepath.Join(t.TempDir(), "ledger.txt")
	fnAddr := testenv.FreeAddr(t)
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-fail-rate", "0.1", "-poison-prefix", "poison-",
		"-latency", "5ms", "-ledger", ledger, "-seed", "7", "-quiet")
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	pipeline := writeRocketPipeline(t, ns[0], in, group, results, dlq, fnAddr, window)
	resC := newRocketCollector(ns, results)
	dlqC := newRocketCollector(ns, dlq)

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
	if restartAt >= total-poison {
		t.Fatalf("all events were answered before the broker restart; the test needs a mid-stream restart")
	}
	restartRocketMQBroker(t)
	afterRestart := len(ledgerLines(t, ledger))

	waitFor(t, "every id answered or dead-lettered", 5*time.Minute, func() bool {
		resC.poll()
		dlqC.poll()
		return len(rocketResultIDs(resC.snapshot())) >= total-poison && len(rocketDeadIDs(dlqC.snapshot())) >= poison
	})
	if err := s.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("sluice exit after SIGTERM: %v", err)
	}
	log, err := os.ReadFile(s.log)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rocketmq consumer lost its brokers", "rocketmq consumer connected"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the sluice log lacks %q: the outage was not reported", want)
		}
	}
	resC.poll()
	dlqC.poll()

	answered := ledgerLines(t, ledger)
	dead := rocketDeadIDs(dlqC.snapshot())
	dups, resultDups := checkLedger(t, ids, isPoison, answered, rocketResultIDs(resC.snapshot()), dead)
	t.Logf("ledger: %d ids (%d answered before the kill, %d before the broker restart, %d when it was back), %d poison dead-lettered, "+
		"%d duplicate 2xx answers and %d duplicate results",
		total, killedAt, restartAt, afterRestart, len(dead), dups, resultDups)
	if afterRestart >= total-poison {
		t.Errorf("every id was answered by the time the broker was back: the restart was not mid-stream")
	}
}
