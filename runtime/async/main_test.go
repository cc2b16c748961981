package async

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tasks/boltstore"
)

func TestMain(m *testing.M) {
	// The RocketMQ client (linked in through the engine's components)
	// starts a cache janitor when its package is initialised; sarama's
	// go-metrics starts a ticker with its first client (the Kafka queue).
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"),
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
}

// Generous bounds that only stop hung tests; no assertion depends on speed.
const waitFor = 90 * time.Second

// API keys of the test tenants.
const (
	keyAcme = "acme-key-0123456789abcdef"
	keyBeta = "beta-key-0123456789abcdef"
)

// baseConfig has two tenants and, per tenant, the functions of fnYAML.
const baseConfig = `
apiVersion: sluice.dev/v1
kind: Tenant
metadata: {name: acme}
spec: {apiKeys: ["` + keyAcme + `"]{{if .AcmeQuotas}}, quotas: {{.AcmeQuotas}}{{end}}}
---
apiVersion: sluice.dev/v1
kind: Tenant
metadata: {name: beta}
spec: {apiKeys: ["` + keyBeta + `"]}
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: echo, tenant: acme}
spec:
  url: {{.URL}}
  maxRequestBytes: 1KiB
  delivery:
    concurrency: {initial: 4, max: 16}
    retry: {attempts: {{.Attempts}}, delay: 20ms, maxDelay: 50ms}
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: other, tenant: acme}
spec:
  url: {{.URL}}
  delivery:
    retry: {attempts: 2, delay: 20ms, maxDelay: 50ms}
  results:
    onFailure: [{log: {}}]
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: short, tenant: acme}
spec:
  url: {{.URL}}
  dedupWindow: 1m
  delivery: {maxEventAge: 1s}
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: echo, tenant: beta}
spec:
  url: {{.URL}}/beta
`

// fnServer is a test function. Its behaviour is set per test through
// handle; by default it answers every event with a result event.
type fnServer struct {
	*httptest.Server
	mu     sync.Mutex
	handle func(w http.ResponseWriter, r *http.Request)
	calls  map[string]int // by ce-id
}

func newFnServer(t *testing.T) *fnServer {
	f := &fnServer{calls: map[string]int{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.calls[r.Header.Get("ce-id")]++
		h := f.handle
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		if h != nil {
			h(w, r)
			return
		}
		answer(w, r, body)
	}))
	t.Cleanup(f.Close)
	return f
}

// answer replies with a binary-mode result event whose data echoes the input.
func answer(w http.ResponseWriter, r *http.Request, body []byte) {
	w.Header().Set("ce-specversion", "1.0")
	w.Header().Set("ce-id", "result-"+r.Header.Get("ce-id"))
	w.Header().Set("ce-type", "test.result")
	w.Header().Set("ce-source", "/test")
	w.Header().Set("Content-Type", "application/json")
	b, _ := json.Marshal(map[string]string{"echo": string(body), "sawTenantExt": r.Header.Get("ce-sluicetenant")})
	_, _ = w.Write(b)
}

func (f *fnServer) setHandler(h func(w http.ResponseWriter, r *http.Request)) {
	f.mu.Lock()
	f.handle = h
	f.mu.Unlock()
}

func (f *fnServer) callsOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

// env is a running service on an embedded queue and a bbolt store in a
// temporary directory.
type env struct {
	t     *testing.T
	dir   string
	fn    *fnServer
	cfg   Config
	q     queue.Queue
	store tasks.Store
	svc   *Service
	api   *httptest.Server
	stop  context.CancelFunc
	done  chan error
	owned []func() // closes the queue and store the env opened
}

type envOpts struct {
	yaml       string // configuration template; baseConfig when empty
	attempts   int    // retry attempts of acme/echo (default 3)
	acmeQuotas string
	dir        string // data directory (reused across restarts)
	tweak      func(*Config)
	store      tasks.Store // instead of a bbolt store in dir
	queue      queue.Queue // instead of an embedded queue in dir
	queueCfg   queue.Config
}

func loadConfig(t *testing.T, text string, data any) *pipelines.Config {
	t.Helper()
	tpl := template.Must(template.New("cfg").Parse(text))
	var b strings.Builder
	if err := tpl.Execute(&b, data); err != nil {
		t.Fatal(err)
	}
	cfg, err := pipelines.Loader{}.Parse("test.yaml", []byte(b.String()))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, b.String())
	}
	return cfg
}

func startEnv(t *testing.T, fn *fnServer, o envOpts) *env {
	t.Helper()
	if fn == nil {
		fn = newFnServer(t)
	}
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.attempts == 0 {
		o.attempts = 3
	}
	if o.yaml == "" {
		o.yaml = baseConfig
	}
	docs := loadConfig(t, o.yaml, map[string]any{"URL": fn.URL, "Attempts": o.attempts, "AcmeQuotas": o.acmeQuotas})
	e := &env{t: t, dir: o.dir, fn: fn}
	ctx := context.Background()
	if e.q = o.queue; e.q == nil {
		q, err := queue.OpenEmbedded(ctx, queue.EmbeddedConfig{Config: o.queueCfg, DataDir: filepath.Join(o.dir, "queue")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		e.q = q
		e.owned = append(e.owned, func() { _ = q.Close(context.Background()) })
	}
	if e.store = o.store; e.store == nil {
		st, err := boltstore.Open(filepath.Join(o.dir, "tasks.db"), tasks.Options{})
		if err != nil {
			t.Fatal(err)
		}
		e.store = st
		e.owned = append(e.owned, func() { _ = st.Close() })
	}
	e.cfg = Config{
		Tenants: docs.Tenants, Functions: docs.Functions, Store: e.store, Queue: e.q,
		Log: testLog(t), Instance: "test", StateDir: o.dir, Metrics: metrics.New("test"), DrainTimeout: 10 * time.Second, Stdout: io.Discard,
		PausedRedelivery: 200 * time.Millisecond, PlacementInterval: time.Hour,
		ReconcileInterval: time.Hour, StatesInterval: time.Hour,
	}
	if o.tweak != nil {
		o.tweak(&e.cfg)
	}
	svc, err := New(e.cfg)
	if err != nil {
		e.closeOwned()
		t.Fatal(err)
	}
	e.svc = svc
	runCtx, stop := context.WithCancel(context.Background())
	e.stop, e.done = stop, make(chan error, 1)
	go func() { e.done <- svc.Run(runCtx) }()
	e.api = httptest.NewServer(svc.Handler())
	t.Cleanup(e.shutdown)
	return e
}

// shutdown stops the service (idempotent).
func (e *env) shutdown() {
	if e.stop == nil {
		return
	}
	e.api.Close()
	e.stop()
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("service stopped with: %v", err)
		}
	case <-time.After(waitFor):
		e.t.Error("service did not stop")
	}
	e.stop = nil
	e.closeOwned()
}

func (e *env) closeOwned() {
	for _, c := range e.owned {
		c()
	}
	e.owned = nil
}

// call sends one API request and decodes a JSON answer into out (if not nil).
func (e *env) call(method, path, key string, body []byte, header http.Header, out any) (int, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.api.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	if resp.StatusCode >= 400 {
		var ae apiError
		if err := json.Unmarshal(b, &ae); err != nil || ae.Code == "" || ae.Error == "" {
			e.t.Errorf("%s %s: %d error body is not {error, code}: %s", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, resp.Header
}

// submit invokes function as the tenant of key with a JSON body.
func (e *env) submit(key, function, body string, header http.Header) (int, InvokeResponse) {
	e.t.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	for k, v := range header {
		h[k] = v
	}
	var out InvokeResponse
	code, _ := e.call(http.MethodPost, "/v1/functions/"+function+"/invocations", key, []byte(body), h, &out)
	return code, out
}

// accept submits and requires a 202.
func (e *env) accept(key, function, body string) string {
	e.t.Helper()
	code, r := e.submit(key, function, body, nil)
	if code != http.StatusAccepted || r.TaskID == "" {
		e.t.Fatalf("submit: %d %+v", code, r)
	}
	return r.TaskID
}

func (e *env) task(key, id string) (int, TaskView) {
	e.t.Helper()
	var v TaskView
	code, _ := e.call(http.MethodGet, "/v1/tasks/"+id, key, nil, nil, &v)
	return code, v
}

// waitState polls a task until it is in one of states.
func (e *env) waitState(key, id string, states ...tasks.State) TaskView {
	e.t.Helper()
	deadline := time.Now().Add(waitFor)
	var last TaskView
	for time.Now().Before(deadline) {
		code, v := e.task(key, id)
		if code == http.StatusOK {
			last = v
			for _, s := range states {
				if v.State == s {
					return v
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("task %s: state %s, want one of %v (error %q)", id, last.State, states, last.Error)
	return last
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
