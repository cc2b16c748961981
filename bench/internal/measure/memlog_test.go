package measure

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/bench/internal/procs"
)

// One line per sample, in the header's column order, with the /proc
// figures and the Go runtime's from the scrape; a missing metric is 0.
func TestMemLogWritesOneLinePerSample(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r-mem.tsv")
	first := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	l, err := newMemLog(path, first)
	if err != nil {
		t.Fatal(err)
	}
	m := procs.Metrics{
		{Name: "go_memstats_heap_inuse_bytes", Value: 30 << 20},
		{Name: "go_memstats_next_gc_bytes", Value: 40 << 20},
		{Name: "go_goroutines", Value: 601},
		{Name: "sluice_flow_limit", Labels: map[string]string{"function": "f"}, Value: 204},
	}
	s := Sample{At: first.Add(1500 * time.Millisecond),
		Sluice: procs.Usage{RSSBytes: 80 << 20, HWMBytes: 81 << 20, RSSAnonBytes: 53 << 20, RSSFileBytes: 27 << 20}}
	l.add(s, m)
	l.close(nil)

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want header + 1:\n%s", len(lines), b)
	}
	head, row := strings.Split(lines[0], "\t"), strings.Split(lines[1], "\t")
	if len(head) != 5+len(memColumns) || len(row) != len(head) {
		t.Fatalf("header has %d columns, row %d; want %d:\n%s", len(head), len(row), 5+len(memColumns), b)
	}
	want := map[string]string{
		"seconds": "1.50", "vm_rss_bytes": "83886080", "vm_hwm_bytes": "84934656",
		"rss_anon_bytes": "55574528", "rss_file_bytes": "28311552",
		"go_memstats_heap_inuse_bytes": "31457280", "go_memstats_next_gc_bytes": "41943040",
		"go_goroutines": "601", "go_memstats_heap_idle_bytes": "0",
	}
	for i, h := range head {
		if w, ok := want[h]; ok && row[i] != w {
			t.Errorf("%s = %s, want %s", h, row[i], w)
		}
	}
}

// A nil log (memory figures not asked for) ignores every call.
func TestMemLogNil(t *testing.T) {
	var l *memLog
	l.add(Sample{}, nil)
	l.close(nil)
}
