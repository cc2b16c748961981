package bus

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/sluicehq/sluice/connectors/rabbitmq/rabbittest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/runtime/engine"
)

// TestRabbitMQTarget: a sink target publishing to a RabbitMQ queue (with
// publisher confirms) receives the matching events.
func TestRabbitMQTarget(t *testing.T) {
	url := testenv.RabbitURL(t)
	q := testenv.UniqueName(t, "bus-target")
	rabbittest.DeclareQueue(t, url, q, nil)
	h := start(t, "", fmt.Sprintf(`
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: orders}
spec:
  rules:
  - name: to-rabbit
    pattern: {type: [{prefix: com.acme.}]}
    targets:
    - sink: {rabbitmq: {url: %q, routingKey: %s}}
`, url, q))
	events := numbered("rmq", "com.acme.order", 20, func(i int) any { return map[string]int{"i": i} })
	h.mustPost("orders", append(events, event("other", "org.other", nil))...)
	got := rabbittest.ReadEvents(t, url, q, len(events))
	if ids := idsOf(got); !slices.Equal(ids, idsOf(events)) {
		t.Fatalf("queue holds %v", ids)
	}
	if string(got[0].Data()) == "" || got[0].Source() != "/acme/orders" {
		t.Fatalf("published event %v", got[0])
	}
}

// refusing answers 400 to every event: a permanent refusal.
type refusing struct {
	mu  sync.Mutex
	ids []string
}

func (r *refusing) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if ev, err := cehttp.NewEventFromHTTPRequest(req); err == nil {
		r.mu.Lock()
		r.ids = append(r.ids, ev.ID())
		r.mu.Unlock()
	}
	http.Error(w, "amount must be positive", http.StatusBadRequest)
}

// TestFailuresAndResultsRouteOnward: a sink target refused for good
// dead-letters to its onFailure route (here another bus) with the reason;
// a function target's results go to its onSuccess route (a bus again).
func TestFailuresAndResultsRouteOnward(t *testing.T) {
	ref := &refusing{}
	refSrv := httptest.NewServer(ref)
	t.Cleanup(refSrv.Close)
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out := event(in.ID()+".result", "com.acme.result", map[string]string{"of": in.ID()})
		w.Header().Set("ce-specversion", "1.0")
		w.Header().Set("ce-id", out.ID())
		w.Header().Set("ce-source", out.Source())
		w.Header().Set("ce-type", out.Type())
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write(out.Data())
	}))
	t.Cleanup(fn.Close)
	dead, results := newEndpoint(t), newEndpoint(t)
	h := start(t, "", fmt.Sprintf(`
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: main, tenant: acme}
spec:
  rules:
  - name: refused
    targets:
    - sink: {webhook: {url: %q}}
      retry: {attempts: 3, delay: 1ms}
      onFailure: [{bus: {name: dead}}]
  - name: computed
    targets:
    - function: {url: %q}
      results:
        onSuccess: [{bus: {name: results}}]
---
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: dead, tenant: acme}
spec:
  rules:
  - name: keep
    targets:
    - sink: {webhook: {url: %q}}
---
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: results, tenant: acme}
spec:
  rules:
  - name: keep
    targets:
    - sink: {webhook: {url: %q}}
`, refSrv.URL, fn.URL, dead.URL(), results.URL()))
	h.mustPost("main", event("e1", "com.acme.order", map[string]int{"amount": -1}))
	eventually(t, "the dead letter", func() bool { return dead.has([]string{"e1"}) })
	eventually(t, "the result", func() bool { return results.has([]string{"e1.result"}) })
	dl, _ := dead.get("e1")
	exts := dl.Extensions()
	if exts[engine.ExtClass] != "permanent" || exts[engine.ExtPipeline] != "acme/main/refused/0" {
		t.Fatalf("dead letter extensions %v", exts)
	}
	if reason, _ := exts[engine.ExtReason].(string); reason == "" {
		t.Fatalf("dead letter without a reason: %v", exts)
	}
	ref.mu.Lock()
	tries := len(ref.ids)
	ref.mu.Unlock()
	if tries != 1 {
		t.Errorf("a permanent refusal was tried %d times", tries)
	}
	eventually(t, "failure metrics", func() bool {
		return h.rec.get("failed acme/main refused") == 1 && h.rec.get("deadlettered acme/main refused") == 1
	})
}
