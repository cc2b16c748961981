package invoke

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/pipelines"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newFunction starts handler and returns a client for it in mode; both are
// closed when the test ends.
func newFunction(t *testing.T, mode string, handler http.HandlerFunc, edit ...func(*HTTPConfig)) *HTTPFunction {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	cfg := HTTPConfig{URL: srv.URL + "/fn", Mode: mode, Timeout: 10 * time.Second}
	for _, e := range edit {
		e(&cfg)
	}
	f, err := NewHTTP(cfg)
	if err != nil {
		t.Fatalf("NewHTTP: %v", err)
	}
	t.Cleanup(f.Close) // runs before srv.Close: idle connections go first
	return f
}

// receive decodes a request with sdk-go's HTTP binding, the reference
// decoder our encoder must satisfy.
func receive(t *testing.T, r *http.Request) []cloudevents.Event {
	t.Helper()
	m := cehttp.NewMessageFromHttpRequest(r)
	if m.ReadEncoding() == binding.EncodingBatch {
		events, err := binding.ToEvents(r.Context(), m, m.BodyReader)
		if err != nil {
			t.Errorf("sdk-go cannot decode batch: %v", err)
		}
		return events
	}
	e, err := binding.ToEvent(r.Context(), m)
	if err != nil {
		t.Errorf("sdk-go cannot decode request: %v", err)
		return nil
	}
	return []cloudevents.Event{*e}
}

func resultFor(t *testing.T, in cloudevents.Event) cloudevents.Event {
	t.Helper()
	out := cetest.New(t, in.ID()+".result", map[string]any{"processed": in.ID()})
	out.SetType(in.Type() + ".result")
	return out
}

// reply writes e with sdk-go, in binary or structured mode.
func reply(t *testing.T, w http.ResponseWriter, e cloudevents.Event, structured bool) {
	t.Helper()
	ctx := context.Background()
	if structured {
		ctx = binding.WithForceStructured(ctx)
	}
	if err := cehttp.WriteResponseWriter(ctx, binding.ToMessage(&e), http.StatusOK, w); err != nil {
		t.Errorf("write response: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		mode             string
		structuredAnswer bool
		wantContentType  string
	}{
		{pipelines.ModeBinary, false, "application/json"},
		{pipelines.ModeBinary, true, "application/json"},
		{pipelines.ModeStructured, false, "application/cloudevents+json"},
		{pipelines.ModeStructured, true, "application/cloudevents+json"},
		{"", false, "application/json"}, // default mode is binary
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/structured-answer=%v", tc.mode, tc.structuredAnswer), func(t *testing.T) {
			in := cetest.Full(t, "evt-1")
			var got []cloudevents.Event
			f := newFunction(t, tc.mode, func(w http.ResponseWriter, r *http.Request) {
				if ct := r.Header.Get("Content-Type"); ct != tc.wantContentType {
					t.Errorf("Content-Type = %q, want %q", ct, tc.wantContentType)
				}
				if v := r.Header.Get("X-Api-Key"); v != "k1" {
					t.Errorf("configured header X-Api-Key = %q, want k1", v)
				}
				if v := r.Header.Get("Traceparent"); v != in.Extensions()["traceparent"] {
					t.Errorf("HTTP traceparent = %q, want the event's", v)
				}
				if v := r.Header.Get("Tracestate"); v != in.Extensions()["tracestate"] {
					t.Errorf("HTTP tracestate = %q, want the event's", v)
				}
				if tc.mode != pipelines.ModeStructured && r.Header.Get("Ce-Traceparent") == "" {
					t.Errorf("binary mode: no ce-traceparent header")
				}
				got = receive(t, r)
				reply(t, w, resultFor(t, in), tc.structuredAnswer)
			}, func(c *HTTPConfig) { c.Headers = map[string]string{"x-api-key": "k1"} })

			res, err := f.Invoke(context.Background(), []cloudevents.Event{in})
			if err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			if len(got) != 1 {
				t.Fatalf("function received %d events, want 1", len(got))
			}
			cetest.Equal(t, in, got[0])
			if res.Status != http.StatusOK || len(res.Events) != 1 || res.Failed != nil {
				t.Fatalf("Result = %+v, want status 200 and one event", res)
			}
			want := resultFor(t, in)
			// The result had no trace context: it inherits the input's.
			want.SetExtension("traceparent", in.Extensions()["traceparent"])
			want.SetExtension("tracestate", in.Extensions()["tracestate"])
			cetest.Equal(t, want, res.Events[0])
		})
	}
}

func TestBinaryEncodingEdgeCases(t *testing.T) {
	minimal := cetest.New(t, "min", nil) // no data, no content type, no extensions
	text := cetest.New(t, "txt", nil)
	if err := text.SetData("text/plain; charset=utf-8", []byte("plain ünïcode")); err != nil {
		t.Fatal(err)
	}
	binary := cetest.New(t, "bin", nil)
	if err := binary.SetData("application/octet-stream", []byte{0, 1, 2, 255}); err != nil {
		t.Fatal(err)
	}
	v03 := cetest.Full(t, "v03")
	v03.SetSpecVersion(cloudevents.VersionV03)

	for _, in := range []cloudevents.Event{minimal, text, binary, v03} {
		t.Run(in.ID(), func(t *testing.T) {
			var got []cloudevents.Event
			f := newFunction(t, pipelines.ModeBinary, func(w http.ResponseWriter, r *http.Request) {
				got = receive(t, r)
				w.WriteHeader(http.StatusNoContent)
			})
			if _, err := f.Invoke(context.Background(), []cloudevents.Event{in}); err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			if len(got) != 1 {
				t.Fatalf("function received %d events", len(got))
			}
			cetest.Equal(t, in, got[0])
		})
	}
}

func TestBatch(t *testing.T) {
	in := []cloudevents.Event{cetest.Full(t, "b0"), cetest.New(t, "b1", "x"), cetest.New(t, "b2", 7)}
	t.Run("results", func(t *testing.T) {
		var got []cloudevents.Event
		f := newFunction(t, pipelines.ModeBatch, func(w http.ResponseWriter, r *http.Request) {
			if ct := r.Header.Get("Content-Type"); ct != "application/cloudevents-batch+json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if r.Header.Get("Traceparent") != "" {
				t.Errorf("batch of different traces sent a traceparent header")
			}
			got = receive(t, r)
			out := make([]cloudevents.Event, len(got))
			for i := range got {
				out[i] = resultFor(t, got[i])
			}
			w.Header().Set("Content-Type", "application/cloudevents-batch+json")
			_ = json.NewEncoder(w).Encode(out)
		})
		res, err := f.Invoke(context.Background(), in)
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		if len(got) != len(in) {
			t.Fatalf("function received %d events, want %d", len(got), len(in))
		}
		for i := range in {
			cetest.Equal(t, in[i], got[i])
		}
		if len(res.Events) != len(in) {
			t.Fatalf("got %d results, want %d", len(res.Events), len(in))
		}
		for i := range in {
			cetest.Equal(t, resultFor(t, in[i]), res.Events[i]) // no inherited trace: inputs differ
		}
	})
	t.Run("multi-status", func(t *testing.T) {
		f := newFunction(t, pipelines.ModeBatch, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusMultiStatus)
			_, _ = io.WriteString(w, `{"results":[{"specversion":"1.0","id":"r0","source":"/s","type":"t"}],
				"failed":[{"index":1,"status":400,"reason":"bad order"},{"index":2,"status":503,"retryAfter":2},{"index":0,"status":0}]}`)
		})
		res, err := f.Invoke(context.Background(), in)
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		if res.Status != http.StatusMultiStatus || len(res.Events) != 1 || res.Events[0].ID() != "r0" {
			t.Fatalf("Result = %+v", res)
		}
		want := map[int]Error{
			0: {Status: 500},
			1: {Status: 400, Body: "bad order"},
			2: {Status: 503, RetryAfter: 2 * time.Second},
		}
		if len(res.Failed) != len(want) {
			t.Fatalf("Failed = %v, want %d entries", res.Failed, len(want))
		}
		for i, w := range want {
			if g := res.Failed[i]; g == nil || *g != w {
				t.Errorf("Failed[%d] = %+v, want %+v", i, g, w)
			}
		}
	})
	t.Run("shared trace", func(t *testing.T) {
		a, b := cetest.New(t, "a", 1), cetest.New(t, "b", 2)
		for _, e := range []*cloudevents.Event{&a, &b} {
			e.SetExtension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
		}
		f := newFunction(t, pipelines.ModeBatch, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Traceparent") == "" {
				t.Errorf("batch sharing one trace sent no traceparent header")
			}
			reply(t, w, resultFor(t, a), true)
		})
		res, err := f.Invoke(context.Background(), []cloudevents.Event{a, b})
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		if len(res.Events) != 1 || res.Events[0].Extensions()["traceparent"] != a.Extensions()["traceparent"] {
			t.Fatalf("result did not inherit the shared trace: %+v", res.Events)
		}
	})
}

func TestResultKeepsOwnTrace(t *testing.T) {
	in := cetest.Full(t, "e")
	own := "00-11111111111111111111111111111111-2222222222222222-01"
	f := newFunction(t, pipelines.ModeBinary, func(w http.ResponseWriter, r *http.Request) {
		out := resultFor(t, in)
		out.SetExtension("traceparent", own)
		reply(t, w, out, false)
	})
	res, err := f.Invoke(context.Background(), []cloudevents.Event{in})
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if got := res.Events[0].Extensions()["traceparent"]; got != own {
		t.Fatalf("traceparent = %v, want the result's own %s", got, own)
	}
	if _, ok := res.Events[0].Extensions()["tracestate"]; ok {
		t.Fatalf("tracestate of the input leaked into a result with its own trace")
	}
}

func TestSuccessWithoutResult(t *testing.T) {
	cases := []struct {
		name    string
		handler http.HandlerFunc
		status  int
	}{
		{"200 empty", func(w http.ResponseWriter, r *http.Request) {}, 200},
		{"204", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }, 204},
		{"202 plain text", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(202)
			_, _ = io.WriteString(w, "accepted")
		}, 202},
		{"200 json, not a CloudEvent", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"ok":true}`)
		}, 200},
		{"200 chunked body", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "part one ")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part two")
		}, 200},
	}
	for _, tc := range cases {
		for _, mode := range []string{pipelines.ModeBinary, pipelines.ModeBatch} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				f := newFunction(t, mode, tc.handler)
				res, err := f.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "e", 1)})
				if err != nil {
					t.Fatalf("Invoke: %v", err)
				}
				if res.Status != tc.status || len(res.Events) != 0 || res.Failed != nil {
					t.Fatalf("Result = %+v, want status %d and no events", res, tc.status)
				}
			})
		}
	}
}

func TestStatusErrors(t *testing.T) {
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	long := strings.Repeat("x", 2000)
	cases := []struct {
		name       string
		status     int
		retryAfter string
		body       string
		wantBody   string
		wantRA     func(time.Duration) bool
	}{
		{"500", 500, "", "db down\n", "db down", isZero},
		{"503 seconds", 503, "7", "", "", func(d time.Duration) bool { return d == 7*time.Second }},
		{"429 date", 429, future, "slow down", "slow down", func(d time.Duration) bool { return d > 60*time.Second && d <= 90*time.Second }},
		{"429 bad retry-after", 429, "soon", "", "", isZero},
		{"400", 400, "", `{"reason":"bad input"}`, `{"reason":"bad input"}`, isZero},
		{"501", 501, "", "", "", isZero},
		{"long body", 502, "", long, long[:maxErrorBody], isZero},
		{"redirect not followed", 302, "", "", "", isZero},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFunction(t, pipelines.ModeBinary, func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if tc.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			_, err := f.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "e", 1)})
			var ie *Error
			if !errors.As(err, &ie) {
				t.Fatalf("error = %v (%T), want *Error", err, err)
			}
			if ie.Status != tc.status || ie.Body != tc.wantBody || ie.Timeout || ie.Err != nil {
				t.Fatalf("Error = %+v, want status %d body %q", ie, tc.status, tc.wantBody)
			}
			if !tc.wantRA(ie.RetryAfter) {
				t.Fatalf("RetryAfter = %v (header %q)", ie.RetryAfter, tc.retryAfter)
			}
		})
	}
}

func isZero(d time.Duration) bool { return d == 0 }

func TestUnusableResponses(t *testing.T) {
	cases := []struct {
		name        string
		mode        string
		contentType string
		status      int
		body        string
		header      map[string]string
	}{
		{"malformed structured", pipelines.ModeBinary, "application/cloudevents+json", 200, `{"specversion":`, nil},
		{"invalid structured event", pipelines.ModeBinary, "application/cloudevents+json", 200, `{"specversion":"1.0","id":"x"}`, nil},
		{"binary result missing type", pipelines.ModeBinary, "application/json", 200, `{}`,
			map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "r", "Ce-Source": "/s"}},
		{"malformed batch", pipelines.ModeBatch, "application/cloudevents-batch+json", 200, `[{`, nil},
		{"multi-status index out of range", pipelines.ModeBatch, "application/json", 207, `{"failed":[{"index":1,"status":500}]}`, nil},
		{"multi-status duplicate index", pipelines.ModeBatch, "application/json", 207, `{"failed":[{"index":0,"status":500},{"index":0,"status":400}]}`, nil},
		{"multi-status not json", pipelines.ModeBatch, "text/plain", 207, `oops`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFunction(t, tc.mode, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.Header().Set("Content-Type", tc.contentType)
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			_, err := f.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "e", 1)})
			var ie *Error
			if !errors.As(err, &ie) || ie.Status != tc.status || !strings.HasPrefix(ie.Body, "unusable response") {
				t.Fatalf("error = %#v, want *Error{Status: %d, Body: unusable response...}", err, tc.status)
			}
		})
	}
}

func TestOversizedResponse(t *testing.T) {
	big := strings.Repeat("y", 4096)
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			f := newFunction(t, pipelines.ModeBinary, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/cloudevents+json")
				if chunked {
					_, _ = io.WriteString(w, big[:10])
					w.(http.Flusher).Flush()
					_, _ = io.WriteString(w, big[10:])
					return
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(big)))
				_, _ = io.WriteString(w, big)
			}, func(c *HTTPConfig) { c.MaxResponseBytes = 1024 })
			_, err := f.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "e", 1)})
			var ie *Error
			if !errors.As(err, &ie) || ie.Status != 200 || !strings.Contains(ie.Body, "1024-byte limit") {
				t.Fatalf("error = %#v, want *Error{Status: 200} naming the limit", err)
			}
		})
	}
}

// hang answers nothing until the client goes away or the test ends.
func hang(release <-chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}
}

func TestTimeoutAndCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	f := newFunction(t, pipelines.ModeBinary, hang(release), func(c *HTTPConfig) { c.Timeout = 50 * time.Millisecond })
	in := []cloudevents.Event{cetest.New(t, "e", 1)}

	_, err := f.Invoke(context.Background(), in)
	var ie *Error
	if !errors.As(err, &ie) || !ie.Timeout || ie.Status != 0 || ie.Err == nil {
		t.Fatalf("error = %#v, want *Error{Timeout: true}", err)
	}

	// The caller giving up is not a function timeout: its error is returned.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	f2 := newFunction(t, pipelines.ModeBinary, hang(release))
	if _, err := f2.Invoke(ctx, in); !errors.Is(err, context.Canceled) || errors.As(err, &ie) {
		t.Fatalf("error = %#v, want context.Canceled", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	f, err := NewHTTP(HTTPConfig{URL: "http://" + addr + "/", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = f.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, "e", 1)})
	var ie *Error
	if !errors.As(err, &ie) || ie.Status != 0 || ie.Timeout || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("error = %#v, want *Error wrapping ECONNREFUSED", err)
	}
}

// TestHangingFunctionNoLeak: many calls to a function that never answers
// time out, and once the client and server are closed no goroutine remains.
func TestHangingFunctionNoLeak(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(hang(release))
	f, err := NewHTTP(HTTPConfig{URL: srv.URL, Timeout: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			_, err := f.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, fmt.Sprint(i), 1)})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		var ie *Error
		if !errors.As(err, &ie) || !ie.Timeout {
			t.Errorf("error = %v, want a timeout", err)
		}
	}
	f.Close()
	close(release)
	srv.Close()
	goleak.VerifyNone(t)
}

func TestConcurrentInvocations(t *testing.T) {
	f := newFunction(t, pipelines.ModeBinary, func(w http.ResponseWriter, r *http.Request) {
		in := receive(t, r)
		if len(in) == 1 {
			reply(t, w, resultFor(t, in[0]), false)
		}
	})
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 25 {
				id := fmt.Sprintf("g%d-%d", g, i)
				res, err := f.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, id, i)})
				if err != nil {
					t.Errorf("Invoke %s: %v", id, err)
					return
				}
				if len(res.Events) != 1 || res.Events[0].ID() != id+".result" {
					t.Errorf("Invoke %s: results %v", id, res.Events)
				}
			}
		})
	}
	wg.Wait()
}

func TestInvalidInput(t *testing.T) {
	var calls int
	f := newFunction(t, pipelines.ModeBinary, func(w http.ResponseWriter, r *http.Request) { calls++ })
	newline := cetest.New(t, "nl", 1)
	newline.SetSubject("a\r\nX-Injected: 1")
	noID := cetest.New(t, "x", 1)
	noID.Context.(*event.EventContextV1).ID = "" // SetID refuses ""
	badExt := cetest.New(t, "ext", 1)
	badExt.SetExtension("note", "line1\nline2")
	for _, e := range []cloudevents.Event{newline, noID, badExt} {
		if _, err := f.Invoke(context.Background(), []cloudevents.Event{e}); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("event %q: error = %v, want ErrInvalidEvent", e.ID(), err)
		}
	}
	sf := newFunction(t, pipelines.ModeStructured, func(w http.ResponseWriter, r *http.Request) { calls++ })
	if _, err := sf.Invoke(context.Background(), []cloudevents.Event{noID}); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("structured, no id: error = %v, want ErrInvalidEvent", err)
	}
	if _, err := f.Invoke(context.Background(), nil); err == nil {
		t.Errorf("no events: want an error")
	}
	two := []cloudevents.Event{cetest.New(t, "a", 1), cetest.New(t, "b", 2)}
	if _, err := f.Invoke(context.Background(), two); err == nil {
		t.Errorf("two events in binary mode: want an error")
	}
	if calls != 0 {
		t.Errorf("invalid input reached the function %d times", calls)
	}
}

func TestNewHTTPValidation(t *testing.T) {
	bad := []HTTPConfig{
		{URL: ""},
		{URL: "ftp://host/x"},
		{URL: "http://"},
		{URL: "://nope"},
		{URL: "http://h/", Mode: "stream"},
		{URL: "http://h/", Timeout: -time.Second},
	}
	for _, cfg := range bad {
		if f, err := NewHTTP(cfg); err == nil {
			f.Close()
			t.Errorf("NewHTTP(%+v) succeeded, want an error", cfg)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-3", 0},
		{" 12 ", 12 * time.Second},
		{"1.5", 0},
		{"999999999999", 365 * 24 * time.Hour},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-30 * time.Second).Format(http.TimeFormat), 0},
		{"Thursday, 02-Jan-25 03:05:05 GMT", time.Minute}, // RFC 850 form
		{"tomorrow", 0},
	}
	for _, tc := range cases {
		if got := ParseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestConnectionReuse: bodies are read or drained, so sequential calls
// reuse keep-alive connections whatever the answer. (A new connection per
// call would mean 40; the bound leaves room for the transport's benign race
// between returning a connection and dialling a new one.)
func TestConnectionReuse(t *testing.T) {
	answers := map[string]http.HandlerFunc{
		"result": func(w http.ResponseWriter, r *http.Request) {
			reply(t, w, cetest.New(t, "r", strings.Repeat("z", 2000)), false)
		},
		"empty": func(w http.ResponseWriter, r *http.Request) {},
		"503 with body": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, strings.Repeat("busy ", 400), http.StatusServiceUnavailable)
		},
		"chunked text": func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "b")
		},
	}
	for name, handler := range answers {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			conns := 0
			srv := httptest.NewUnstartedServer(handler)
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					mu.Lock()
					conns++
					mu.Unlock()
				}
			}
			srv.Start()
			defer srv.Close()
			f, err := NewHTTP(HTTPConfig{URL: srv.URL, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for i := range 40 {
				_, err := f.Invoke(context.Background(), []cloudevents.Event{cetest.New(t, fmt.Sprint(i), i)})
				if err != nil && statusOf(err) != http.StatusServiceUnavailable {
					t.Fatalf("Invoke: %v", err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if conns > 10 {
				t.Fatalf("40 sequential calls opened %d connections", conns)
			}
		})
	}
}

func statusOf(err error) int {
	var ie *Error
	if errors.As(err, &ie) {
		return ie.Status
	}
	return -1
}
