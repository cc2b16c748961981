package metrics

import (
	"strings"
	"testing"
)

func TestBusRecorder(t *testing.T) {
	r := New("v1")
	b := r.Buses()
	b.Received("acme/orders", 3)
	b.Matched("acme/orders", "big")
	// A second recorder shares the collectors instead of failing to
	// register them again.
	b2 := r.Buses()
	b2.Matched("acme/orders", "big")
	b2.Delivered("acme/orders", "big", 0.02)
	b.Failed("acme/orders", "big")
	b.DeadLettered("acme/orders", "big")

	body := scrape(t, r)
	for series, want := range map[string]string{
		`sluice_bus_events_received_total{bus="acme/orders"}`:                      "3",
		`sluice_bus_events_matched_total{bus="acme/orders",rule="big"}`:            "2",
		`sluice_bus_deliveries_total{bus="acme/orders",rule="big"}`:                "1",
		`sluice_bus_delivery_failures_total{bus="acme/orders",rule="big"}`:         "1",
		`sluice_bus_dead_letters_total{bus="acme/orders",rule="big"}`:              "1",
		`sluice_bus_delivery_duration_seconds_count{bus="acme/orders",rule="big"}`: "1",
	} {
		line := findLine(body, series)
		if got := strings.TrimSpace(strings.TrimPrefix(line, series)); got != want {
			t.Errorf("%s = %q, want %s", series, got, want)
		}
	}
}
