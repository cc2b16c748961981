package bus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"
)

func (h *harness) startReplay(bus string, body map[string]any) (Replay, int) {
	h.t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(h.api.URL+"/v1/buses/"+bus+"/replays", "application/json", bytes.NewReader(b))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var rp Replay
	_ = json.NewDecoder(resp.Body).Decode(&rp)
	return rp, resp.StatusCode
}

func (h *harness) replayState(bus, id string) Replay {
	h.t.Helper()
	resp, err := http.Get(h.api.URL + "/v1/buses/" + bus + "/replays/" + id)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("GET replay %s: %d", id, resp.StatusCode)
	}
	var rp Replay
	if err := json.NewDecoder(resp.Body).Decode(&rp); err != nil {
		h.t.Fatal(err)
	}
	return rp
}

func (h *harness) waitReplay(bus, id string) Replay {
	h.t.Helper()
	var rp Replay
	eventually(h.t, "replay "+id+" to end", func() bool {
		rp = h.replayState(bus, id)
		return rp.State != ReplayRunning
	})
	if rp.State != ReplayCompleted {
		h.t.Fatalf("replay %s ended %s: %s", id, rp.State, rp.Error)
	}
	return rp
}

func TestReplayDeliversExactlyTheWindowAgain(t *testing.T) {
	a, b := newEndpoint(t), newEndpoint(t)
	h := start(t, "", fmt.Sprintf(`
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: orders}
spec:
  archive:
    pattern: {type: [com.acme.order.created]}
    retention: 1h
  rules:
  - name: first
    targets:
    - sink: {webhook: {url: %q}}
  - name: second
    targets:
    - function: {url: %q}
`, a.URL(), b.URL()))
	before := time.Now().Add(-time.Second)
	inside := numbered("inside", "com.acme.order.created", 10, nil)
	notArchived := event("other-type", "com.acme.order.deleted", nil)
	h.mustPost("orders", append(slices.Clone(inside), notArchived)...)
	// Targets are written after the archive: once they have the events,
	// the archive has them too.
	everything := append(idsOf(inside), notArchived.ID())
	eventually(t, "the first events", func() bool { return a.has(everything) && b.has(everything) })
	time.Sleep(50 * time.Millisecond)
	mid := time.Now()
	time.Sleep(50 * time.Millisecond)
	after := numbered("after", "com.acme.order.created", 10, nil)
	h.mustPost("orders", after...)
	eventually(t, "the later events", func() bool { return a.has(idsOf(after)) && b.has(idsOf(after)) })

	// The window [before, mid) holds exactly the archived first events.
	rp, status := h.startReplay("orders", map[string]any{"from": before, "to": mid})
	if status != http.StatusAccepted || rp.ID == "" {
		t.Fatalf("start replay: %d %+v", status, rp)
	}
	done := h.waitReplay("orders", rp.ID)
	if done.Replayed != len(inside) {
		t.Fatalf("replayed %d events, want %d", done.Replayed, len(inside))
	}
	if done.Through.Before(before) || !done.Through.Before(mid) {
		t.Fatalf("through %v is outside the window [%v, %v)", done.Through, before, mid)
	}
	want := idsOf(inside)
	eventually(t, "the replayed events on both targets", func() bool {
		return slices.Equal(a.replays(rp.ID), want) && slices.Equal(b.replays(rp.ID), want)
	})
	ev, _ := a.get("inside-003")
	if ev.Extensions()[ExtReplay] != rp.ID {
		t.Fatalf("replayed event extensions %v", ev.Extensions())
	}

	// Resuming from Through puts again only what was archived at that
	// instant: the window's last event, and not the earlier ones.
	resumed, status := h.startReplay("orders", map[string]any{"from": done.Through, "to": mid})
	if status != http.StatusAccepted {
		t.Fatalf("start the resuming replay: %d", status)
	}
	again := h.waitReplay("orders", resumed.ID)
	if again.Replayed < 1 || again.Replayed >= len(inside) {
		t.Fatalf("resuming from %v replayed %d events, want the last one(s) only", done.Through, again.Replayed)
	}
	eventually(t, "the resumed replay on a target", func() bool { return len(a.replays(resumed.ID)) == again.Replayed })

	// A replay for one rule reaches only that rule's targets.
	one, status := h.startReplay("orders", map[string]any{"from": before, "to": mid, "rule": "second"})
	if status != http.StatusAccepted {
		t.Fatalf("start replay for a rule: %d", status)
	}
	h.waitReplay("orders", one.ID)
	eventually(t, "the rule's target", func() bool { return slices.Equal(b.replays(one.ID), want) })
	time.Sleep(300 * time.Millisecond)
	if got := a.replays(one.ID); len(got) != 0 {
		t.Fatalf("the other rule's target got %v", got)
	}
	last, _ := b.get("inside-000")
	if _, leaked := last.Extensions()[ExtReplayRule]; leaked {
		t.Fatalf("the internal rule restriction reached the target: %v", last.Extensions())
	}
	// Replays are not archived again: the whole archive still holds 20.
	all, _ := h.startReplay("orders", map[string]any{"from": before})
	if n := h.waitReplay("orders", all.ID).Replayed; n != len(inside)+len(after) {
		t.Fatalf("the whole archive replayed %d events, want %d", n, len(inside)+len(after))
	}
}

func TestReplayRequestsAreChecked(t *testing.T) {
	a := newEndpoint(t)
	h := start(t, "", fmt.Sprintf(`
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: archived}
spec:
  archive: {}
  rules:
  - name: r
    targets:
    - sink: {webhook: {url: %q}}
---
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: plain}
spec:
  rules:
  - name: r
    targets:
    - sink: {webhook: {url: %q}}
`, a.URL(), a.URL()))
	now := time.Now()
	for _, c := range []struct {
		name string
		bus  string
		body map[string]any
		want int
	}{
		{"no from", "archived", map[string]any{"to": now}, http.StatusBadRequest},
		{"inverted window", "archived", map[string]any{"from": now, "to": now.Add(-time.Hour)}, http.StatusBadRequest},
		{"unknown rule", "archived", map[string]any{"from": now.Add(-time.Hour), "rule": "nope"}, http.StatusBadRequest},
		{"unknown field", "archived", map[string]any{"from": now.Add(-time.Hour), "bogus": 1}, http.StatusBadRequest},
		{"no archive", "plain", map[string]any{"from": now.Add(-time.Hour)}, http.StatusBadRequest},
		{"no bus", "nope", map[string]any{"from": now.Add(-time.Hour)}, http.StatusNotFound},
		{"empty window", "archived", map[string]any{"from": now.Add(-time.Hour)}, http.StatusAccepted},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, got := h.startReplay(c.bus, c.body); got != c.want {
				t.Fatalf("status %d, want %d", got, c.want)
			}
		})
	}
}
