package invoke

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/pipelines"
)

// DefaultMaxResponseBytes bounds a 2xx response body when
// HTTPConfig.MaxResponseBytes is 0.
const DefaultMaxResponseBytes = 10 << 20

// maxErrorBody is how much of a non-2xx body is kept in Error.Body.
const maxErrorBody = 512

// maxDrain is how much of an unread response body is discarded so that the
// connection can be reused; beyond it the connection is dropped instead.
const maxDrain = 64 << 10

// ErrInvalidEvent is wrapped by Invoke errors for input events that cannot
// be encoded for HTTP (no id, a header value with control characters, an
// unsupported spec version). It is permanent: retrying sends the same bytes.
var ErrInvalidEvent = errors.New("invalid event")

// HTTPConfig configures an HTTP CloudEvents function client.
type HTTPConfig struct {
	// URL is the function endpoint (http or https).
	URL string
	// Mode is pipelines.ModeBinary (default), ModeStructured or ModeBatch.
	Mode string
	// Timeout bounds one call, response body included. 0 means no bound
	// beyond the caller's context.
	Timeout time.Duration
	// Headers are added to every request. CloudEvents headers (ce-*,
	// Content-Type, traceparent) set by the encoder take precedence.
	Headers map[string]string
	// Client is optional. By default the HTTPFunction owns a client over
	// NewTransport() that does not follow redirects (a 301/302/303 would
	// turn the POST into a GET); a redirect is then an *Error with its 3xx
	// status.
	Client *http.Client
	// MaxResponseBytes bounds a 2xx response body (default 10 MiB).
	MaxResponseBytes int64
}

// HTTPFunction calls one CloudEvents function over HTTP. It is safe for
// concurrent use; Close releases its idle connections.
type HTTPFunction struct {
	url       *url.URL // parsed once; shared read-only by every request
	mode      string
	timeout   time.Duration
	headers   http.Header // canonical keys, copied into every request
	client    *http.Client
	owned     *http.Transport // non-nil when the client is ours
	maxBody   int64
	userAgent []string
	sources   sourceCache
	// bufs recycles the JSON bodies of structured and batch calls (see
	// pooledBody); binary bodies are the events' own data.
	bufs sync.Pool
}

var _ Function = (*HTTPFunction)(nil)

// NewHTTP validates cfg and returns a client for the function at cfg.URL.
func NewHTTP(cfg HTTPConfig) (*HTTPFunction, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("function url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("function url %q: want http(s)://host[:port]/path", cfg.URL)
	}
	mode := cfg.Mode
	switch mode {
	case "":
		mode = pipelines.ModeBinary
	case pipelines.ModeBinary, pipelines.ModeStructured, pipelines.ModeBatch:
	default:
		return nil, fmt.Errorf("function mode %q: want %s, %s or %s", cfg.Mode,
			pipelines.ModeBinary, pipelines.ModeStructured, pipelines.ModeBatch)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("function timeout %v: must not be negative", cfg.Timeout)
	}
	f := &HTTPFunction{
		url:       u,
		mode:      mode,
		timeout:   cfg.Timeout,
		headers:   make(http.Header, len(cfg.Headers)),
		client:    cfg.Client,
		maxBody:   cfg.MaxResponseBytes,
		userAgent: []string{"sluice"},
	}
	for k, v := range cfg.Headers {
		f.headers.Set(k, v)
	}
	if f.maxBody <= 0 {
		f.maxBody = DefaultMaxResponseBytes
	}
	if f.client == nil {
		f.owned = NewTransport()
		f.client = &http.Client{
			Transport: f.owned,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return f, nil
}

// Close releases idle connections of the transport this function owns (not
// of a caller-supplied Client). Calls may continue afterwards; they open new
// connections.
func (f *HTTPFunction) Close() {
	if f.owned != nil {
		f.owned.CloseIdleConnections()
	}
}

// Invoke sends in to the function: exactly one event in binary and
// structured mode, one or more in batch mode. See Function for the error
// contract; encoding failures wrap ErrInvalidEvent.
func (f *HTTPFunction) Invoke(ctx context.Context, in []cloudevents.Event) (Result, error) {
	if len(in) == 0 {
		return Result{}, errors.New("invoke: no events")
	}
	if f.mode != pipelines.ModeBatch && len(in) != 1 {
		return Result{}, fmt.Errorf("invoke: %s mode takes exactly one event, got %d", f.mode, len(in))
	}
	callCtx := ctx
	if f.timeout > 0 {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	req, tr, reqBody, err := f.newRequest(callCtx, in)
	if err != nil {
		return Result{}, err
	}
	if reqBody != nil {
		// No GetBody after Do returns: the transport's readers are the
		// only other holders left.
		defer reqBody.release()
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return Result{}, transportError(ctx, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return Result{}, statusError(resp)
	}
	body, err := readBody(ctx, resp, f.maxBody)
	if err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		// The caller gave up while we read: report that, not a result it
		// no longer waits for.
		return Result{}, err
	}
	res, err := decodeResponse(resp.StatusCode, resp.Header, body, len(in), f.mode == pipelines.ModeBatch)
	if err != nil {
		return Result{}, err
	}
	tr.inherit(res.Events)
	return res, nil
}

// newRequest builds the POST without re-parsing the URL on every call.
// body is non-nil when the request body is a pooled buffer: the caller
// releases it once Do has returned.
func (f *HTTPFunction) newRequest(ctx context.Context, in []cloudevents.Event) (*http.Request, trace, *pooledBody, error) {
	var (
		h    http.Header
		data []byte
		tr   trace
		err  error
	)
	switch f.mode {
	case pipelines.ModeBinary:
		tr = traceOf(&in[0])
		h, data, err = encodeBinary(&in[0], &f.sources, len(f.headers)+1+tr.headers())
	case pipelines.ModeStructured:
		h, data, err = encodeStructured(&in[0], f.buffer(), len(f.headers)+1)
		tr = traceOf(&in[0])
	default:
		h, data, err = encodeBatch(in, f.buffer(), len(f.headers)+1)
		tr = batchTrace(in)
	}
	if err != nil {
		return nil, trace{}, nil, err
	}
	for k, v := range f.headers {
		if _, set := h[k]; !set {
			h[k] = v
		}
	}
	if _, set := h["User-Agent"]; !set {
		h["User-Agent"] = f.userAgent
	}
	tr.setHeaders(h)

	req := &http.Request{
		Method:     http.MethodPost,
		URL:        f.url,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       f.url.Host,
	}
	var body *pooledBody
	if f.mode == pipelines.ModeBinary || len(data) == 0 {
		setBody(req, data)
	} else {
		body = &pooledBody{buf: data, put: f.recycle}
		body.refs.Store(1) // the caller's
		req.ContentLength = int64(len(data))
		req.Body = body.open()
		req.GetBody = func() (io.ReadCloser, error) { return body.open(), nil }
	}
	return req.WithContext(ctx), tr, body, nil
}

// maxPooledBody bounds the buffers kept for reuse, so that one huge batch
// does not pin its memory.
const maxPooledBody = 4 << 20

// buffer returns a recycled body buffer, or nil.
func (f *HTTPFunction) buffer() []byte {
	if b, ok := f.bufs.Get().(*[]byte); ok {
		return *b
	}
	return nil
}

func (f *HTTPFunction) recycle(b []byte) {
	if cap(b) <= maxPooledBody {
		b = b[:0]
		f.bufs.Put(&b)
	}
}

// pooledBody is a request body in a recycled buffer. The buffer goes back
// to the pool only when Invoke (which holds the first reference) and every
// reader handed to the transport (Body, and each GetBody) have been
// released: the transport may close, or even keep reading, a body after
// Do returns.
type pooledBody struct {
	buf  []byte
	refs atomic.Int32
	put  func([]byte)
}

func (b *pooledBody) open() io.ReadCloser {
	b.refs.Add(1)
	return &pooledReader{r: bytes.NewReader(b.buf), body: b}
}

func (b *pooledBody) release() {
	if b.refs.Add(-1) == 0 {
		b.put(b.buf)
	}
}

// pooledReader reads a pooledBody. Close may come from another goroutine
// than Read (the transport closes bodies on its own schedule): the mutex
// makes sure no Read is still copying from the buffer when it is released.
type pooledReader struct {
	mu     sync.Mutex
	r      *bytes.Reader
	body   *pooledBody
	closed bool
}

func (r *pooledReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errBodyClosed
	}
	return r.r.Read(p)
}

func (r *pooledReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		r.body.release()
	}
	return nil
}

// errBodyClosed is what a request body read after its Close returns.
var errBodyClosed = errors.New("invoke: request body read after close")

func setBody(req *http.Request, body []byte) {
	if len(body) == 0 {
		req.Body = http.NoBody
		req.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
		return
	}
	req.ContentLength = int64(len(body))
	req.Body = io.NopCloser(bytes.NewReader(body))
	// GetBody lets the transport replay the request on a reused
	// connection that turned out to be closed before anything was written.
	req.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(body)), nil
	}
}

// transportError maps a client.Do or body read failure. The caller's
// context wins: if it is done, its error is returned as is.
func transportError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	var ne net.Error
	timeout := errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
	return &Error{Timeout: timeout, Err: err}
}

// statusError reads a bounded snippet of a non-2xx body and drains a little
// more so that the connection can be reused.
func statusError(resp *http.Response) *Error {
	buf := make([]byte, maxErrorBody)
	n, _ := io.ReadFull(resp.Body, buf)
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	return &Error{
		Status:     resp.StatusCode,
		RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		Body:       snippet(buf[:n]),
	}
}

// snippet makes a body fragment safe to log: valid UTF-8, trimmed.
func snippet(b []byte) string {
	if len(b) > maxErrorBody {
		b = b[:maxErrorBody]
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(b), "\uFFFD"))
}

// readBody reads a 2xx body of at most limit bytes. A larger body is an
// *Error carrying the response status (read errors are transport errors,
// judged against the caller's ctx): the function answered, but Sluice
// refuses the answer (permanent: a retry produces the same body).
func readBody(ctx context.Context, resp *http.Response, limit int64) ([]byte, error) {
	tooLarge := func() error {
		return &Error{Status: resp.StatusCode, Body: fmt.Sprintf(
			"response body exceeds the %d-byte limit (MaxResponseBytes)", limit)}
	}
	switch {
	case resp.ContentLength == 0:
		return nil, nil
	case resp.ContentLength > limit:
		return nil, tooLarge()
	case resp.ContentLength > 0:
		buf := make([]byte, resp.ContentLength)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			return nil, transportError(ctx, err)
		}
		return buf, nil
	}
	buf, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, transportError(ctx, err)
	}
	if int64(len(buf)) > limit {
		return nil, tooLarge()
	}
	return buf, nil
}
