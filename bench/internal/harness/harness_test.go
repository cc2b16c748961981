package harness

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMedian(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{"odd", []float64{3, 1, 2}, 2},
		{"even", []float64{4, 1, 3, 2}, 2.5},
		{"ignores NaN", []float64{nan, 5, 1, nan, 3}, 3},
		{"one", []float64{7}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Median(tt.in); got != tt.want {
				t.Errorf("Median(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	if got := Median([]float64{nan}); !math.IsNaN(got) {
		t.Errorf("Median of only NaN = %v, want NaN", got)
	}
}

func TestRatiosAndMin(t *testing.T) {
	r := Ratios([]float64{10, 6, 1}, []float64{5, 0, 4})
	if r[0] != 2 || !math.IsNaN(r[1]) || r[2] != 0.25 {
		t.Errorf("Ratios = %v, want [2 NaN 0.25]", r)
	}
	m := Min([]float64{1, 5}, []float64{3, 2})
	if m[0] != 1 || m[1] != 2 {
		t.Errorf("Min = %v, want [1 2]", m)
	}
}

func TestSpreadAndF(t *testing.T) {
	tests := []struct {
		in   []float64
		want string
	}{
		{[]float64{1, 3, 2}, "2.0 (1.0–3.0)"},
		{[]float64{4}, "4.0"},
		{[]float64{math.NaN()}, "—"},
		{nil, "—"},
	}
	for _, tt := range tests {
		if got := Spread(tt.in, 1); got != tt.want {
			t.Errorf("Spread(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := F(math.Inf(1), 2); got != "—" {
		t.Errorf("F(+Inf) = %q, want —", got)
	}
}

func TestNumJSON(t *testing.T) {
	b, err := json.Marshal(map[string]any{"a": Num(math.NaN()), "b": Num(1.5), "c": Nums([]float64{math.Inf(-1), 2})})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":null,"b":1.5,"c":[null,2]}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

func TestReportRender(t *testing.T) {
	r := &Report{
		Scenario: "bx", Title: "demo",
		Tables: []Table{{Title: "T", Header: []string{"name", "value"}, Rows: [][]string{{"long name", "1"}, {"x", "22"}}}},
		Bars: []Bar{
			Judge("ratio", "≥ 1", "2", true),
			Judge("other", "≥ 1", "0.5", false),
			Unavailable("batch", "≥ 5", "refused"),
		},
		Notes: []string{"a note"},
	}
	var buf bytes.Buffer
	r.Render(&buf)
	out := buf.String()
	for _, want := range []string{"== BX: demo", "long name  1", "x          22", "MET", "MISSED", "N/A", "refused", "note: a note"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestProgressNotTTY(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, false)
	var n atomic.Int64
	stop := p.Track("job", 10, n.Load)
	n.Store(10)
	stop()
	p.Printf("done %d", 1)
	out := buf.String()
	if !strings.Contains(out, "job") || !strings.Contains(out, "10/10") || !strings.Contains(out, "100.0%") {
		t.Errorf("final progress line missing: %q", out)
	}
	if strings.Contains(out, "\r") {
		t.Errorf("non-terminal output must not use \\r: %q", out)
	}
	if !strings.HasSuffix(out, "done 1\n") {
		t.Errorf("Printf line missing: %q", out)
	}
}

func TestProgressTTY(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, true)
	stop := p.Track("job", 0, func() int64 { return 3 })
	stop()
	if out := buf.String(); !strings.HasPrefix(out, "\r") || !strings.HasSuffix(out, "\n") {
		t.Errorf("terminal output should rewrite one line and end it: %q", out)
	}
}
