package measure

import (
	"bufio"
	"fmt"
	"os"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/procs"
)

// memColumns are the Go runtime figures of Sluice's /metrics written per
// sample by a memLog, in bytes except the goroutines.
var memColumns = []string{
	"go_memstats_heap_alloc_bytes",
	"go_memstats_heap_inuse_bytes",
	"go_memstats_heap_idle_bytes",
	"go_memstats_heap_released_bytes",
	"go_memstats_stack_inuse_bytes",
	"go_memstats_next_gc_bytes",
	"go_memstats_sys_bytes",
	"go_goroutines",
}

// memLog writes one tab-separated line of memory figures per sample (see
// Profile.Memory). Owned by the sampling loop: not safe for concurrent use.
// A nil *memLog ignores add and close.
type memLog struct {
	f     *os.File
	w     *bufio.Writer
	first time.Time
}

func newMemLog(path string, first time.Time) (*memLog, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("memory log: %w", err)
	}
	l := &memLog{f: f, w: bufio.NewWriter(f), first: first}
	fmt.Fprint(l.w, "seconds\tvm_rss_bytes\tvm_hwm_bytes\trss_anon_bytes\trss_file_bytes")
	for _, c := range memColumns {
		fmt.Fprint(l.w, "\t", c)
	}
	fmt.Fprintln(l.w)
	return l, nil
}

func (l *memLog) add(s Sample, m procs.Metrics) {
	if l == nil {
		return
	}
	u := s.Sluice
	fmt.Fprintf(l.w, "%.2f\t%d\t%d\t%d\t%d", s.At.Sub(l.first).Seconds(), u.RSSBytes, u.HWMBytes, u.RSSAnonBytes, u.RSSFileBytes)
	for _, c := range memColumns {
		fmt.Fprintf(l.w, "\t%.0f", m.Sum(c, nil))
	}
	fmt.Fprintln(l.w)
}

// close flushes the log; a write error is reported on progress (the
// figures are diagnostics: the run stands without them).
func (l *memLog) close(progress *harness.Progress) {
	if l == nil {
		return
	}
	err := l.w.Flush()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		progress.Printf("%s: %v", l.f.Name(), err)
	}
}
