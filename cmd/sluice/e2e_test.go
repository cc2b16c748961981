package main

// End-to-end tests of the sluice binary against a real Kafka: the ledger
// test (SIGKILL mid-stream loses nothing) and the graceful-shutdown test
// (SIGTERM loses nothing and redelivers nothing that had completed).

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/testenv"
)

// binaries builds sluice and the example function once per test binary.
var binaries = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "sluice-e2e-bin")
	if err != nil {
		return "", err
	}
	for _, pkg := range []string{"./cmd/sluice", "./examples/function"} {
		cmd := exec.Command("go", "build", "-o", dir+"/", pkg)
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return dir, nil
})

func bin(t *testing.T, name string) string {
	t.Helper()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// proc is a child process whose output goes to a file kept for failures.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process exited
	err  error         // its exit status, valid once done is closed
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), filepath.Base(name)+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logf.Name(), done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("--- tail of %s ---\n%s", filepath.Base(name), b)
		}
	})
	return p
}

// stop sends sig and waits for the exit status.
func (p *proc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(90 * time.Second):
		t.Fatalf("process did not exit after %v", sig)
		return nil
	}
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready", url)
}

func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V3_6_0_0
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	return c
}

func createTopics(t *testing.T, brokers []string, partitions int32, topics ...string) {
	t.Helper()
	adm, err := sarama.NewClusterAdmin(brokers, saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	for _, tp := range topics {
		if err := adm.CreateTopic(tp, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false); err != nil {
			t.Fatalf("create %s: %v", tp, err)
		}
	}
}

// produceEvents produces binary-mode CloudEvents with the given ids, keyed
// by key(i), data {"id","key","seq"}.
func produceEvents(t *testing.T, brokers []string, topic string, ids []string, keys int) {
	t.Helper()
	p, err := sarama.NewSyncProducer(brokers, saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var batch []*sarama.ProducerMessage
	for i, id := range ids {
		key := fmt.Sprintf("k%d", i%keys)
		data, _ := json.Marshal(map[string]any{"id": id, "key": key, "seq": i})
		batch = append(batch, &sarama.ProducerMessage{
			Topic: topic, Key: sarama.StringEncoder(key), Value: sarama.ByteEncoder(data),
			Headers: []sarama.RecordHeader{
				{Key: []byte("ce_specversion"), Value: []byte("1.0")},
				{Key: []byte("ce_id"), Value: []byte(id)},
				{Key: []byte("ce_source"), Value: []byte("/e2e")},
				{Key: []byte("ce_type"), Value: []byte("com.example.e2e")},
				{Key: []byte("content-type"), Value: []byte("application/json")},
			},
		})
		if len(batch) == 500 {
			if err := p.SendMessages(batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		if err := p.SendMessages(batch); err != nil {
			t.Fatal(err)
		}
	}
}

// topicReader follows every partition of a topic from the start.
type topicReader struct {
	mu   sync.Mutex
	recs []*sarama.ConsumerMessage
	stop func()
}

func readTopic(t *testing.T, brokers []string, topic string) *topicReader {
	t.Helper()
	c, err := sarama.NewConsumer(brokers, saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	parts, err := c.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	r := &topicReader{}
	var wg sync.WaitGroup
	var pcs []sarama.PartitionConsumer
	for _, part := range parts {
		pc, err := c.ConsumePartition(topic, part, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		pcs = append(pcs, pc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range pc.Messages() {
				r.mu.Lock()
				r.recs = append(r.recs, m)
				r.mu.Unlock()
			}
		}()
	}
	r.stop = func() {
		for _, pc := range pcs {
			pc.AsyncClose()
		}
		wg.Wait()
		c.Close()
	}
	t.Cleanup(r.stop)
	return r
}

func (r *topicReader) snapshot() []*sarama.ConsumerMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*sarama.ConsumerMessage(nil), r.recs...)
}

func header(m *sarama.ConsumerMessage, key string) string {
	for _, h := range m.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// ledgerLines reads the example function's ledger: one id per 2xx answer.
func ledgerLines(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]int{}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if id := strings.TrimSpace(sc.Text()); id != "" {
			out[id]++
		}
	}
	return out
}

func writePipeline(t *testing.T, brokers []string, in, group, results, dlq, fnAddr string, extra string) string {
	t.Helper()
	y := fmt.Sprintf(`apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: e2e, tenant: test}
spec:
  source:
    kafka: {brokers: [%q], topics: [%s], group: %s, start: earliest}
  function: {url: "http://%s/", mode: binary, timeout: 5s}
  delivery:
    ordering: key
    concurrency: {initial: 16, min: 1, max: 64}
    retry: {attempts: 12, backoff: exponential, delay: 5ms, maxDelay: 100ms, retryAfterMax: 1s}
    window: 256
%s  results:
    onSuccess: [{kafka: {topic: %s}}]
    onFailure: [{kafka: {topic: %s}}]
`, brokers[0], in, group, fnAddr, extra, results, dlq)
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func startSluice(t *testing.T, pipeline string) (*proc, string) {
	t.Helper()
	admin := testenv.FreeAddr(t)
	p := startProc(t, bin(t, "sluice"), "run", pipeline, "--admin-addr", admin, "--log-format", "json", "--drain-timeout", "20s")
	waitHTTP(t, "http://"+admin+"/readyz")
	return p, admin
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestLedgerSurvivesSIGKILL: 10,000 keyed events, a function failing 10 %
// of calls transiently and always rejecting poison ids; Sluice is SIGKILLed
// twice mid-stream. Afterwards every id was answered 2xx or dead-lettered
// with its reason, every 2xx has its result, and duplicates are bounded.
func TestLedgerSurvivesSIGKILL(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	in, results, dlq := testenv.UniqueName(t, "in"), testenv.UniqueName(t, "results"), testenv.UniqueName(t, "dlq")
	const partitions, total, poison, window = 8, 10000, 25, 256
	createTopics(t, brokers, partitions, in, results, dlq)

	ids := make([]string, total)
	isPoison := map[string]bool{}
	for i := range ids {
		ids[i] = fmt.Sprintf("ledger-%05d", i)
		if i%(total/poison) == 7 {
			ids[i] = fmt.Sprintf("poison-%05d", i)
			isPoison[ids[i]] = true
		}
	}
	produceEvents(t, brokers, in, ids, 500)

	ledger := filepath.Join(t.TempDir(), "ledger.txt")
	fnAddr := testenv.FreeAddr(t)
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-fail-rate", "0.1", "-poison-prefix", "poison-",
		"-latency", "1ms", "-ledger", ledger, "-seed", "42", "-quiet")
	waitHTTP(t, "http://"+fnAddr+"/healthz")

	pipeline := writePipeline(t, brokers, in, testenv.UniqueName(t, "g"), results, dlq, fnAddr, "")
	resR, dlqR := readTopic(t, brokers, results), readTopic(t, brokers, dlq)

	for _, threshold := range []int{total / 5, total / 2} {
		s, _ := startSluice(t, pipeline)
		waitFor(t, fmt.Sprintf("%d answered", threshold), 3*time.Minute, func() bool {
			return len(ledgerLines(t, ledger)) >= threshold
		})
		if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-s.done
		t.Logf("SIGKILLed sluice after %d distinct ids answered", len(ledgerLines(t, ledger)))
	}

	s, _ := startSluice(t, pipeline)
	waitFor(t, "every id answered or dead-lettered", 5*time.Minute, func() bool {
		return len(resultIDs(resR.snapshot())) >= total-poison && len(dlqIDs(dlqR.snapshot())) >= poison
	})
	if err := s.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("sluice exit after SIGTERM: %v", err)
	}

	answered := ledgerLines(t, ledger)
	dead := dlqIDs(dlqR.snapshot())
	dups, _ := checkLedger(t, ids, isPoison, answered, resultIDs(resR.snapshot()), dead)
	// Each kill may redeliver at most the window of every partition.
	bound := 2 * partitions * window
	t.Logf("ledger: %d ids, %d poison dead-lettered, %d duplicate 2xx answers (bound %d), %d result records",
		total, len(dead), dups, bound, len(resR.snapshot()))
	if dups > bound {
		t.Errorf("%d duplicates exceed the bound %d (2 kills × %d partitions × window %d)", dups, bound, partitions, window)
	}
}

// checkLedger checks the end state of a ledger test: every poison id was
// dead-lettered with the function's 400 and never answered 2xx; every other
// id was answered 2xx, has a result and was not dead-lettered. It returns
// the duplicate 2xx answers and duplicate results.
func checkLedger(t *testing.T, ids []string, isPoison map[string]bool, answered, results map[string]int, dead map[string]string) (dups, resultDups int) {
	t.Helper()
	for _, id := range ids {
		if isPoison[id] {
			reason, ok := dead[id]
			switch {
			case !ok:
				t.Errorf("poison %s not dead-lettered", id)
			case !strings.Contains(reason, "400"):
				t.Errorf("poison %s dead-lettered with reason %q, want the 400", id, reason)
			}
			if answered[id] > 0 {
				t.Errorf("poison %s was answered 2xx", id)
			}
			continue
		}
		if answered[id] == 0 {
			t.Errorf("%s was never answered 2xx (lost)", id)
		}
		if results[id] == 0 {
			t.Errorf("%s has no result", id)
		}
		if _, ok := dead[id]; ok {
			t.Errorf("%s dead-lettered although the function only fails it transiently", id)
		}
		dups += max(answered[id]-1, 0)
		resultDups += max(results[id]-1, 0)
	}
	return dups, resultDups
}

// resultIDs maps input ids to how many result records carry them. The
// example function puts the input event in data.processed.
func resultIDs(recs []*sarama.ConsumerMessage) map[string]int {
	out := map[string]int{}
	for _, m := range recs {
		var d struct {
			Processed struct {
				ID string `json:"id"`
			} `json:"processed"`
		}
		if json.Unmarshal(m.Value, &d) == nil && d.Processed.ID != "" {
			out[d.Processed.ID]++
		}
	}
	return out
}

// dlqIDs maps dead-lettered ids to their sluicereason extension.
func dlqIDs(recs []*sarama.ConsumerMessage) map[string]string {
	out := map[string]string{}
	for _, m := range recs {
		out[header(m, "ce_id")] = header(m, "ce_sluicereason")
	}
	return out
}

// TestGracefulShutdownLosesAndRepeatsNothing: SIGTERM mid-stream drains and
// commits; a restarted Sluice finishes the rest without repeating any event
// that had completed.
func TestGracefulShutdownLosesAndRepeatsNothing(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	in, results, dlq := testenv.UniqueName(t, "in"), testenv.UniqueName(t, "results"), testenv.UniqueName(t, "dlq")
	// 50 ms per call and at most 64 keys in flight: about 5 s of work, so
	// the SIGTERM at a third lands mid-stream.
	const total = 6000
	createTopics(t, brokers, 4, in, results, dlq)
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("grace-%05d", i)
	}
	produceEvents(t, brokers, in, ids, 64)

	ledger := filepath.Join(t.TempDir(), "ledger.txt")
	fnAddr := testenv.FreeAddr(t)
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-latency", "50ms", "-ledger", ledger, "-quiet")
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	pipeline := writePipeline(t, brokers, in, testenv.UniqueName(t, "g"), results, dlq, fnAddr, "")

	s, _ := startSluice(t, pipeline)
	waitFor(t, "a third answered", 3*time.Minute, func() bool { return len(ledgerLines(t, ledger)) >= total/3 })
	if err := s.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM exit: %v (want 0)", err)
	}
	firstRun := len(ledgerLines(t, ledger))
	if firstRun >= total {
		t.Fatalf("all %d events finished before SIGTERM; the test needs a mid-stream stop", total)
	}

	s, _ = startSluice(t, pipeline)
	waitFor(t, "all answered", 3*time.Minute, func() bool { return len(ledgerLines(t, ledger)) >= total })
	if err := s.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM exit: %v", err)
	}
	answered := ledgerLines(t, ledger)
	for _, id := range ids {
		if answered[id] != 1 {
			t.Errorf("%s answered %d times, want exactly 1", id, answered[id])
		}
	}
	t.Logf("graceful: %d answered before SIGTERM, %d after restart, 0 repeats expected", firstRun, total-firstRun)
}

// TestUnreachableBrokerIsVisible: a pipeline whose broker is down keeps
// retrying; /readyz says so with the reason, the connection metric is 0,
// the log shows the retries, and SIGTERM still exits cleanly.
func TestUnreachableBrokerIsVisible(t *testing.T) {
	dead := testenv.FreeAddr(t) // nothing listens there
	y := fmt.Sprintf(`apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: nobroker}
spec:
  source:
    kafka: {brokers: [%q], topics: [t], group: g}
  function: {url: "http://127.0.0.1:1/"}
`, dead)
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	admin := testenv.FreeAddr(t)
	p := startProc(t, bin(t, "sluice"), "run", path, "--admin-addr", admin, "--log-format", "json")
	waitHTTP(t, "http://"+admin+"/healthz")
	var body string
	waitFor(t, "/readyz to report the broker error", time.Minute, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "connection refused")
	})
	if !strings.Contains(body, "default/nobroker") {
		t.Fatalf("/readyz does not name the pipeline: %s", body)
	}
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), `sluice_source_connected{pipeline="default/nobroker"} 0`) {
		t.Fatalf("metrics do not show the source down")
	}
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM while connecting: %v", err)
	}
	logs, _ := os.ReadFile(p.log)
	if !strings.Contains(string(logs), dead) || !strings.Contains(string(logs), `"next_delay"`) {
		t.Fatalf("logs do not show the retries against %s:\n%.3000s", dead, logs)
	}
}

// TestBadMessagesAreDeadLetteredWithReasons: a record with broken
// CloudEvents headers is dead-lettered with the decode error (the function
// never sees it); a plain record is wrapped and processed; a valid event is
// processed. Nothing stalls.
func TestBadMessagesAreDeadLetteredWithReasons(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	in, results, dlq := testenv.UniqueName(t, "in"), testenv.UniqueName(t, "results"), testenv.UniqueName(t, "dlq")
	createTopics(t, brokers, 1, in, results, dlq)
	p, err := sarama.NewSyncProducer(brokers, saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	ce := func(id string, extra ...sarama.RecordHeader) []sarama.RecordHeader {
		return append([]sarama.RecordHeader{
			{Key: []byte("ce_specversion"), Value: []byte("1.0")},
			{Key: []byte("ce_id"), Value: []byte(id)},
			{Key: []byte("ce_source"), Value: []byte("/e2e")},
			{Key: []byte("ce_type"), Value: []byte("com.example.e2e")},
		}, extra...)
	}
	broken := []sarama.RecordHeader{ // no ce_type, and an unknown spec version
		{Key: []byte("ce_specversion"), Value: []byte("0.1")},
		{Key: []byte("ce_id"), Value: []byte("broken-1")},
	}
	err = p.SendMessages([]*sarama.ProducerMessage{
		{Topic: in, Value: sarama.StringEncoder(`{"id":"good-1"}`), Headers: ce("good-1", sarama.RecordHeader{Key: []byte("content-type"), Value: []byte("application/json")})},
		{Topic: in, Value: sarama.StringEncoder(`{"id":"broken-1"}`), Headers: broken},
		{Topic: in, Key: sarama.StringEncoder("k1"), Value: sarama.StringEncoder(`{"id":"plain-1"}`)},
	})
	p.Close()
	if err != nil {
		t.Fatal(err)
	}
	ledger := filepath.Join(t.TempDir(), "ledger.txt")
	fnAddr := testenv.FreeAddr(t)
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-ledger", ledger)
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	s, _ := startSluice(t, writePipeline(t, brokers, in, testenv.UniqueName(t, "g"), results, dlq, fnAddr, ""))
	resR, dlqR := readTopic(t, brokers, results), readTopic(t, brokers, dlq)
	waitFor(t, "two results and one dead letter", time.Minute, func() bool {
		return len(resR.snapshot()) >= 2 && len(dlqR.snapshot()) >= 1
	})
	if err := s.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	answered := ledgerLines(t, ledger)
	if answered["good-1"] != 1 || answered["plain-1"] != 1 || answered["broken-1"] != 0 {
		t.Fatalf("function answered %v; want good-1 and plain-1 once, broken-1 never", answered)
	}
	d := dlqR.snapshot()[0]
	if header(d, "ce_sluiceclass") != "undecodable" || !strings.Contains(header(d, "ce_sluicereason"), "undecodable") ||
		header(d, "ce_sluiceoffset") != "1" || string(d.Value) != `{"id":"broken-1"}` {
		t.Fatalf("dead letter headers %v value %s", d.Headers, d.Value)
	}
	t.Logf("dead letter reason: %s", header(d, "ce_sluicereason"))
}

// processed reads sluice_events_processed_total{outcome="succeeded"} from
// an instance's /metrics.
func processed(t *testing.T, admin string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "sluice_events_processed_total{") && strings.Contains(line, `outcome="succeeded"`) {
			var n float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &n)
			return int(n)
		}
	}
	return 0
}

// TestScaleOutAndHandOver: two instances with the same pipeline share the
// partitions of one consumer group; SIGKILL one mid-stream and the other
// takes its partitions over and finishes everything.
func TestScaleOutAndHandOver(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	in, results, dlq := testenv.UniqueName(t, "in"), testenv.UniqueName(t, "results"), testenv.UniqueName(t, "dlq")
	const total = 6000
	createTopics(t, brokers, 8, in, results, dlq)
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("scale-%05d", i)
	}
	// 16 keys × 50 ms: about 320 events/s, so the hand-over is mid-stream.
	produceEvents(t, brokers, in, ids, 16)
	ledger := filepath.Join(t.TempDir(), "ledger.txt")
	fnAddr := testenv.FreeAddr(t)
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-latency", "50ms", "-ledger", ledger, "-quiet")
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	pipeline := writePipeline(t, brokers, in, testenv.UniqueName(t, "g"), results, dlq, fnAddr, "")

	a, adminA := startSluice(t, pipeline)
	_, adminB := startSluice(t, pipeline)
	waitFor(t, "both instances processing", 2*time.Minute, func() bool {
		return processed(t, adminA) > 0 && processed(t, adminB) > 0
	})
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	waitFor(t, "all answered by the survivor", 3*time.Minute, func() bool { return len(ledgerLines(t, ledger)) >= total })
	answered := ledgerLines(t, ledger)
	dups := 0
	for _, id := range ids {
		if answered[id] == 0 {
			t.Errorf("%s never answered", id)
		}
		dups += max(answered[id]-1, 0)
	}
	t.Logf("scale-out: survivor processed %d, %d duplicates after the SIGKILL", processed(t, adminB), dups)
}
