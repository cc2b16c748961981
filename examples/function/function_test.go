package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/invoke"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	h   *handler
	url string
}

func start(t *testing.T, cfg config) fixture {
	t.Helper()
	h, err := newHandler(cfg)
	if err != nil {
		t.Fatalf("newHandler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return fixture{h: h, url: srv.URL}
}

// client returns Sluice's own function client for the fixture.
func (f fixture) client(t *testing.T, mode string, timeout time.Duration) *invoke.HTTPFunction {
	t.Helper()
	fn, err := invoke.NewHTTP(invoke.HTTPConfig{URL: f.url + "/", Mode: mode, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fn.Close)
	return fn
}

func (f fixture) stats(t *testing.T) stats {
	t.Helper()
	resp, err := http.Get(f.url + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("GET /stats: %v", err)
	}
	return s
}

func statusOf(err error) int {
	var ie *invoke.Error
	if errors.As(err, &ie) {
		return ie.Status
	}
	return -1
}

func TestResults(t *testing.T) {
	var logs bytes.Buffer
	f := start(t, config{Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	in := cetest.Full(t, "e1")
	for _, mode := range []string{pipelines.ModeBinary, pipelines.ModeStructured, pipelines.ModeBatch} {
		t.Run(mode, func(t *testing.T) {
			batch := []cloudevents.Event{in}
			if mode == pipelines.ModeBatch {
				batch = append(batch, in)
			}
			res, err := f.client(t, mode, 10*time.Second).Invoke(context.Background(), batch)
			if err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			if len(res.Events) == 0 || res.Failed != nil {
				t.Fatalf("Result = %+v", res)
			}
			for _, out := range res.Events {
				if out.Type() != in.Type()+".result" || out.Source() != resultSource || out.Subject() != in.Subject() || out.ID() != "e1.result" {
					t.Errorf("result attributes: %v", out)
				}
				if out.Extensions()["traceparent"] != in.Extensions()["traceparent"] || out.Extensions()["tracestate"] != in.Extensions()["tracestate"] {
					t.Errorf("trace context not kept: %v", out.Extensions())
				}
				var data struct {
					Processed json.RawMessage `json:"processed"`
					By        string          `json:"by"`
				}
				if err := json.Unmarshal(out.Data(), &data); err != nil || data.By != "example" || !cetest.SameJSON(data.Processed, in.Data()) {
					t.Errorf("result data = %s (%v)", out.Data(), err)
				}
			}
		})
	}
	sc := bufio.NewScanner(&logs)
	lines := 0
	for sc.Scan() {
		var l struct {
			ID     string `json:"id"`
			Status int    `json:"status"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.ID != "e1" || l.Status != 200 {
			t.Errorf("log line %s (%v)", sc.Text(), err)
		}
		lines++
	}
	if lines != 4 { // binary, structured, batch of two
		t.Errorf("%d log lines, want one per event (4)", lines)
	}
}

func TestNonJSONData(t *testing.T) {
	f := start(t, config{})
	in := cetest.New(t, "t", nil)
	if err := in.SetData("text/plain", []byte("plain words")); err != nil {
		t.Fatal(err)
	}
	res, err := f.client(t, pipelines.ModeBinary, 10*time.Second).Invoke(context.Background(), []cloudevents.Event{in})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"processed":"plain words","by":"example"}`; string(res.Events[0].Data()) != want {
		t.Fatalf("data = %s, want %s", res.Events[0].Data(), want)
	}
}

func TestNotACloudEvent(t *testing.T) {
	f := start(t, config{})
	resp, err := http.Post(f.url, "application/json", strings.NewReader(`{"hello":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
	for _, path := range []string{"/healthz", "/stats"} {
		resp, err := http.Get(f.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
	}
}

func TestFailRate(t *testing.T) {
	cases := []struct {
		rate     float64
		min, max int // 503s out of 200 calls
	}{
		{0, 0, 0},
		{1, 200, 200},
		{0.5, 1, 199}, // seeded: some of each
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.rate), func(t *testing.T) {
			f := start(t, config{FailRate: tc.rate, Seed: 7})
			fn := f.client(t, pipelines.ModeBinary, 10*time.Second)
			failed := 0
			for i := range 200 {
				_, err := fn.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, fmt.Sprint(i), i)})
				switch st := statusOf(err); {
				case err == nil:
				case st == http.StatusServiceUnavailable:
					failed++
				default:
					t.Fatalf("Invoke: %v", err)
				}
			}
			if failed < tc.min || failed > tc.max {
				t.Fatalf("%d of 200 calls failed, want %d..%d", failed, tc.min, tc.max)
			}
			if s := f.stats(t); s.ByStatus["503"] != int64(failed) || s.ByStatus["200"] != int64(200-failed) {
				t.Fatalf("stats %+v disagree with %d failures", s.ByStatus, failed)
			}
		})
	}
}

func TestPoisonAndLedger(t *testing.T) {
	var ledger bytes.Buffer
	f := start(t, config{PoisonPrefix: "poison-", Ledger: &ledger})
	bin := f.client(t, pipelines.ModeBinary, 10*time.Second)

	_, err := bin.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "poison-1", 1)})
	var ie *invoke.Error
	if !errors.As(err, &ie) || ie.Status != 400 || !strings.Contains(ie.Body, "poison-1") {
		t.Fatalf("poison by id: %v", err)
	}
	_, err = bin.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "ce-2", map[string]string{"id": "poison-2"})})
	if statusOf(err) != 400 {
		t.Fatalf("poison by data id: %v", err)
	}
	if _, err := bin.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "ce-3", map[string]string{"id": "order-3"})}); err != nil {
		t.Fatalf("good event: %v", err)
	}

	batch := []cloudevents.Event{cetest.New(t, "b0", 0), cetest.New(t, "poison-b1", 1), cetest.New(t, "b2", 2)}
	res, err := f.client(t, pipelines.ModeBatch, 10*time.Second).Invoke(context.Background(), batch)
	if err != nil {
		t.Fatalf("batch: %v", err)
	}
	if res.Status != http.StatusMultiStatus || len(res.Failed) != 1 || res.Failed[1] == nil || res.Failed[1].Status != 400 {
		t.Fatalf("batch Result = %+v, want 207 with index 1 failed", res)
	}
	if len(res.Events) != 2 || res.Events[0].ID() != "b0.result" || res.Events[1].ID() != "b2.result" {
		t.Fatalf("batch results = %v", res.Events)
	}
	// Only events answered 2xx, keyed by data id when present.
	if got, want := ledger.String(), "order-3\nb0\nb2\n"; got != want {
		t.Fatalf("ledger = %q, want %q", got, want)
	}
}

func TestLatencyAndCallerGoingAway(t *testing.T) {
	f := start(t, config{Latency: time.Hour})
	_, err := f.client(t, pipelines.ModeBinary, 20*time.Millisecond).Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "slow", 1)})
	var ie *invoke.Error
	if !errors.As(err, &ie) || !ie.Timeout {
		t.Fatalf("Invoke = %v, want a timeout", err)
	}
	// The handler stops waiting when the caller goes away (else the
	// server's Close in cleanup would hang and goleak would complain).
	waitFor(t, func() bool { return f.stats(t).InFlight == 0 })
	if s := f.stats(t); s.ByStatus["0"] != 1 {
		t.Fatalf("stats %+v: want one abandoned call", s.ByStatus)
	}
}

// waitFor polls cond with a generous deadline (only to avoid hanging).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCapacity(t *testing.T) {
	f := start(t, config{Capacity: 2, Latency: time.Hour, RetryAfter: 1500 * time.Millisecond, OverloadStatus: 429})
	fn := f.client(t, pipelines.ModeBinary, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			_, _ = fn.Invoke(ctx, []cloudevents.Event{cetest.New(t, fmt.Sprint("held", i), i)})
		})
	}
	waitFor(t, func() bool { return f.stats(t).InFlight == 2 })
	_, err := fn.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "third", 3)})
	var ie *invoke.Error
	if !errors.As(err, &ie) || ie.Status != 429 || ie.RetryAfter != 2*time.Second {
		t.Fatalf("third call = %#v, want 429 with Retry-After 2s (rounded up)", err)
	}
	cancel()
	wg.Wait()
	if s := f.stats(t); s.InFlightMax != 3 || s.ByStatus["429"] != 1 || s.Capacity != 2 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestCapacitySchedule(t *testing.T) {
	steps, err := parseSchedule("20s:16, 0s:32,40s:64")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	h, err := newHandler(config{Capacity: 8, Schedule: steps, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   time.Duration
		want int
	}{{0, 32}, {19 * time.Second, 32}, {20 * time.Second, 16}, {39 * time.Second, 16}, {time.Hour, 64}} {
		now = time.Unix(1000, 0).Add(c.at)
		if got := h.capacity(); got != c.want {
			t.Errorf("capacity at %v = %d, want %d", c.at, got, c.want)
		}
	}
	late, _ := parseSchedule("10s:1")
	h, _ = newHandler(config{Capacity: 8, Schedule: late, Now: func() time.Time { return now }})
	if got := h.capacity(); got != 8 {
		t.Errorf("before the first step: capacity %d, want -capacity 8", got)
	}
	for _, bad := range []string{"10s", "x:1", "1s:-2", "1s:k", "-1s:3"} {
		if _, err := parseSchedule(bad); err == nil {
			t.Errorf("parseSchedule(%q) succeeded", bad)
		}
	}
}

func TestCheckOrder(t *testing.T) {
	f := start(t, config{CheckOrder: true})
	fn := f.client(t, pipelines.ModeBinary, 10*time.Second)
	seqs := []struct {
		key any
		seq int
	}{{"a", 1}, {"a", 2}, {"a", 2}, {"a", 1}, {"a", 4}, {"b", 7}, {7, 1}, {7, 2}}
	for i, s := range seqs {
		if _, err := fn.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, fmt.Sprint(i), map[string]any{"key": s.key, "seq": s.seq})}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fn.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "other", "no key")}); err != nil {
		t.Fatal(err)
	}
	s := f.stats(t)
	want := orderStats{Checked: 8, Violations: 1, Duplicates: 1, Gaps: 1, Unparsed: 1, Keys: 3}
	if s.Order == nil || *s.Order != want {
		t.Fatalf("order stats = %+v, want %+v", s.Order, want)
	}
	if s.Calls != 9 || s.Events != 9 || s.ByStatus["200"] != 9 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestNoop(t *testing.T) {
	var ledger bytes.Buffer
	f := start(t, config{Noop: true, FailRate: 1, Ledger: &ledger})
	res, err := f.client(t, pipelines.ModeBinary, 10*time.Second).Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "n", 1)})
	if err != nil || res.Status != 200 || len(res.Events) != 0 {
		t.Fatalf("noop: %+v, %v", res, err)
	}
	if ledger.Len() != 0 {
		t.Fatalf("noop wrote the ledger")
	}
}

func TestHandlerValidation(t *testing.T) {
	for _, cfg := range []config{{FailRate: 1.5}, {FailRate: -1}, {Capacity: -1}, {OverloadStatus: 200}} {
		if _, err := newHandler(cfg); err == nil {
			t.Errorf("newHandler(%+v) succeeded", cfg)
		}
	}
}

// syncBuffer is a goroutine-safe log sink that reports the listen address.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	addr chan string
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var l struct{ Msg, Addr string }
	if json.Unmarshal(p, &l) == nil && l.Msg == "listening" {
		b.addr <- l.Addr
	}
	return b.buf.Write(p)
}

// TestRunAndSIGTERM runs the program as main would and stops it with
// SIGTERM (caught by run's signal.NotifyContext, registered before the
// "listening" line is logged).
func TestRunAndSIGTERM(t *testing.T) {
	ledger := filepath.Join(t.TempDir(), "ledger")
	out := &syncBuffer{addr: make(chan string, 1)}
	done := make(chan error, 1)
	go func() { done <- run([]string{"-addr", "127.0.0.1:0", "-ledger", ledger, "-quiet"}, out) }()
	var addr string
	select {
	case addr = <-out.addr:
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no listening line")
	}
	fn, err := invoke.NewHTTP(invoke.HTTPConfig{URL: "http://" + addr + "/", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fn.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "via-run", 1)}); err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	fn.Close()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop on SIGTERM")
	}
	b, err := os.ReadFile(ledger)
	if err != nil || string(b) != "via-run\n" {
		t.Fatalf("ledger file = %q, %v", b, err)
	}
	if err := run([]string{"-capacity-schedule", "nope"}, io.Discard); err == nil {
		t.Fatalf("bad schedule accepted")
	}
}
