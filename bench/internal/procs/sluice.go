package procs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"time"
)

// Sluice is a running `sluice run` process.
type Sluice struct {
	*Proc
	// Admin is its admin address (/metrics, /readyz), "127.0.0.1:PORT".
	Admin string

	client *http.Client
}

// StartSluice runs `sluice run pipeline --admin-addr <free port>` with
// warn-level logs (per-event info lines would cost CPU the benchmark
// would then blame on Sluice), the given drain timeout and any extra flags
// (such as --pprof).
func StartSluice(bin, pipeline, logPath string, drain time.Duration, extra ...string) (*Sluice, error) {
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	argv := []string{bin, "run", pipeline, "--admin-addr", admin, "--log-level", "warn",
		"--drain-timeout", drain.String()}
	argv = append(argv, extra...)
	p, err := startProc("sluice", argv, logPath)
	if err != nil {
		return nil, err
	}
	return &Sluice{Proc: p, Admin: admin, client: &http.Client{Timeout: 5 * time.Second}}, nil
}

// WaitReady polls /readyz until it answers 200. If the process exits first
// it returns an *ExitedError (a rejected configuration ends up here).
func (s *Sluice) WaitReady(ctx context.Context, timeout time.Duration) error {
	wait, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := poll(wait, 20*time.Millisecond, func() (bool, error) {
		if err := s.Exited(); err != nil {
			return false, err
		}
		resp, err := s.client.Get("http://" + s.Admin + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("sluice not ready after %v; log ends with:\n%s", timeout, s.Tail(2048))
	}
	return err
}

// Metrics scrapes /metrics.
func (s *Sluice) Metrics(ctx context.Context) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sluice metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sluice metrics: %s", resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// Binaries are the programs a benchmark runs.
type Binaries struct {
	Sluice, Function string
}

// Build compiles ./cmd/sluice and ./examples/function from root into dir.
func Build(ctx context.Context, root, dir string) (Binaries, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/sluice", "./examples/function")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("go build: %w\n%s", err, out)
	}
	return Binaries{Sluice: dir + "/sluice", Function: dir + "/function"}, nil
}
