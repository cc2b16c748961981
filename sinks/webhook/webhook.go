// Package webhook is a sink that POSTs each event, in CloudEvents
// structured mode, to an HTTP endpoint, optionally signed per the Standard
// Webhooks specification.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/sluicehq/sluice/runtime/invoke"
	"github.com/sluicehq/sluice/sinks"
)

// DefaultTimeout bounds one POST when Config.Timeout is 0.
const DefaultTimeout = 10 * time.Second

const (
	maxErrorBody = 512
	maxDrain     = 64 << 10
)

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("webhook sink closed")

// Config configures a webhook sink.
type Config struct {
	// URL receives one POST per event.
	URL string
	// Secret, when set, signs every request (Standard Webhooks): either
	// "whsec_" followed by the base64 key, or any other string used as the
	// raw key bytes.
	Secret string
	// Headers are added to every request.
	Headers map[string]string
	// Timeout bounds one POST (default DefaultTimeout).
	Timeout time.Duration
	// Client is optional; by default the sink owns a client over
	// invoke.NewTransport() that does not follow redirects.
	Client *http.Client
}

// Error is a failed POST: a non-2xx answer or, with Status 0, a transport
// failure (Timeout tells a timeout apart).
type Error struct {
	URL        string
	EventID    string
	Status     int           // HTTP status; 0 for transport failures
	RetryAfter time.Duration // parsed Retry-After; 0 if absent
	Body       string        // first bytes of the response body
	Timeout    bool
	Err        error // transport error, if any
}

func (e *Error) Error() string {
	switch {
	case e.Status == 0:
		return fmt.Sprintf("webhook %s: event %q: %v", e.URL, e.EventID, e.Err)
	case e.Body != "":
		return fmt.Sprintf("webhook %s: event %q: answered %d %s: %s", e.URL, e.EventID, e.Status, http.StatusText(e.Status), e.Body)
	default:
		return fmt.Sprintf("webhook %s: event %q: answered %d %s", e.URL, e.EventID, e.Status, http.StatusText(e.Status))
	}
}

func (e *Error) Unwrap() error { return e.Err }

// Sink POSTs events to one URL. Write may be called concurrently; Close is
// called once all Writes returned, and is idempotent.
type Sink struct {
	url     string
	key     []byte // nil: unsigned
	headers http.Header
	timeout time.Duration
	client  *http.Client
	owned   *http.Transport // non-nil when the client is ours
	closed  atomic.Bool
	now     func() time.Time // signing clock; replaced in tests
}

var _ sinks.Sink = (*Sink)(nil)

// New validates cfg and returns a sink.
func New(cfg Config) (*Sink, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("webhook url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook url %q: want http(s)://host[:port]/path", cfg.URL)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("webhook timeout %v: must not be negative", cfg.Timeout)
	}
	s := &Sink{
		url:     cfg.URL,
		headers: make(http.Header, len(cfg.Headers)+1),
		timeout: cfg.Timeout,
		client:  cfg.Client,
		now:     time.Now,
	}
	if cfg.Secret != "" {
		if s.key, err = parseSecret(cfg.Secret); err != nil {
			return nil, err
		}
	}
	for k, v := range cfg.Headers {
		s.headers.Set(k, v)
	}
	s.headers.Set("User-Agent", "sluice")
	if s.timeout == 0 {
		s.timeout = DefaultTimeout
	}
	if s.client == nil {
		s.owned = invoke.NewTransport()
		s.client = &http.Client{
			Transport: s.owned,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return s, nil
}

// Write POSTs the events one by one, in order, and returns nil only when
// every POST got a 2xx answer. It stops at the first failure, an *Error
// (or ctx's error); the caller retries the whole slice.
func (s *Sink) Write(ctx context.Context, events []cloudevents.Event) error {
	if s.closed.Load() {
		return ErrClosed
	}
	for i := range events {
		if err := s.post(ctx, &events[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Sink) post(ctx context.Context, e *cloudevents.Event) error {
	if e.Context == nil {
		return fmt.Errorf("webhook %s: event without context", s.url)
	}
	var body bytes.Buffer
	if err := event.WriteJson(e, &body); err != nil {
		return fmt.Errorf("webhook %s: encode event %q: %w", s.url, e.ID(), err)
	}
	callCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(callCtx, http.MethodPost, s.url, bytes.NewReader(body.Bytes()))
	if err != nil {
		return fmt.Errorf("webhook %s: %w", s.url, err)
	}
	for k, v := range s.headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", event.ApplicationCloudEventsJSON)
	if tp, ok := e.Extensions()["traceparent"].(string); ok {
		req.Header.Set("Traceparent", tp)
		if ts, ok := e.Extensions()["tracestate"].(string); ok {
			req.Header.Set("Tracestate", ts)
		}
	}
	if s.key != nil {
		ts := s.now().Unix()
		req.Header.Set(HeaderID, e.ID())
		req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(HeaderSignature, sign(s.key, e.ID(), ts, body.Bytes()))
	}

	resp, err := s.client.Do(req)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		var ne net.Error
		timeout := errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
		return &Error{URL: s.url, EventID: e.ID(), Err: err, Timeout: timeout}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
		return nil
	}
	buf := make([]byte, maxErrorBody)
	n, _ := io.ReadFull(resp.Body, buf)
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	werr := &Error{
		URL:        s.url,
		EventID:    e.ID(),
		Status:     resp.StatusCode,
		RetryAfter: invoke.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		Body:       strings.TrimSpace(strings.ToValidUTF8(string(buf[:n]), "\uFFFD")),
	}
	if permanentStatus(resp.StatusCode) {
		return sinks.Rejected(werr)
	}
	return werr
}

// permanentStatus reports answers that the same request would get again:
// 4xx other than 408 (timeout), 425 (too early) and 429 (throttled).
func permanentStatus(code int) bool {
	return code >= 400 && code < 500 && code != 408 && code != 425 && code != 429
}

// Close makes later Writes fail and releases idle connections. Idempotent.
func (s *Sink) Close(context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.owned != nil {
		s.owned.CloseIdleConnections()
	}
	return nil
}
