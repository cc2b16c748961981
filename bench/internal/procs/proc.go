// Package procs starts and watches the processes a benchmark measures —
// the sluice binary and the example function — and reads what they
// report: CPU time and memory from /proc, Prometheus metrics from Sluice's
// admin address, /stats from the function.
package procs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a child process whose stdout and stderr go to a log file.
//
// Ownership: the Proc owns one goroutine that waits for the process; Stop
// (or the process exiting by itself) ends it. Call Stop exactly once, from
// the goroutine that started the Proc; Exited and Usage may be called from
// any goroutine.
type Proc struct {
	name    string
	cmd     *exec.Cmd
	log     *os.File
	LogPath string

	done    chan struct{} // closed once the process has exited
	waitErr error         // written before done is closed
}

// ExitedError reports a process that exited while it was expected to run.
type ExitedError struct {
	Name string
	Err  error  // the exit status
	Tail string // the end of its log
}

func (e *ExitedError) Error() string {
	return fmt.Sprintf("%s exited: %v; log ends with:\n%s", e.Name, e.Err, e.Tail)
}

// startProc starts argv with its output in logPath.
func startProc(name string, argv []string, logPath string) (*Proc, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	log, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	// Children die with the bench even if it is killed: a leftover Sluice
	// would keep consuming and skew the next run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{name: name, cmd: cmd, log: log, LogPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited returns an *ExitedError if the process has exited, else nil.
func (p *Proc) Exited() error {
	select {
	case <-p.done:
		return &ExitedError{Name: p.name, Err: p.waitErr, Tail: p.Tail(2048)}
	default:
		return nil
	}
}

// Tail returns up to n bytes of the end of the log.
func (p *Proc) Tail(n int64) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}

// Stop sends SIGTERM, waits up to grace for the process to exit, then kills
// it. It returns the exit status if the process failed on its own (not the
// SIGKILL it may have received).
func (p *Proc) Stop(grace time.Duration) error {
	defer p.log.Close()
	select {
	case <-p.done:
		return p.exitErr()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.exitErr()
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", p.name, grace)
	}
}

func (p *Proc) exitErr() error {
	if p.waitErr != nil {
		return &ExitedError{Name: p.name, Err: p.waitErr, Tail: p.Tail(2048)}
	}
	return nil
}

// Usage is a process's resource use so far.
type Usage struct {
	CPUSeconds float64 // user + system
	RSSBytes   int64   // resident now
	HWMBytes   int64   // peak resident ("high water mark")
	// The resident now split by kind: anonymous (heap, stacks) and
	// file-backed (the binary's pages that were touched).
	RSSAnonBytes, RSSFileBytes int64
}

// clockTicks is USER_HZ, the unit of CPU times in /proc/<pid>/stat: 100 on
// every Linux ABI Go supports (it is fixed by the ABI, not by the kernel's
// HZ).
const clockTicks = 100

// Usage reads /proc/<pid>/stat and /proc/<pid>/status.
func (p *Proc) Usage() (Usage, error) { return ReadUsage(p.PID()) }

// ReadUsage reads the usage of any process (pid 0: this one).
func ReadUsage(pid int) (Usage, error) {
	dir := "/proc/self"
	if pid > 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	var u Usage
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return u, err
	}
	if u.CPUSeconds, err = parseStatCPU(string(stat)); err != nil {
		return u, err
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return u, err
	}
	parseStatusMem(string(status), &u)
	return u, nil
}

// parseStatCPU returns utime+stime in seconds from a /proc/<pid>/stat line.
// The command name (field 2) may contain spaces and parentheses, so fields
// are counted from the last ')'.
func parseStatCPU(stat string) (float64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no ')'")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("proc stat: too few fields")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("proc stat: %w", err)
	}
	return float64(ut+st) / clockTicks, nil
}

// parseStatusMem sets u's memory figures (VmRSS, VmHWM, RssAnon, RssFile)
// in bytes from /proc/<pid>/status.
func parseStatusMem(status string, u *Usage) {
	for _, line := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &u.RSSBytes
		case "VmHWM":
			dst = &u.HWMBytes
		case "RssAnon":
			dst = &u.RSSAnonBytes
		case "RssFile":
			dst = &u.RSSFileBytes
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err == nil {
			*dst = kb << 10
		}
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago (the child binds it; a clash fails the start loudly).
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// poll calls check every interval until it returns true or an error, or
// ctx ends.
func poll(ctx context.Context, interval time.Duration, check func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := check()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
