// Package asyncload drives Sluice's asynchronous invocation service for the
// benchmarks (B4, B6): it runs `sluice run` on a configuration of Tenant
// and Function documents with its own data directory, submits invocations
// over keep-alive connections with a fixed concurrency or rate, and reads
// tasks back from the task API.
package asyncload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/bench/internal/procs"
)

// Sluice is a running `sluice run` process serving the async APIs on its
// admin address.
type Sluice struct {
	Addr string // "127.0.0.1:PORT": admin, invoke and task APIs
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// StartSluice runs `sluice run config --data-dir dataDir --admin-addr
// <free port> --log-level warn extra...` and waits until it serves.
func StartSluice(ctx context.Context, bin, config, dataDir, logPath string, extra ...string) (*Sluice, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args := append([]string{"run", config, "--data-dir", dataDir, "--admin-addr", addr, "--log-level", "warn"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	s := &Sluice{Addr: addr, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { s.err = cmd.Wait(); logf.Close(); close(s.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.done:
			return nil, fmt.Errorf("sluice exited: %v (log %s)", s.err, logPath)
		case <-ctx.Done():
			_ = s.Stop(5 * time.Second)
			return nil, ctx.Err()
		default:
		}
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			_ = s.Stop(5 * time.Second)
			return nil, fmt.Errorf("sluice not serving after a minute (log %s)", logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PID is the process id.
func (s *Sluice) PID() int { return s.cmd.Process.Pid }

// Usage reads the process's CPU time and memory.
func (s *Sluice) Usage() (procs.Usage, error) { return procs.ReadUsage(s.PID()) }

// Metrics scrapes /metrics.
func (s *Sluice) Metrics(ctx context.Context) (procs.Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return procs.ParseMetrics(resp.Body)
}

// Stop sends SIGTERM and waits up to grace, then kills.
func (s *Sluice) Stop(grace time.Duration) error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(grace):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	var ee *exec.ExitError
	if s.err != nil && !errors.As(s.err, &ee) {
		return s.err
	}
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Client submits invocations and reads tasks over keep-alive connections.
type Client struct {
	Base string // "http://127.0.0.1:PORT"
	Key  string // the tenant's API key ("" sends none)
	http *http.Client
}

// NewClient returns a client with room for concurrency idle connections.
func NewClient(base, key string, concurrency int) *Client {
	tr := &http.Transport{MaxIdleConns: concurrency * 2, MaxIdleConnsPerHost: concurrency * 2, IdleConnTimeout: time.Minute}
	return &Client{Base: base, Key: key, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Close releases the idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Post sends body to path and returns the status and the task id of a
// 202/200 answer.
func (c *Client) Post(ctx context.Context, path string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Key != "" {
		req.Header.Set("Authorization", "Bearer "+c.Key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		TaskID string `json:"taskId"`
	}
	_ = json.Unmarshal(b, &r)
	return resp.StatusCode, r.TaskID, nil
}

// Task is what the benchmarks read of a task.
type Task struct {
	ID    string `json:"id"`
	State string `json:"state"`
	Times struct {
		Received time.Time  `json:"received"`
		Finished *time.Time `json:"finished"`
	} `json:"times"`
}

// Get reads one task.
func (c *Client) Get(ctx context.Context, id string) (Task, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/v1/tasks/"+id, nil)
	if err != nil {
		return Task{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Key)
	resp, err := c.http.Do(req)
	if err != nil {
		return Task{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Task{}, fmt.Errorf("task %s: %s", id, resp.Status)
	}
	var t Task
	return t, json.NewDecoder(resp.Body).Decode(&t)
}

// Result is one submission run.
type Result struct {
	// Accepted counts 2xx answers (202 from the invoke API); Refused
	// everything else (not retried).
	Accepted, Refused int64
	First, Last       time.Time
	// Latencies of the accepted submissions, sorted.
	Latencies []time.Duration
	// IDs of the accepted tasks, in no particular order.
	IDs []string
}

// Rate is accepted submissions per second.
func (r Result) Rate() float64 {
	d := r.Last.Sub(r.First).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(r.Accepted) / d
}

// Quantile of the accepted submissions' latencies.
func (r Result) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.Latencies[min(int(q*float64(len(r.Latencies))), len(r.Latencies)-1)]
}

// Submit posts body to path n times from concurrency workers, each with one
// request in flight; with interval > 0 the submissions are paced (one
// every interval, spread over the workers) instead of as fast as possible.
// count, if set, is incremented per answer (for progress).
func Submit(ctx context.Context, c *Client, path string, body []byte, n, concurrency int, interval time.Duration, count *atomic.Int64) Result {
	var (
		mu     sync.Mutex
		res    Result
		next   atomic.Int64
		wg     sync.WaitGroup
		origin = time.Now()
	)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var ids []string
			var acc, ref int64
			first, last := time.Time{}, time.Time{}
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					break
				}
				if interval > 0 {
					if d := time.Until(origin.Add(time.Duration(i) * interval)); d > 0 {
						time.Sleep(d)
					}
				}
				start := time.Now()
				code, id, err := c.Post(ctx, path, body)
				end := time.Now()
				if count != nil {
					count.Add(1)
				}
				if err != nil || code/100 != 2 {
					ref++
					continue
				}
				acc++
				lat = append(lat, end.Sub(start))
				ids = append(ids, id)
				if first.IsZero() {
					first = start
				}
				last = end
			}
			mu.Lock()
			defer mu.Unlock()
			res.Accepted += acc
			res.Refused += ref
			res.Latencies = append(res.Latencies, lat...)
			res.IDs = append(res.IDs, ids...)
			if !first.IsZero() && (res.First.IsZero() || first.Before(res.First)) {
				res.First = first
			}
			if last.After(res.Last) {
				res.Last = last
			}
		}()
	}
	wg.Wait()
	slices.Sort(res.Latencies)
	return res
}

// Body is a JSON invocation body of about size bytes.
func Body(size int) []byte {
	pad := max(size-len(`{"pad":""}`), 0)
	return []byte(`{"pad":"` + string(bytes.Repeat([]byte("x"), pad)) + `"}`)
}
