package procs

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseStatCPU(t *testing.T) {
	// comm with spaces and parentheses; utime 250, stime 50 ticks.
	stat := "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000 200 18446744073709551615"
	got, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if got != 3.0 {
		t.Errorf("cpu = %v, want 3.0 s", got)
	}
	if _, err := parseStatCPU("garbage"); err == nil {
		t.Error("want an error for a line without ')'")
	}
}

func TestParseStatusMem(t *testing.T) {
	status := "Name:\tsluice\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\nRssAnon:\t   12288 kB\nRssFile:\t    8192 kB\nThreads:\t9\n"
	var u Usage
	parseStatusMem(status, &u)
	want := Usage{RSSBytes: 20 << 20, HWMBytes: 40 << 20, RSSAnonBytes: 12 << 20, RSSFileBytes: 8 << 20}
	if u != want {
		t.Errorf("usage = %+v; want %+v", u, want)
	}
}

func TestReadUsageSelf(t *testing.T) {
	u, err := ReadUsage(0)
	if err != nil {
		t.Fatal(err)
	}
	if u.RSSBytes <= 0 || u.HWMBytes < u.RSSBytes || u.CPUSeconds < 0 {
		t.Errorf("implausible usage of this process: %+v", u)
	}
}

const exposition = `# HELP sluice_events_processed_total Events finished.
# TYPE sluice_events_processed_total counter
sluice_events_processed_total{outcome="succeeded",pipeline="bench/b1"} 90
sluice_events_processed_total{outcome="abandoned",pipeline="bench/b1"} 4
sluice_events_processed_total{outcome="succeeded",pipeline="bench/other"} 7
sluice_flow_limit{function="http://127.0.0.1:1/"} 32
weird{a="x\"y",b="c,d"} 1.5e3
sluice_function_duration_seconds_bucket{pipeline="p",status="2xx",le="0.01"} 50
sluice_function_duration_seconds_bucket{pipeline="p",status="2xx",le="0.02"} 90
sluice_function_duration_seconds_bucket{pipeline="p",status="2xx",le="0.04"} 100
sluice_function_duration_seconds_bucket{pipeline="p",status="2xx",le="+Inf"} 100
sluice_function_duration_seconds_count{pipeline="p",status="2xx"} 100
no_labels 3
`

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		match map[string]string
		want  float64
	}{
		{"sluice_events_processed_total", map[string]string{"pipeline": "bench/b1"}, 94},
		{"sluice_events_processed_total", map[string]string{"pipeline": "bench/b1", "outcome": "abandoned"}, 4},
		{"sluice_events_processed_total", nil, 101},
		{"sluice_flow_limit", map[string]string{"function": "http://127.0.0.1:1/"}, 32},
		{"weird", map[string]string{"a": `x"y`, "b": "c,d"}, 1500},
		{"no_labels", nil, 3},
		{"missing", nil, 0},
	}
	for _, tt := range tests {
		if got := m.Sum(tt.name, tt.match); got != tt.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", tt.name, tt.match, got, tt.want)
		}
	}
}

func TestParseMetricsErrors(t *testing.T) {
	for _, bad := range []string{`x{a="b} 1`, `x{a=b} 1`, `x 1z`, `justname`} {
		if _, err := ParseMetrics(strings.NewReader(bad + "\n")); err == nil {
			t.Errorf("ParseMetrics(%q): want an error", bad)
		}
	}
}

func TestQuantile(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	match := map[string]string{"pipeline": "p", "status": "2xx"}
	tests := []struct {
		q    float64
		want float64
	}{
		{0.5, 0.01},   // exactly the first bucket's count
		{0.7, 0.015},  // halfway through the second bucket
		{0.99, 0.038}, // 9/10 of the way through the third
	}
	for _, tt := range tests {
		if got := m.Quantile(tt.q, "sluice_function_duration_seconds", match); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := m.Quantile(0.5, "sluice_function_duration_seconds", map[string]string{"status": "5xx"}); !math.IsNaN(got) {
		t.Errorf("Quantile of an empty histogram = %v, want NaN", got)
	}
}

func TestListeningAddr(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fn.log")
	log := `{"time":"x","level":"INFO","msg":"starting"}` + "\n" +
		`{"time":"x","level":"INFO","msg":"listening","addr":"127.0.0.1:4242"}` + "\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := listeningAddr(path); got != "127.0.0.1:4242" {
		t.Errorf("listeningAddr = %q", got)
	}
	if got := listeningAddr(filepath.Join(t.TempDir(), "none")); got != "" {
		t.Errorf("listeningAddr of a missing file = %q, want empty", got)
	}
}
