package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestReloadMidStreamLosesNothing: SIGHUP while a pipeline works through a
// backlog. A file with errors is refused (the errors logged with their
// positions, the pipeline untouched); then a valid change restarts the
// changed pipeline softly and starts a new one. Every event is answered
// exactly once — the soft stop committed what it finished — and has its
// result; the new pipeline processes its own topic.
func TestReloadMidStreamLosesNothing(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	in, in2 := testenv.UniqueName(t, "in"), testenv.UniqueName(t, "in2")
	results, results2, dlq := testenv.UniqueName(t, "results"), testenv.UniqueName(t, "results2"), testenv.UniqueName(t, "dlq")
	const total, total2 = 4000, 200
	createTopics(t, brokers, 4, in, in2, results, results2, dlq)
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("reload-%05d", i)
	}
	produceEvents(t, brokers, in, ids, 64)
	ids2 := make([]string, total2)
	for i := range ids2 {
		ids2[i] = fmt.Sprintf("added-%04d", i)
	}
	produceEvents(t, brokers, in2, ids2, 16)

	ledger := filepath.Join(t.TempDir(), "ledger.txt")
	fnAddr := testenv.FreeAddr(t)
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-latency", "30ms", "-ledger", ledger, "-quiet")
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	group := testenv.UniqueName(t, "g")
	doc := func(name, topic, group, results string, maxConc int) string {
		return fmt.Sprintf(`apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: %s, tenant: test}
spec:
  source:
    kafka: {brokers: [%q], topics: [%s], group: %s, start: earliest}
  function: {url: "http://%s/", mode: binary, timeout: 5s}
  delivery:
    ordering: key
    concurrency: {initial: 8, min: 1, max: %d}
    retry: {attempts: 12, backoff: exponential, delay: 5ms, maxDelay: 100ms, retryAfterMax: 1s}
    window: 256
  results:
    onSuccess: [{kafka: {topic: %s}}]
    onFailure: [{kafka: {topic: %s}}]
`, name, brokers[0], topic, group, fnAddr, maxConc, results, dlq)
	}
	path := filepath.Join(t.TempDir(), "pipelines.yaml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(doc("main", in, group, results, 16))
	s, admin := startSluice(t, path)
	waitFor(t, "a quarter answered", 3*time.Minute, func() bool { return len(ledgerLines(t, ledger)) >= total/4 })

	// A broken file: refused, nothing changes.
	write(doc("main", in, group, results, 16) + "---\napiVersion: sluice.dev/v1\nkind: Pipeline\nmetadata: {name: broken, tenant: test}\nspec:\n  source: {kafka: {topics: []}}\n")
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused reload counted", time.Minute, func() bool {
		return metricLine(t, admin, `sluice_config_reloads_total{result="refused"}`) == "1"
	})
	if log := readLog(t, s.log); !strings.Contains(log, "configuration reload refused") || !strings.Contains(log, "pipelines.yaml:") {
		t.Fatalf("the refused reload's log does not name the file and line:\n%s", tail(log))
	}

	// A valid change (main's concurrency) and a new pipeline.
	write(doc("main", in, group, results, 32) + "---\n" + doc("added", in2, group+"-added", results2, 8))
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload applied", time.Minute, func() bool {
		return metricLine(t, admin, `sluice_config_reloads_total{result="applied"}`) == "1"
	})
	if mid := len(ledgerLines(t, ledger)); mid >= total+total2 {
		t.Fatalf("everything was answered before the reload took effect (%d); the test needs a mid-stream reload", mid)
	}
	waitFor(t, "all answered", 3*time.Minute, func() bool { return len(ledgerLines(t, ledger)) >= total+total2 })
	res := readTopic(t, brokers, results)
	res2 := readTopic(t, brokers, results2)
	waitFor(t, "every result", 2*time.Minute, func() bool {
		return len(resultIDs(res.snapshot())) >= total && len(resultIDs(res2.snapshot())) >= total2
	})
	if err := s.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM exit: %v", err)
	}

	answered := ledgerLines(t, ledger)
	for _, id := range append(append([]string(nil), ids...), ids2...) {
		if answered[id] != 1 {
			t.Errorf("%s answered %d times, want exactly 1", id, answered[id])
		}
	}
	got, got2 := resultIDs(res.snapshot()), resultIDs(res2.snapshot())
	for _, id := range ids {
		if got[id] == 0 {
			t.Errorf("%s has no result", id)
		}
	}
	for _, id := range ids2 {
		if got2[id] == 0 {
			t.Errorf("%s (added pipeline) has no result", id)
		}
	}
	if log := readLog(t, s.log); !strings.Contains(log, "configuration reload applied") {
		t.Fatalf("no log line for the applied reload:\n%s", tail(log))
	}
}

// metricLine returns the value of the exposition line starting with name
// ("" if absent).
func metricLine(t *testing.T, admin, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimSpace(strings.TrimPrefix(line, name))
		}
	}
	return ""
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}
