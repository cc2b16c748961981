package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/sinks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSignatureVector checks sign against the Standard Webhooks test vector.
func TestSignatureVector(t *testing.T) {
	key, err := parseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("sign = %s, want %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	body := []byte(`{"test": 2432232314}`)
	ts := time.Unix(1614265330, 0)
	good := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	hdr := func(id, ts, sig string) http.Header {
		h := http.Header{}
		for k, v := range map[string]string{"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": sig} {
			if v != "" {
				h.Set(k, v)
			}
		}
		return h
	}
	const id, tss = "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330"
	cases := []struct {
		name   string
		secret string
		h      http.Header
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", secret, hdr(id, tss, good), body, ts, nil},
		{"valid among several", secret, hdr(id, tss, "v1,bm9wZQ== "+good+" v2,xyz"), body, ts, nil},
		{"within tolerance", secret, hdr(id, tss, good), body, ts.Add(4 * time.Minute), nil},
		{"tampered body", secret, hdr(id, tss, good), []byte(`{"test": 1}`), ts, ErrSignature},
		{"other id", secret, hdr("msg_other", tss, good), body, ts, ErrSignature},
		{"wrong secret", "whsec_" + "c2VjcmV0", hdr(id, tss, good), body, ts, ErrSignature},
		{"too old", secret, hdr(id, tss, good), body, ts.Add(6 * time.Minute), ErrTimestamp},
		{"too new", secret, hdr(id, tss, good), body, ts.Add(-6 * time.Minute), ErrTimestamp},
		{"bad timestamp", secret, hdr(id, "yesterday", good), body, ts, ErrTimestamp},
		{"no signature", secret, hdr(id, tss, ""), body, ts, ErrMissingHeaders},
		{"no id", secret, hdr("", tss, good), body, ts, ErrMissingHeaders},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := verify(tc.secret, tc.h, tc.body, tc.now); !errors.Is(err, tc.want) {
				t.Fatalf("verify = %v, want %v", err, tc.want)
			}
		})
	}
	if err := Verify("whsec_!!!", hdr(id, tss, good), body); err == nil {
		t.Fatalf("Verify accepted a secret that is not base64")
	}
}

type received struct {
	header http.Header
	body   []byte
}

// receiver records requests and answers status.
func receiver(t *testing.T, status int) (*httptest.Server, func() []received) {
	t.Helper()
	var mu sync.Mutex
	var got []received
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
		}
		mu.Lock()
		got = append(got, received{r.Header.Clone(), b})
		mu.Unlock()
		w.WriteHeader(status)
		if status >= 300 {
			_, _ = io.WriteString(w, "receiver says no")
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []received {
		mu.Lock()
		defer mu.Unlock()
		return append([]received(nil), got...)
	}
}

func newSink(t *testing.T, cfg Config) *Sink {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func TestSignedDelivery(t *testing.T) {
	for _, secret := range []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "a raw shared secret"} {
		t.Run(secret, func(t *testing.T) {
			srv, got := receiver(t, http.StatusNoContent)
			s := newSink(t, Config{URL: srv.URL + "/hook", Secret: secret, Headers: map[string]string{"authorization": "Bearer t"}})
			in := []cloudevents.Event{cetest.Full(t, "e1"), cetest.New(t, "e2", "two")}
			if err := s.Write(context.Background(), in); err != nil {
				t.Fatalf("Write: %v", err)
			}
			reqs := got()
			if len(reqs) != len(in) {
				t.Fatalf("receiver got %d requests, want %d", len(reqs), len(in))
			}
			for i, r := range reqs {
				if err := Verify(secret, r.header, r.body); err != nil {
					t.Errorf("request %d: Verify: %v", i, err)
				}
				if r.header.Get("webhook-id") != in[i].ID() {
					t.Errorf("webhook-id = %q, want the event id %q", r.header.Get("webhook-id"), in[i].ID())
				}
				if ct := r.header.Get("Content-Type"); ct != "application/cloudevents+json" {
					t.Errorf("Content-Type = %q", ct)
				}
				if r.header.Get("Authorization") != "Bearer t" {
					t.Errorf("configured header missing")
				}
				var e cloudevents.Event
				if err := json.Unmarshal(r.body, &e); err != nil {
					t.Fatalf("body is not a structured CloudEvent: %v", err)
				}
				cetest.Equal(t, in[i], e)
			}
			if tp := reqs[0].header.Get("Traceparent"); tp != in[0].Extensions()["traceparent"] {
				t.Errorf("traceparent header = %q", tp)
			}
		})
	}
}

func TestUnsigned(t *testing.T) {
	srv, got := receiver(t, http.StatusOK)
	s := newSink(t, Config{URL: srv.URL})
	if err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "e", 1)}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if h := got()[0].header; h.Get("webhook-signature") != "" || h.Get("webhook-id") != "" {
		t.Fatalf("unsigned sink sent signature headers: %v", h)
	}
}

func TestSignatureTimestamp(t *testing.T) {
	srv, got := receiver(t, http.StatusOK)
	s := newSink(t, Config{URL: srv.URL, Secret: "k"})
	s.now = func() time.Time { return time.Unix(1700000000, 0) }
	if err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "e", 1)}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	r := got()[0]
	if ts := r.header.Get("webhook-timestamp"); ts != "1700000000" {
		t.Fatalf("webhook-timestamp = %q", ts)
	}
	if err := verify("k", r.header, r.body, time.Unix(1700000000, 0)); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if err := Verify("k", r.header, r.body); !errors.Is(err, ErrTimestamp) {
		t.Fatalf("a 2023 timestamp verified today: %v", err)
	}
}

func TestFailures(t *testing.T) {
	t.Run("non-2xx stops the write", func(t *testing.T) {
		for _, status := range []int{400, 404, 500, 503, 302} {
			srv, got := receiver(t, status)
			s := newSink(t, Config{URL: srv.URL})
			err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "a", 1), cetest.New(t, "b", 2)})
			var we *Error
			if !errors.As(err, &we) || we.Status != status || we.EventID != "a" || we.Body != "receiver says no" {
				t.Fatalf("status %d: Write = %#v", status, err)
			}
			if n := len(got()); n != 1 {
				t.Fatalf("status %d: %d requests sent, want 1 (stop at the first failure)", status, n)
			}
			if rejected, want := errors.Is(err, sinks.ErrRejected), status == 400 || status == 404; rejected != want {
				t.Fatalf("status %d: errors.Is(err, ErrRejected) = %v, want %v", status, rejected, want)
			}
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		s := newSink(t, Config{URL: "http://" + addr + "/", Timeout: 5 * time.Second})
		err = s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "a", 1)})
		var we *Error
		if !errors.As(err, &we) || we.Status != 0 || we.Err == nil {
			t.Fatalf("Write = %#v, want a transport *Error", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}))
		defer srv.Close()
		defer close(release)
		s := newSink(t, Config{URL: srv.URL, Timeout: 50 * time.Millisecond})
		err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "a", 1)})
		var we *Error
		if !errors.As(err, &we) || !we.Timeout {
			t.Fatalf("Write = %#v, want a timeout *Error", err)
		}
		_ = s.Close(context.Background())
	})
}

func TestConcurrentWrites(t *testing.T) {
	srv, got := receiver(t, http.StatusAccepted)
	s := newSink(t, Config{URL: srv.URL, Secret: "whsec_c2VjcmV0LWtleQ=="})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				if err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, fmt.Sprintf("%d-%d", g, i), i)}); err != nil {
					t.Errorf("Write: %v", err)
				}
			}
		})
	}
	wg.Wait()
	ids := map[string]bool{}
	for _, r := range got() {
		if err := Verify("whsec_c2VjcmV0LWtleQ==", r.header, r.body); err != nil {
			t.Errorf("Verify: %v", err)
		}
		ids[r.header.Get("webhook-id")] = true
	}
	if len(ids) != 160 {
		t.Fatalf("got %d distinct deliveries, want 160", len(ids))
	}
}

func TestCloseIdempotent(t *testing.T) {
	srv, got := receiver(t, http.StatusOK)
	s, err := New(Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := s.Close(context.Background()); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "a", 1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close = %v, want ErrClosed", err)
	}
	if len(got()) != 0 {
		t.Fatalf("closed sink delivered")
	}
}

func TestNewValidation(t *testing.T) {
	for _, cfg := range []Config{
		{URL: ""},
		{URL: "mailto:x@y"},
		{URL: "http://h/", Secret: "whsec_***"},
		{URL: "http://h/", Secret: "whsec_"},
		{URL: "http://h/", Timeout: -1},
	} {
		if s, err := New(cfg); err == nil {
			_ = s.Close(context.Background())
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
}
