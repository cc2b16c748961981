package bus

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// fanOutYAML is a bus whose one rule sends everything to two webhooks and
// a function; the second webhook retries for as long as it takes.
func fanOutYAML(a, b, c string) string {
	return fmt.Sprintf(`
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: orders, tenant: acme}
spec:
  rules:
  - name: all
    targets:
    - sink: {webhook: {url: %q}}
    - sink: {webhook: {url: %q}}
      retry: {attempts: 100000, delay: 10ms, maxDelay: 100ms}
    - function: {url: %q}
`, a, b, c)
}

func TestFanOutWithOneTargetDown(t *testing.T) {
	a, b, c := newEndpoint(t), newEndpoint(t), newEndpoint(t)
	b.down.Store(true)
	h := start(t, "", fanOutYAML(a.URL(), b.URL(), c.URL()))
	events := numbered("ev", "com.acme.order.created", 50, func(i int) any { return map[string]int{"n": i} })
	want := idsOf(events)
	h.mustPost("orders", events[:25]...)
	h.mustPost("orders", events[25:]...)

	// The healthy targets complete while the third is down.
	eventually(t, "a and c to receive every event", func() bool { return a.has(want) && c.has(want) })
	if got := b.ids(); len(got) != 0 {
		t.Fatalf("the down target took %v", got)
	}
	eventually(t, "the down target to be retried", func() bool { return b.failures() > 0 })
	st := h.status("orders")
	if got := st.Rules[0].Targets; len(got) != 3 || got[1].Backlog != 50 || got[0].Backlog != 0 || got[1].Kind != "sink" || got[2].Kind != "function" {
		t.Fatalf("status while b is down: %+v", st)
	}

	// It catches up when it returns, with nothing lost.
	b.down.Store(false)
	eventually(t, "b to catch up", func() bool { return b.has(want) })
	for _, e := range []*endpoint{a, b, c} {
		if got := e.ids(); !slices.Equal(got, want) {
			t.Fatalf("target received %v, want %v", got, want)
		}
	}
	eventually(t, "the backlog to drain", func() bool { return h.status("orders").Rules[0].Targets[1].Backlog == 0 })
	if n := h.rec.get("received acme/orders"); n != 50 {
		t.Errorf("received metric %d, want 50", n)
	}
	if n := h.rec.get("matched acme/orders all"); n < 50 {
		t.Errorf("matched metric %d, want at least 50", n)
	}
	eventually(t, "delivered metrics", func() bool { return h.rec.get("delivered acme/orders all") >= 150 })
	// The event reaches the target as it was put.
	got, _ := a.get("ev-007")
	if string(got.Data()) != `{"n":7}` || got.Type() != "com.acme.order.created" || got.Source() != "/acme/orders" {
		t.Fatalf("delivered event %v", got)
	}
}

func TestRulesRouteOnlyMatchingEvents(t *testing.T) {
	big, refunds, all := newEndpoint(t), newEndpoint(t), newEndpoint(t)
	h := start(t, "", fmt.Sprintf(`
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: orders}
spec:
  rules:
  - name: big-orders
    pattern:
      type: [com.acme.order.created]
      data: {amount: [{numeric: [">", 100]}]}
    targets:
    - sink: {webhook: {url: %q}}
  - name: refunds
    filter: {prefix: {type: com.acme.refund.}}
    targets:
    - sink: {webhook: {url: %q}}
  - name: everything
    targets:
    - function: {url: %q}
`, big.URL(), refunds.URL(), all.URL()))
	events := []cloudevents.Event{
		event("small", "com.acme.order.created", map[string]any{"amount": 5}),
		event("big", "com.acme.order.created", map[string]any{"amount": 500}),
		event("big-but-cancelled", "com.acme.order.cancelled", map[string]any{"amount": 500}),
		event("refund", "com.acme.refund.issued", map[string]any{"amount": 500}),
		event("no-data", "com.acme.order.created", nil),
	}
	h.mustPost("orders", events...)
	eventually(t, "everything to reach the catch-all rule", func() bool { return all.has(idsOf(events)) })
	// The catch-all target received the last event, so the dispatcher
	// routed every event: the other targets hold all they will get.
	eventually(t, "the big order", func() bool { return big.has([]string{"big"}) })
	eventually(t, "the refund", func() bool { return refunds.has([]string{"refund"}) })
	time.Sleep(200 * time.Millisecond)
	if got := big.ids(); !slices.Equal(got, []string{"big"}) {
		t.Errorf("big-orders got %v", got)
	}
	if got := refunds.ids(); !slices.Equal(got, []string{"refund"}) {
		t.Errorf("refunds got %v", got)
	}
	if n := h.rec.get("matched default/orders big-orders"); n != 1 {
		t.Errorf("big-orders matched %d times, want 1", n)
	}
}

func TestTransformsRewriteTheData(t *testing.T) {
	byPath, byTemplate := newEndpoint(t), newEndpoint(t)
	h := start(t, "", fmt.Sprintf(`
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: orders}
spec:
  rules:
  - name: r
    targets:
    - sink: {webhook: {url: %q}}
      transform: {path: $.data.order}
    - function: {url: %q}
      transform: {template: 'order ${.data.order.id} of ${.source}: ${.data.order.total}'}
`, byPath.URL(), byTemplate.URL()))
	ev := event("t1", "com.acme.order.created", map[string]any{"order": map[string]any{"id": "o-1", "total": 12.50}})
	ev.SetDataSchema("https://example.com/order.json")
	h.mustPost("orders", ev)
	eventually(t, "both targets", func() bool { return byPath.has([]string{"t1"}) && byTemplate.has([]string{"t1"}) })
	p, _ := byPath.get("t1")
	if string(p.Data()) != `{"id":"o-1","total":12.5}` || p.DataContentType() != "application/json" || p.DataSchema() != "" {
		t.Errorf("path transform: data %s, content type %q, schema %q", p.Data(), p.DataContentType(), p.DataSchema())
	}
	tm, _ := byTemplate.get("t1")
	if string(tm.Data()) != `order o-1 of /acme/orders: 12.5` || tm.DataContentType() != "text/plain" {
		t.Errorf("template transform: data %q, content type %q", tm.Data(), tm.DataContentType())
	}
}

func TestRestartResumesEachTarget(t *testing.T) {
	dir := t.TempDir()
	a, b, c := newEndpoint(t), newEndpoint(t), newEndpoint(t)
	b.down.Store(true)
	yaml := fanOutYAML(a.URL(), b.URL(), c.URL())
	h := start(t, dir, yaml)
	first := numbered("first", "com.acme.order.created", 20, nil)
	h.mustPost("orders", first...)
	eventually(t, "a and c", func() bool { return a.has(idsOf(first)) && c.has(idsOf(first)) })
	h.stop()

	// Stored while Sluice is down: nothing reads it until the restart.
	b.down.Store(false)
	h2 := start(t, dir, yaml)
	second := numbered("second", "com.acme.order.created", 20, nil)
	h2.mustPost("orders", second...)
	all := idsOf(append(slices.Clone(first), second...))
	eventually(t, "every target to have everything", func() bool { return a.has(all) && b.has(all) && c.has(all) })
	// a and c had finished the first events before the stop: they resume
	// after them instead of starting over.
	for _, e := range []*endpoint{a, c} {
		for _, id := range idsOf(first) {
			if n := e.count(id); n != 1 {
				t.Errorf("%s delivered %d times to a target that had finished it", id, n)
			}
		}
	}
}

func TestPutValidatesAndBusRoutesResolveByTenant(t *testing.T) {
	x := newEndpoint(t)
	h := start(t, "", fmt.Sprintf(`
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: in, tenant: acme}
spec:
  rules:
  - name: forward
    targets:
    - bus: {name: out}
---
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: out, tenant: acme}
spec:
  rules:
  - name: deliver
    targets:
    - sink: {webhook: {url: %q}}
`, x.URL()))
	if _, err := h.set.Lookup("other", "in"); err == nil {
		t.Fatal("a bus of another tenant resolved")
	}
	sink, err := h.set.Sink("acme", "in")
	if err != nil {
		t.Fatal(err)
	}
	bad := cloudevents.NewEvent()
	if err := sink.Write(context.Background(), []cloudevents.Event{bad}); err == nil {
		t.Fatal("an invalid event was accepted")
	}
	if err := sink.Write(context.Background(), []cloudevents.Event{event("via-route", "t", nil)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the event to cross two buses", func() bool { return x.has([]string{"via-route"}) })
}
