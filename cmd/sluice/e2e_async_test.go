package main

// End-to-end tests of the asynchronous invocation service with the real
// binaries: every task accepted (202) before a SIGKILL completes after a
// restart on the same data directory, and the `sluice tasks` CLI.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/sluicehq/sluice/internal/testenv"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const asyncKey = "e2e-key-0123456789abcdef"

// asyncSetup writes a tenant and a function document calling fnAddr.
func asyncSetup(t *testing.T, fnAddr string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`apiVersion: sluice.dev/v1
kind: Tenant
metadata: {name: acme}
spec: {apiKeys: [%q]}
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: work, tenant: acme}
spec:
  url: http://%s/
  delivery:
    concurrency: {initial: 16, max: 64}
`, asyncKey, fnAddr)
	path := filepath.Join(dir, "async.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// apiCall sends one request with the tenant's key and decodes the answer.
func apiCall(t *testing.T, method, url string, body []byte, out any) int {
	t.Helper()
	code, err := apiDo(method, url, body, out)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// apiDo is apiCall for goroutines other than the test's.
func apiDo(method, url string, body []byte, out any) (int, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+asyncKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		_ = json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

type asyncTask struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Attempts int    `json:"attempts"`
}

// TestAsyncE2EKillAfterAccept submits a batch, SIGKILLs Sluice the moment
// the last 202 arrived, restarts it on the same data directory, and
// requires every accepted task to succeed, each with one terminal state,
// and the function to have answered each at least once.
func TestAsyncE2EKillAfterAccept(t *testing.T) {
	fnAddr, admin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	ledger := filepath.Join(t.TempDir(), "ledger")
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-quiet", "-latency", "100ms", "-ledger", ledger)
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	cfg := asyncSetup(t, fnAddr)
	data := filepath.Join(t.TempDir(), "data")
	args := []string{"run", cfg, "--data-dir", data, "--admin-addr", admin, "--queue-ack-wait", "2s", "--log-level", "warn"}
	sluice := startProc(t, bin(t, "sluice"), args...)
	waitHTTP(t, "http://"+admin+"/healthz")

	const n = 300
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				var r struct{ TaskID string }
				code, err := apiDo(http.MethodPost, "http://"+admin+"/v1/functions/work/invocations", []byte(fmt.Sprintf(`{"i": %d}`, i)), &r)
				if err != nil || code != http.StatusAccepted || r.TaskID == "" {
					errs <- fmt.Errorf("submission %d: %d %v", i, code, err)
					return
				}
				ids[i] = r.TaskID
			}
		}()
	}
	wg.Wait()
	if err := sluice.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("sluice exited cleanly after SIGKILL?")
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	done := len(ledgerLines(t, ledger))
	t.Logf("%d of %d tasks answered before the kill", done, n)

	startProc(t, bin(t, "sluice"), args...)
	waitHTTP(t, "http://"+admin+"/healthz")
	deadline := time.Now().Add(3 * time.Minute)
	for _, id := range ids {
		for {
			var task asyncTask
			code := apiCall(t, http.MethodGet, "http://"+admin+"/v1/tasks/"+id, nil, &task)
			if code == http.StatusOK && task.State == "succeeded" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s: %d %+v after the restart", id, code, task)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	answered := ledgerLines(t, ledger)
	redone := 0
	for _, id := range ids {
		// A plain body's event id is its task id.
		if answered[id] == 0 {
			t.Fatalf("task %s succeeded but the function never answered it", id)
		}
		redone += answered[id] - 1
	}
	var page struct{ Tasks []asyncTask }
	apiCall(t, http.MethodGet, "http://"+admin+"/v1/tasks?limit=1000", nil, &page)
	if len(page.Tasks) != n {
		t.Fatalf("%d tasks listed, want %d", len(page.Tasks), n)
	}
	for _, task := range page.Tasks {
		if task.State != "succeeded" {
			t.Fatalf("task %+v", task)
		}
	}
	t.Logf("%d calls repeated after the kill (at-least-once)", redone)
}

// sluiceCLI runs `sluice args...` and returns its stdout, stderr and exit code.
func sluiceCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin(t, "sluice"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestAsyncE2ETasksCLI(t *testing.T) {
	fnAddr, admin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	startProc(t, bin(t, "function"), "-addr", fnAddr, "-quiet", "-poison-prefix", "bad")
	waitHTTP(t, "http://"+fnAddr+"/healthz")
	cfg := asyncSetup(t, fnAddr)
	startProc(t, bin(t, "sluice"), "run", cfg, "--data-dir", filepath.Join(t.TempDir(), "data"), "--admin-addr", admin)
	waitHTTP(t, "http://"+admin+"/healthz")
	base := "http://" + admin

	var ok, bad struct{ TaskID string }
	apiCall(t, http.MethodPost, base+"/v1/functions/work/invocations", []byte(`{"id": "fine"}`), &ok)
	apiCall(t, http.MethodPost, base+"/v1/functions/work/invocations", []byte(`{"id": "bad-1"}`), &bad)
	cli := func(args ...string) (string, string, int) {
		return sluiceCLI(t, append([]string{"tasks"}, append(args, "--api", admin, "--key", asyncKey)...)...)
	}
	waitCLI := func(id, state string) {
		deadline := time.Now().Add(time.Minute)
		for {
			out, _, _ := cli("get", id)
			var task asyncTask
			_ = json.Unmarshal([]byte(out), &task)
			if task.State == state {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s: %s, want %s", id, out, state)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitCLI(ok.TaskID, "succeeded")
	waitCLI(bad.TaskID, "failed") // a permanent 400, no dead-letter route

	out, _, code := cli("list", "--state", "failed")
	if code != 0 || !strings.Contains(out, bad.TaskID) || strings.Contains(out, ok.TaskID) {
		t.Fatalf("list --state failed: %d\n%s", code, out)
	}
	if out, _, code = cli("retry", bad.TaskID); code != 0 || !strings.Contains(out, `"queued"`) {
		t.Fatalf("retry: %d\n%s", code, out)
	}
	waitCLI(bad.TaskID, "failed")
	if _, errOut, code := cli("cancel", ok.TaskID); code != 1 || !strings.Contains(errOut, "conflict") {
		t.Fatalf("cancel of a succeeded task: %d %s", code, errOut)
	}
	if _, _, code := cli("delete", ok.TaskID); code != 0 {
		t.Fatalf("delete: %d", code)
	}
	if _, errOut, code := cli("get", ok.TaskID); code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("get after delete: %d %s", code, errOut)
	}
	if _, errOut, code := sluiceCLI(t, "tasks", "list", "--api", admin, "--key", "wrong-key-0123456789abcdef"); code != 1 || !strings.Contains(errOut, "unauthenticated") {
		t.Fatalf("wrong key: %d %s", code, errOut)
	}

	// Pause the function: new tasks wait as paused; a batch cancels them
	// by filter; resume lets the next one run.
	if out, _, code = cli("pause", "work"); code != 0 || !strings.Contains(out, `"paused": true`) {
		t.Fatalf("pause: %d\n%s", code, out)
	}
	var held [2]struct{ TaskID string }
	for i := range held {
		apiCall(t, http.MethodPost, base+"/v1/functions/work/invocations", []byte(`{"id": "held"}`), &held[i])
	}
	for _, h := range held {
		waitCLI(h.TaskID, "paused")
	}
	if _, errOut, code := cli("batch", "cancel"); code != 1 || !strings.Contains(errOut, "at least one") {
		t.Fatalf("batch without a filter: %d %s", code, errOut)
	}
	if out, _, code = cli("batch", "cancel", "--function", "work", "--state", "paused"); code != 0 || !strings.Contains(out, `"changed": 2`) {
		t.Fatalf("batch cancel: %d\n%s", code, out)
	}
	for _, h := range held {
		waitCLI(h.TaskID, "cancelled")
	}
	if out, _, code = cli("resume", "work"); code != 0 || !strings.Contains(out, `"paused": false`) {
		t.Fatalf("resume: %d\n%s", code, out)
	}
	var after struct{ TaskID string }
	apiCall(t, http.MethodPost, base+"/v1/functions/work/invocations", []byte(`{"id": "after-resume"}`), &after)
	waitCLI(after.TaskID, "succeeded")
	for _, h := range held {
		if out, _, _ := cli("get", h.TaskID); !strings.Contains(out, `"cancelled"`) {
			t.Fatalf("a cancelled task ran after the resume: %s", out)
		}
	}
}
