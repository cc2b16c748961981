package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/runtime/queue/rocketq"
)

func TestParseRocketQueueURL(t *testing.T) {
	good := map[string]rocketq.Config{
		"rocketmq://ns1:9876":                            {NameServers: []string{"ns1:9876"}},
		"rocketmq://ns1:9876;ns2:9876?prefix=prod_t":     {NameServers: []string{"ns1:9876", "ns2:9876"}, Prefix: "prod_t"},
		"rocketmq://ns1:9876,ns2:9876?queues=2&prefix=p": {NameServers: []string{"ns1:9876", "ns2:9876"}, Prefix: "p", Queues: 2},
	}
	for raw, want := range good {
		got, err := parseRocketQueueURL(raw)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseRocketQueueURL(%q) = %+v, %v; want %+v", raw, got, err, want)
		}
	}
	for _, raw := range []string{"rocketmq://", "rocketmq://ns:9876?queues=0", "rocketmq://ns:9876?queues=x", "rocketmq://ns:9876?partitions=2"} {
		if _, err := parseRocketQueueURL(raw); err == nil {
			t.Errorf("parseRocketQueueURL(%q) accepted", raw)
		}
	}
}

// TestAsyncE2ERocketQueue runs `sluice run --queue rocketmq://…`: submitted
// tasks go through the RocketMQ topic of the tenant's queue and run. The
// sluice binary is a separate process built without the race detector
// (the RocketMQ client's consumer has a data race of its own); this test's
// process only uses the queue's administration path, which starts none of
// the client's goroutines.
func TestAsyncE2ERocketQueue(t *testing.T) {
	fnAddr, admin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-quiet")
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	cfg := asyncSetup(t, fnAddr)
	ns := testenv.RocketMQNameServer(t)
	// Short: RocketMQ topics are limited to 127 characters.
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "e2e" + hex.EncodeToString(b[:])
	queueURL := "rocketmq://" + ns + "?prefix=" + prefix + "&queues=2"
	startProc(t, bin(t, "sluice"), "run", cfg, "--data-dir", filepath.Join(t.TempDir(), "data"), "--admin-addr", admin,
		"--queue", queueURL, "--log-level", "warn")
	waitHTTP(t, "http://"+admin+"/healthz")
	base := "http://" + admin
	var ids []string
	for i := range 10 {
		var r struct{ TaskID string }
		if code := apiCall(t, http.MethodPost, base+"/v1/functions/work/invocations", []byte(fmt.Sprintf(`{"id": "r-%d"}`, i)), &r); code != http.StatusAccepted {
			t.Fatalf("submit: %d", code)
		}
		ids = append(ids, r.TaskID)
	}
	for _, id := range ids {
		deadline := time.Now().Add(90 * time.Second)
		for {
			var task struct{ State string }
			apiCall(t, http.MethodGet, base+"/v1/tasks/"+id, nil, &task)
			if task.State == "succeeded" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s: %s, want succeeded", id, task.State)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The tasks went through RocketMQ: the tenant's queue is a topic there.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := rocketq.Open(ctx, rocketq.Config{NameServers: []string{ns}, Prefix: prefix}, nil)
	if err != nil {
		t.Fatalf("rocketq.Open: %v", err)
	}
	defer func() { _ = q.Close(context.Background()) }()
	queues, err := q.Queues(ctx)
	if err != nil || len(queues) == 0 {
		t.Fatalf("queues under %s: %v, %v; want the tenant's", prefix, queues, err)
	}
	// Acknowledged messages leave the depth when the reader's client next
	// persists its offsets (every 5 s).
	for {
		n, err := q.Depth(ctx, queues[0])
		if err == nil && n == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("depth of %s after every task ran: %d, %v", queues[0], n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAsyncE2ERocketQueueKillAfterAccept is TestAsyncE2EKillAfterAccept on
// RocketMQ: Sluice is SIGKILLed the moment the last 202 arrived and
// restarted on the same data directory; every accepted task must succeed,
// the function having answered each at least once. The tasks' messages
// were stored by the broker (SEND_OK before each 202); those not
// acknowledged, or acknowledged after the client last persisted its
// offsets, are delivered again after the restart.
func TestAsyncE2ERocketQueueKillAfterAccept(t *testing.T) {
	fnAddr, admin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	ledger := filepath.Join(t.TempDir(), "ledger")
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-quiet", "-latency", "100ms", "-ledger", ledger)
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	cfg := asyncSetup(t, fnAddr)
	var b [4]byte
	_, _ = rand.Read(b[:])
	queueURL := "rocketmq://" + testenv.RocketMQNameServer(t) + "?prefix=kill" + hex.EncodeToString(b[:]) + "&queues=2"
	args := []string{"run", cfg, "--data-dir", filepath.Join(t.TempDir(), "data"), "--admin-addr", admin,
		"--queue", queueURL, "--log-level", "warn"}
	sluice := startProc(t, bin(t, "sluice"), args...)
	waitHTTP(t, "http://"+admin+"/healthz")

	const n = 200
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				var r struct{ TaskID string }
				code, err := apiDo(http.MethodPost, "http://"+admin+"/v1/functions/work/invocations", []byte(fmt.Sprintf(`{"i": %d}`, i)), &r)
				if err != nil || code != http.StatusAccepted || r.TaskID == "" {
					errs <- fmt.Errorf("submission %d: %d %v", i, code, err)
					return
				}
				ids[i] = r.TaskID
			}
		}()
	}
	wg.Wait()
	if err := sluice.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("sluice exited cleanly after SIGKILL?")
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d of %d tasks answered before the kill", len(ledgerLines(t, ledger)), n)

	startProc(t, bin(t, "sluice"), args...)
	waitHTTP(t, "http://"+admin+"/healthz")
	deadline := time.Now().Add(5 * time.Minute)
	for _, id := range ids {
		for {
			var task asyncTask
			code := apiCall(t, http.MethodGet, "http://"+admin+"/v1/tasks/"+id, nil, &task)
			if code == http.StatusOK && task.State == "succeeded" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s: %d %+v after the restart", id, code, task)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	answered := ledgerLines(t, ledger)
	redone := 0
	for _, id := range ids {
		if answered[id] == 0 {
			t.Fatalf("task %s succeeded but the function never answered it", id)
		}
		redone += answered[id] - 1
	}
	t.Logf("%d calls repeated after the kill (at-least-once)", redone)
}
