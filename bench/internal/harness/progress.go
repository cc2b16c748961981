package harness

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Progress prints what is running. On a terminal a tracked task rewrites one
// line with \r several times a second; otherwise (make output piped to a
// file or CI) it prints a line every few seconds. Safe for concurrent use.
type Progress struct {
	w     io.Writer
	tty   bool
	every time.Duration

	mu      sync.Mutex
	pending bool // a \r line is on screen without its newline
}

// NewProgress writes to f, detecting whether f is a terminal.
func NewProgress(f *os.File) *Progress {
	tty := false
	if fi, err := f.Stat(); err == nil {
		tty = fi.Mode()&os.ModeCharDevice != 0
	}
	return newProgress(f, tty)
}

func newProgress(w io.Writer, tty bool) *Progress {
	every := 5 * time.Second
	if tty {
		every = 250 * time.Millisecond
	}
	return &Progress{w: w, tty: tty, every: every}
}

// Printf prints a line (ending any \r line first).
func (p *Progress) Printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLineLocked()
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *Progress) endLineLocked() {
	if p.pending {
		fmt.Fprintln(p.w)
		p.pending = false
	}
}

// Track reports count() against total (0: unknown) under label until stop
// is called. It starts one goroutine, which stop ends and waits for; stop
// prints the final state and must be called exactly once.
func (p *Progress) Track(label string, total int64, count func() int64) (stop func()) {
	start := time.Now()
	done := make(chan struct{})
	exited := make(chan struct{})
	var lastN int64
	lastT := start
	show := func(final bool) {
		n := count()
		now := time.Now()
		// The rate since the previous line says whether it is moving now;
		// the final line gives the average.
		rate := float64(n-lastN) / now.Sub(lastT).Seconds()
		if final {
			rate = float64(n) / now.Sub(start).Seconds()
		}
		lastN, lastT = n, now
		msg := fmt.Sprintf("  %-28s %9d", label, n)
		if total > 0 {
			msg += fmt.Sprintf("/%-9d %5.1f%%", total, 100*float64(n)/float64(total))
		}
		msg += fmt.Sprintf("  %8.0f/s  %5.1fs", rate, now.Sub(start).Seconds())
		p.mu.Lock()
		defer p.mu.Unlock()
		switch {
		case p.tty && final:
			fmt.Fprintf(p.w, "\r%s\033[K\n", msg)
			p.pending = false
		case p.tty:
			fmt.Fprintf(p.w, "\r%s\033[K", msg)
			p.pending = true
		default:
			fmt.Fprintln(p.w, msg)
		}
	}
	go func() {
		defer close(exited)
		t := time.NewTicker(p.every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				show(false)
			}
		}
	}()
	return func() {
		close(done)
		<-exited
		show(true)
	}
}
