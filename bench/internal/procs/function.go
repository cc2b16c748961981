package procs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// Function is a running examples/function process.
type Function struct {
	*Proc
	// URL is where it accepts CloudEvents ("http://127.0.0.1:PORT/").
	URL string
	// Started is when it logged that it listens: the origin of its
	// -capacity-schedule, to within the 10 ms this package polls at.
	Started time.Time

	client *http.Client
}

// StartFunction runs the example function on a free loopback port with
// -quiet and the given flags, and waits until it listens.
func StartFunction(ctx context.Context, bin string, flags []string, logPath string) (*Function, error) {
	argv := append([]string{bin, "-addr", "127.0.0.1:0", "-quiet"}, flags...)
	p, err := startProc("function", argv, logPath)
	if err != nil {
		return nil, err
	}
	f := &Function{Proc: p, client: &http.Client{Timeout: 5 * time.Second}}
	wait, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err = poll(wait, 10*time.Millisecond, func() (bool, error) {
		if err := p.Exited(); err != nil {
			return false, err
		}
		addr := listeningAddr(p.LogPath)
		if addr == "" {
			return false, nil
		}
		f.Started = time.Now()
		f.URL = "http://" + addr + "/"
		return true, nil
	})
	if err != nil {
		_ = p.Stop(5 * time.Second)
		return nil, fmt.Errorf("function did not start: %w", err)
	}
	return f, nil
}

// listeningAddr finds the address in the function's {"msg":"listening"} log line.
func listeningAddr(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		var l struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "listening" && l.Addr != "" {
			return l.Addr
		}
	}
	return ""
}

// FunctionStats is the function's GET /stats document.
type FunctionStats struct {
	Calls       int64            `json:"calls"`
	Events      int64            `json:"events"`
	ByStatus    map[string]int64 `json:"byStatus"`
	InFlight    int64            `json:"inFlight"`
	InFlightMax int64            `json:"inFlightMax"`
	Capacity    int              `json:"capacity"`
	Order       *struct {
		Checked    int64 `json:"checked"`
		Violations int64 `json:"violations"`
		Duplicates int64 `json:"duplicates"`
		Gaps       int64 `json:"gaps"`
		Unparsed   int64 `json:"unparsed"`
		Keys       int   `json:"keys"`
	} `json:"order"`
}

// Status returns the count of answers with the given HTTP status.
func (s FunctionStats) Status(code int) int64 { return s.ByStatus[fmt.Sprint(code)] }

// Stats reads GET /stats.
func (f *Function) Stats(ctx context.Context) (FunctionStats, error) {
	var s FunctionStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL+"stats", nil)
	if err != nil {
		return s, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return s, fmt.Errorf("function stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("function stats: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("function stats: %w", err)
	}
	return s, nil
}
