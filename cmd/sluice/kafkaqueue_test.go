package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/runtime/queue/kafkaq"
)

func TestParseKafkaQueueURL(t *testing.T) {
	good := map[string]kafkaq.Config{
		"kafka://k1:9092": {Brokers: []string{"k1:9092"}},
		"kafka://k1:9092,k2:9092?prefix=prod.tasks": {Brokers: []string{"k1:9092", "k2:9092"}, Prefix: "prod.tasks"},
		"kafka://k1:9092?partitions=3&prefix=p":     {Brokers: []string{"k1:9092"}, Prefix: "p", Partitions: 3},
	}
	for raw, want := range good {
		got, err := parseKafkaQueueURL(raw)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseKafkaQueueURL(%q) = %+v, %v; want %+v", raw, got, err, want)
		}
	}
	for _, raw := range []string{"kafka://", "kafka://k1:9092?partitions=0", "kafka://k1:9092?partitions=x", "kafka://k1:9092?acks=1"} {
		if _, err := parseKafkaQueueURL(raw); err == nil {
			t.Errorf("parseKafkaQueueURL(%q) accepted", raw)
		}
	}
}

// TestAsyncE2EKafkaQueue runs `sluice run --queue kafka://…`: submitted
// tasks go through the Kafka topic of the tenant's queue and run.
func TestAsyncE2EKafkaQueue(t *testing.T) {
	fnAddr, admin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-quiet")
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	cfg := asyncSetup(t, fnAddr)
	prefix := testenv.UniqueName(t, "sluice")
	queueURL := "kafka://" + strings.Join(testenv.KafkaBrokers(t), ",") + "?prefix=" + prefix + "&partitions=2"
	startProc(t, bin(t, "sluice"), "run", cfg, "--data-dir", filepath.Join(t.TempDir(), "data"), "--admin-addr", admin,
		"--queue", queueURL, "--log-level", "warn")
	waitHTTP(t, "http://"+admin+"/healthz")
	base := "http://" + admin
	var ids []string
	for i := range 10 {
		var r struct{ TaskID string }
		if code := apiCall(t, http.MethodPost, base+"/v1/functions/work/invocations", []byte(fmt.Sprintf(`{"id": "k-%d"}`, i)), &r); code != http.StatusAccepted {
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
	// The tasks went through Kafka: the tenant's queue is a topic there.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := kafkaq.Open(ctx, kafkaq.Config{Brokers: testenv.KafkaBrokers(t), Prefix: prefix}, nil)
	if err != nil {
		t.Fatalf("kafkaq.Open: %v", err)
	}
	defer func() { _ = q.Close(context.Background()) }()
	queues, err := q.Queues(ctx)
	if err != nil || len(queues) == 0 {
		t.Fatalf("queues under %s: %v, %v; want the tenant's", prefix, queues, err)
	}
	// Acknowledged records leave the depth at the reader's next commit.
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
