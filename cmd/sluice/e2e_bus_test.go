package main

// End-to-end tests of the event bus with the real binary: a pipeline's
// results go through a bus to two targets (examples/bus/fanout/shop.yaml),
// and a pipeline without a function feeds a topic's events to a bus
// (examples/bus/ingest/activity.yaml).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/sluicehq/sluice/internal/testenv"
)

// hookRecorder is the webhook target: it records each event's id and data.
type hookRecorder struct {
	path string // the only path it accepts
	mu   sync.Mutex
	data map[string][]string // id → data of every delivery
}

func (h *hookRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ev, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil || r.URL.Path != h.path {
		http.Error(w, fmt.Sprint(err), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.data[ev.ID()] = append(h.data[ev.ID()], string(ev.Data()))
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookRecorder) snapshot() map[string][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string][]string, len(h.data))
	for k, v := range h.data {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// TestBusFanOutFromPipeline: orders on Kafka go through the example
// function; its results are put on a bus whose rules send big orders to a
// webhook (data reduced to the order by a path transform) and every result
// to a Kafka topic. An event put through the bus API takes the same rules.
func TestBusFanOutFromPipeline(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	in, results, dlq := testenv.UniqueName(t, "shop-orders"), testenv.UniqueName(t, "shop-results"), testenv.UniqueName(t, "shop-dlq")
	createTopics(t, brokers, 4, in, results, dlq)

	hooks := &hookRecorder{path: "/hooks/big-orders", data: map[string][]string{}}
	hookSrv := httptest.NewServer(hooks)
	t.Cleanup(hookSrv.Close)
	fnAddr := testenv.FreeAddr(t)
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-quiet")
	waitHTTP(t, "http://"+fnAddr+"/healthz")

	example, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "examples", "bus", "fanout", "shop.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer(
		"127.0.0.1:9092", brokers[0],
		"http://127.0.0.1:8080/", "http://"+fnAddr+"/",
		"http://127.0.0.1:8091", hookSrv.URL,
		"topics: [shop-orders]", "topics: ["+in+"]",
		"group: shop-enrich", "group: "+testenv.UniqueName(t, "shop-enrich"),
		"topic: shop-results", "topic: "+results,
		"topic: shop-orders-dlq", "topic: "+dlq,
	).Replace(string(example))
	path := filepath.Join(t.TempDir(), "shop.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin(t, "sluice"), "validate", path).CombinedOutput(); err != nil {
		t.Fatalf("sluice validate: %v\n%s", err, out)
	}

	admin, dataDir := testenv.FreeAddr(t), t.TempDir()
	run := func() *proc {
		p := startProc(t, bin(t, "sluice"), "run", path, "--admin-addr", admin, "--log-format", "json",
			"--data-dir", dataDir, "--drain-timeout", "20s")
		waitHTTP(t, "http://"+admin+"/readyz")
		return p
	}
	p := run()

	const total = 2000
	orders := make([]string, total)
	for i := range orders {
		orders[i] = fmt.Sprintf("order-%04d", i)
	}
	produceOrders(t, brokers, in, orders)
	resultsTopic := readTopic(t, brokers, results)
	resultIDs := func() map[string]bool {
		seen := map[string]bool{}
		for _, m := range resultsTopic.snapshot() {
			seen[header(m, "ce_id")] = true
		}
		return seen
	}

	// SIGKILL mid-stream: what was put on the bus is in its queues, what
	// was not is still in Kafka; the restart loses nothing.
	waitFor(t, "the first results", 2*time.Minute, func() bool { return len(resultIDs()) >= total/5 })
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p = run()

	// Every result reaches Kafka; the big ones (amount = index > 100) the
	// webhook too, each reduced to the order it was computed from.
	waitFor(t, "every result on the Kafka target", 3*time.Minute, func() bool {
		seen := resultIDs()
		for _, id := range orders {
			if !seen[id+".result"] {
				return false
			}
		}
		return true
	})
	waitFor(t, "the big orders on the webhook", 3*time.Minute, func() bool { return len(hooks.snapshot()) >= total-101 })

	// Through the bus API: a result put directly takes the same rules.
	body := `{"processed": {"id": "direct", "amount": 1000}, "by": "api"}`
	req, _ := http.NewRequest(http.MethodPost, "http://"+admin+"/v1/buses/shop-events/events", strings.NewReader(body))
	for k, v := range map[string]string{
		"ce-specversion": "1.0", "ce-id": "direct.result", "ce-source": "sluice-example-function",
		"ce-type": "com.shop.order.created.result", "content-type": "application/json",
	} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/buses/shop-events/events: %d %s", resp.StatusCode, rb)
	}
	waitFor(t, "the event put through the API on both targets", time.Minute, func() bool {
		if len(hooks.snapshot()["direct.result"]) == 0 {
			return false
		}
		for _, m := range resultsTopic.snapshot() {
			if header(m, "ce_id") == "direct.result" {
				return true
			}
		}
		return false
	})
	// Unknown buses and non-CloudEvents are refused with JSON errors.
	for _, c := range []struct {
		url, ct string
		want    int
	}{
		{"/v1/buses/nope/events", "application/cloudevents+json", http.StatusNotFound},
		{"/v1/buses/shop-events/events", "text/plain", http.StatusBadRequest},
	} {
		resp, err := http.Post("http://"+admin+c.url, c.ct, bytes.NewReader([]byte(`{}`)))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != c.want || e.Error == "" {
			t.Errorf("POST %s (%s): %d %q, want %d with an error", c.url, c.ct, resp.StatusCode, e.Error, c.want)
		}
	}

	// Every target is running and has delivered its backlog.
	waitFor(t, "the targets' backlogs to drain", time.Minute, func() bool {
		resp, err := http.Get("http://" + admin + "/v1/buses")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var buses []struct {
			ID    string
			Rules []struct {
				Targets []struct {
					State   string
					Backlog int
				}
			}
		}
		if json.NewDecoder(resp.Body).Decode(&buses) != nil || len(buses) != 1 || buses[0].ID != "shop/shop-events" || len(buses[0].Rules) != 2 {
			return false
		}
		for _, r := range buses[0].Rules {
			for _, tg := range r.Targets {
				if tg.State != "running" || tg.Backlog != 0 {
					return false
				}
			}
		}
		return true
	})
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("sluice exited with %v", err)
	}
	got := hooks.snapshot()
	dups := 0
	for _, d := range got {
		dups += len(d) - 1
	}
	t.Logf("webhook target: %d events, %d redelivered after the SIGKILL (at-least-once)", len(got), dups)
	for i, id := range orders {
		deliveries := got[id+".result"]
		if i <= 100 {
			if len(deliveries) > 0 {
				t.Errorf("small order %s reached the big-orders webhook", id)
			}
			continue
		}
		if len(deliveries) == 0 {
			t.Errorf("big order %s missing on the webhook", id)
			continue
		}
		var order struct {
			ID     string `json:"id"`
			Amount int    `json:"amount"`
		}
		if err := json.Unmarshal([]byte(deliveries[0]), &order); err != nil || order.ID != id || order.Amount != i {
			t.Errorf("webhook data for %s: %s (transform path $.data.processed)", id, deliveries[0])
		}
	}
}

// produceOrders produces binary-mode order events {"id", "amount": index}.
func produceOrders(t *testing.T, brokers []string, topic string, ids []string) {
	t.Helper()
	p, err := sarama.NewSyncProducer(brokers, saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var batch []*sarama.ProducerMessage
	for i, id := range ids {
		data, _ := json.Marshal(map[string]any{"id": id, "amount": i})
		batch = append(batch, &sarama.ProducerMessage{
			Topic: topic, Key: sarama.StringEncoder(id), Value: sarama.ByteEncoder(data),
			Headers: []sarama.RecordHeader{
				{Key: []byte("ce_specversion"), Value: []byte("1.0")},
				{Key: []byte("ce_id"), Value: []byte(id)},
				{Key: []byte("ce_source"), Value: []byte("/shop")},
				{Key: []byte("ce_type"), Value: []byte("com.shop.order.created")},
				{Key: []byte("content-type"), Value: []byte("application/json")},
			},
		})
	}
	if err := p.SendMessages(batch); err != nil {
		t.Fatal(err)
	}
}

// TestBusFromPipelineWithoutFunction: events on a Kafka topic go through a
// pipeline without a function straight onto a bus, whose rules send the
// checkouts to a webhook (reduced to the cart) and every event to a Kafka
// topic; Sluice is SIGKILLed mid-stream and nothing is lost. Events are
// also put through the bus API on --api-addr, with the tenant's key.
func TestBusFromPipelineWithoutFunction(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	in, all, dlq := testenv.UniqueName(t, "activity"), testenv.UniqueName(t, "activity-all"), testenv.UniqueName(t, "activity-dlq")
	createTopics(t, brokers, 4, in, all, dlq)
	hooks := &hookRecorder{path: "/hooks/checkouts", data: map[string][]string{}}
	hookSrv := httptest.NewServer(hooks)
	t.Cleanup(hookSrv.Close)

	example, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "examples", "bus", "ingest", "activity.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const key = "activity-test-key-0123456789"
	cfg := strings.NewReplacer(
		"${env:SHOP_API_KEY}", key,
		"127.0.0.1:9092", brokers[0],
		"http://127.0.0.1:8091", hookSrv.URL,
		"topics: [shop-activity]", "topics: ["+in+"]",
		"group: shop-activity-ingest", "group: "+testenv.UniqueName(t, "activity-ingest"),
		"topic: shop-activity-all", "topic: "+all,
		"topic: shop-activity-dlq", "topic: "+dlq,
	).Replace(string(example))
	path := filepath.Join(t.TempDir(), "activity.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin(t, "sluice"), "validate", path).CombinedOutput(); err != nil {
		t.Fatalf("sluice validate: %v\n%s", err, out)
	}

	admin, api, dataDir := testenv.FreeAddr(t), testenv.FreeAddr(t), t.TempDir()
	run := func() *proc {
		p := startProc(t, bin(t, "sluice"), "run", path, "--admin-addr", admin, "--api-addr", api,
			"--log-format", "json", "--data-dir", dataDir, "--drain-timeout", "20s")
		waitHTTP(t, "http://"+admin+"/readyz")
		return p
	}
	p := run()

	// Even events are checkouts, odd ones page views.
	const total = 2000
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("act-%04d", i)
	}
	produceActivity(t, brokers, in, ids)
	allTopic := readTopic(t, brokers, all)
	allIDs := func() map[string]int {
		seen := map[string]int{}
		for _, m := range allTopic.snapshot() {
			seen[header(m, "ce_id")]++
		}
		return seen
	}
	waitFor(t, "the first events on the Kafka target", 2*time.Minute, func() bool { return len(allIDs()) >= total/5 })
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p = run()

	// Through the bus API on --api-addr: the tenant's key is required.
	put := func(addr, apiKey, id string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/buses/shop-activity/events",
			strings.NewReader(`{"cart": {"id": "`+id+`", "total": 7}}`))
		for k, v := range map[string]string{
			"ce-specversion": "1.0", "ce-id": id, "ce-source": "/shop/api",
			"ce-type": "com.shop.checkout", "content-type": "application/json",
		} {
			req.Header.Set(k, v)
		}
		if apiKey != "" {
			req.Header.Set("X-API-Key", apiKey)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s: %d %s", req.URL, resp.StatusCode, rb)
		}
		return resp.StatusCode
	}
	if code := put(api, "", "no-key"); code != http.StatusUnauthorized {
		t.Errorf("put on --api-addr without a key: %d, want 401", code)
	}
	if code := put(api, key, "via-api-addr"); code != http.StatusAccepted {
		t.Errorf("put on --api-addr with the key: %d, want 202", code)
	}
	if code := put(admin, key, "via-admin-addr"); code != http.StatusAccepted {
		t.Errorf("put on --admin-addr with the key: %d, want 202", code)
	}
	want := append(append([]string(nil), ids...), "via-api-addr", "via-admin-addr")
	waitFor(t, "every event on the Kafka target", 3*time.Minute, func() bool {
		seen := allIDs()
		for _, id := range want {
			if seen[id] == 0 {
				return false
			}
		}
		return true
	})
	waitFor(t, "the checkouts on the webhook", 3*time.Minute, func() bool { return len(hooks.snapshot()) >= total/2+2 })
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("sluice exited with %v", err)
	}

	got, seen := hooks.snapshot(), allIDs()
	if seen["no-key"] > 0 || len(got["no-key"]) > 0 {
		t.Error("an event put without a key was delivered")
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	t.Logf("Kafka target: %d events, %d delivered again after the SIGKILL (at-least-once)", len(seen), dups)
	for i, id := range ids {
		deliveries := got[id]
		if i%2 == 1 {
			if len(deliveries) > 0 {
				t.Errorf("page view %s reached the checkouts webhook", id)
			}
			continue
		}
		if len(deliveries) == 0 {
			t.Errorf("checkout %s missing on the webhook", id)
			continue
		}
		var cart struct {
			ID    string `json:"id"`
			Total int    `json:"total"`
		}
		if err := json.Unmarshal([]byte(deliveries[0]), &cart); err != nil || cart.ID != id || cart.Total != i {
			t.Errorf("webhook data for %s: %s (transform path $.data.cart)", id, deliveries[0])
		}
	}
	for _, id := range []string{"via-api-addr", "via-admin-addr"} {
		if len(got[id]) == 0 {
			t.Errorf("%s missing on the webhook", id)
		}
	}
}

// produceActivity produces binary-mode events {"cart": {"id", "total":
// index}}: checkouts for even indexes, page views for odd ones.
func produceActivity(t *testing.T, brokers []string, topic string, ids []string) {
	t.Helper()
	p, err := sarama.NewSyncProducer(brokers, saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var batch []*sarama.ProducerMessage
	for i, id := range ids {
		typ := "com.shop.checkout"
		if i%2 == 1 {
			typ = "com.shop.page.viewed"
		}
		data, _ := json.Marshal(map[string]any{"cart": map[string]any{"id": id, "total": i}})
		batch = append(batch, &sarama.ProducerMessage{
			Topic: topic, Key: sarama.StringEncoder(id), Value: sarama.ByteEncoder(data),
			Headers: []sarama.RecordHeader{
				{Key: []byte("ce_specversion"), Value: []byte("1.0")},
				{Key: []byte("ce_id"), Value: []byte(id)},
				{Key: []byte("ce_source"), Value: []byte("/shop/web")},
				{Key: []byte("ce_type"), Value: []byte(typ)},
				{Key: []byte("content-type"), Value: []byte("application/json")},
			},
		})
	}
	if err := p.SendMessages(batch); err != nil {
		t.Fatal(err)
	}
}
