package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

func TestPipelineRecorder(t *testing.T) {
	r := New("v1")
	p := r.Pipeline("acme/orders")
	p.Received()
	p.Received()
	p.Finished(OutcomeSucceeded, 0.01)
	p.Finished(OutcomeAbandoned, 0)
	p.Retry()
	p.DeadLetter("permanent")
	p.Invoked(503, 0.002)
	p.SinkWrite("onSuccess/kafka#0", errors.New("down"), 0.1)
	p.PartitionLag("orders", 3, 42)
	p.Connected(true)

	checks := map[string]float64{
		`sluice_events_received_total{pipeline="acme/orders"}`:                                      2,
		`sluice_events_processed_total{outcome="succeeded",pipeline="acme/orders"}`:                 1,
		`sluice_events_processed_total{outcome="abandoned",pipeline="acme/orders"}`:                 1,
		`sluice_events_in_flight{pipeline="acme/orders"}`:                                           0,
		`sluice_retries_total{pipeline="acme/orders"}`:                                              1,
		`sluice_dead_letters_total{pipeline="acme/orders",reason="permanent"}`:                      1,
		`sluice_sink_writes_total{pipeline="acme/orders",result="error",route="onSuccess/kafka#0"}`: 1,
		`sluice_consumer_lag_messages{partition="3",pipeline="acme/orders",topic="orders"}`:         42,
		`sluice_source_connected{pipeline="acme/orders"}`:                                           1,
		`sluice_function_duration_seconds_count{pipeline="acme/orders",status="5xx"}`:               1,
	}
	body := scrape(t, r)
	for series, want := range checks {
		line := findLine(body, series)
		if line == "" {
			t.Errorf("series %s missing", series)
			continue
		}
		if got := strings.TrimSpace(strings.TrimPrefix(line, series)); got != trimFloat(want) {
			t.Errorf("%s = %s, want %v", series, got, want)
		}
	}
	p.PartitionReleased("orders", 3)
	if findLine(scrape(t, r), `sluice_consumer_lag_messages{partition="3"`) != "" {
		t.Error("released partition still exported")
	}
}

func TestEveryMetricIsSluicePrefixed(t *testing.T) {
	r := New("v1")
	r.Pipeline("p").Received()
	r.Limiter("http://f/").SetLimit(3)
	mfs, err := r.Gatherer().Gather()
	if err != nil || len(mfs) == 0 {
		t.Fatalf("gather: %d families, %v", len(mfs), err)
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "sluice_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s is not sluice_*", name)
		}
	}
}

func TestLimiterRecorder(t *testing.T) {
	r := New("v1")
	l := r.Limiter("http://f/")
	l.SetLimit(12)
	l.SetInFlight(12)
	l.SetWaiting(5)
	l.Cut()
	body := scrape(t, r)
	for series, want := range map[string]string{
		`sluice_flow_limit{function="http://f/"}`:      "12",
		`sluice_flow_in_flight{function="http://f/"}`:  "12",
		`sluice_flow_waiting{function="http://f/"}`:    "5",
		`sluice_flow_cuts_total{function="http://f/"}`: "1",
	} {
		if got := strings.TrimSpace(strings.TrimPrefix(findLine(body, series), series)); got != want {
			t.Errorf("%s = %q, want %s", series, got, want)
		}
	}
}

func scrape(t *testing.T, r *Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func findLine(body, prefix string) string {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// trimFloat formats f as the exposition format does ("2", "0.5").
func trimFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
