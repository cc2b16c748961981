package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/queue/rabbitq"
)

func TestParseRabbitQueueURL(t *testing.T) {
	good := map[string]rabbitq.Config{
		"amqp://guest:guest@r1:5672/": {URL: "amqp://guest:guest@r1:5672/"},
		"amqp://u:p@r1/vh?prefix=prod.tasks&type=classic&heartbeat=5": {
			URL: "amqp://u:p@r1/vh?heartbeat=5", Prefix: "prod.tasks", QueueType: pipelines.RabbitQueueClassic,
		},
		"amqps://u:p@r1:5671/?cafile=/etc/ca.pem&type=quorum": {
			URL: "amqps://u:p@r1:5671/", QueueType: pipelines.RabbitQueueQuorum,
			TLS: &pipelines.TLSSpec{Enabled: true, CAFile: "/etc/ca.pem"},
		},
	}
	for raw, want := range good {
		got, err := parseRabbitQueueURL(raw)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseRabbitQueueURL(%q) = %+v, %v; want %+v", raw, got, err, want)
		}
	}
	for _, raw := range []string{"amqp://", "amqp://u:secret@r1/?type=stream", "amqp://u:secret@r1/%zz"} {
		_, err := parseRabbitQueueURL(raw)
		if err == nil {
			t.Errorf("parseRabbitQueueURL(%q) accepted", raw)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("parseRabbitQueueURL(%q): error %q shows the password", raw, err)
		}
	}
	if !isRabbitQueueURL("amqps://h/") || !isRabbitQueueURL("amqp://h/") || isRabbitQueueURL("nats://h:4222") {
		t.Error("isRabbitQueueURL does not tell amqp:// and amqps:// from the others")
	}
}

// TestAsyncE2ERabbitQueue runs `sluice run --queue amqp://…`: submitted
// tasks go through the RabbitMQ queue of the tenant's queue; Sluice is
// SIGKILLed once the last one was accepted and restarted, and every task
// succeeds (those still in the queue, or delivered and never acknowledged,
// are delivered again to the new process; tasks the killed process was
// running wait in the retry queue until the takeover grace has passed).
func TestAsyncE2ERabbitQueue(t *testing.T) {
	fnAddr, admin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	ledger := filepath.Join(t.TempDir(), "ledger")
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-quiet", "-latency", "100ms", "-ledger", ledger)
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	cfg := asyncSetup(t, fnAddr)
	prefix := testenv.UniqueName(t, "sluice")
	queueURL := testenv.RabbitURL(t) + "?prefix=" + prefix
	args := []string{"run", cfg, "--data-dir", filepath.Join(t.TempDir(), "data"), "--admin-addr", admin,
		"--queue", queueURL, "--log-level", "warn"}
	sluice := startProc(t, bin(t, "sluice"), args...)
	waitHTTP(t, "http://"+admin+"/healthz")
	base := "http://" + admin

	const n = 100
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				var r struct{ TaskID string }
				code, err := apiDo(http.MethodPost, base+"/v1/functions/work/invocations", []byte(fmt.Sprintf(`{"i": %d}`, i)), &r)
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

	restarted := time.Now()
	sluice = startProc(t, bin(t, "sluice"), args...)
	waitHTTP(t, "http://"+admin+"/healthz")
	deadline := time.Now().Add(3 * time.Minute)
	for _, id := range ids {
		for {
			var task asyncTask
			code := apiCall(t, http.MethodGet, base+"/v1/tasks/"+id, nil, &task)
			if code == http.StatusOK && task.State == "succeeded" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s: %d %+v after the restart", id, code, task)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("every task succeeded %s after the restart", time.Since(restarted).Round(time.Millisecond))
	answered := ledgerLines(t, ledger)
	for _, id := range ids {
		if answered[id] == 0 { // a plain body's event id is its task id
			t.Fatalf("task %s succeeded but the function never answered it", id)
		}
	}

	// The tasks went through RabbitMQ: the tenant's queue is registered
	// there, and empty now.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := rabbitq.Open(ctx, rabbitq.Config{URL: testenv.RabbitURL(t), Prefix: prefix}, nil)
	if err != nil {
		t.Fatalf("rabbitq.Open: %v", err)
	}
	defer func() { _ = q.Close(context.Background()) }()
	queues, err := q.Queues(ctx)
	if err != nil || len(queues) == 0 {
		t.Fatalf("queues under %s: %v, %v; want the tenant's", prefix, queues, err)
	}
	// Leave nothing behind on the shared broker: the queues, their retry
	// queues and the registry stream (names per docs/queues.md).
	t.Cleanup(func() {
		_ = sluice.stop(t, syscall.SIGKILL) // its reader would declare the queue again
		names := []string{prefix + "~queues"}
		for _, name := range queues {
			names = append(names, q.QueueName(name), q.QueueName(name)+"~retry")
		}
		deleteRabbitQueues(t, testenv.RabbitURL(t), names...)
	})
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

// deleteRabbitQueues deletes the named queues (missing ones are fine).
func deleteRabbitQueues(t *testing.T, url string, names ...string) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Errorf("delete queues: %v", err)
		return
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("delete queues: %v", err)
		return
	}
	for _, name := range names {
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Errorf("delete queue %s: %v", name, err)
			return
		}
	}
}
