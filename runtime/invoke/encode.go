package invoke

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
	"golang.org/x/net/http/httpguts"
)

// Media types of the CloudEvents JSON formats.
const (
	mediaStructured = event.ApplicationCloudEventsJSON
	mediaBatch      = event.ApplicationCloudEventsBatchJSON
)

// Trace context extension attributes (CloudEvents distributed tracing).
const (
	extTraceparent = "traceparent"
	extTracestate  = "tracestate"
)

// encodeBinary writes e in HTTP binary content mode: attributes as ce-*
// headers, data as the body, datacontenttype as Content-Type. It writes
// CloudEvents 1.0 headers directly (several times faster than going through
// sdk-go's binding.Write; the output is decoded by sdk-go in tests) and
// falls back to sdk-go for other spec versions. extra sizes the header map
// for headers the caller adds; src caches the source's string form.
func encodeBinary(e *cloudevents.Event, src *sourceCache, extra int) (http.Header, []byte, error) {
	ec, ok := e.Context.(*event.EventContextV1)
	if !ok {
		return encodeBinarySDK(e, extra)
	}
	source := src.format(&ec.Source.URL)
	if ec.ID == "" || ec.Type == "" || source == "" {
		return nil, nil, fmt.Errorf("%w: id, source and type are required (id %q)", ErrInvalidEvent, ec.ID)
	}
	n := 4 + len(ec.Extensions)
	if ec.Subject != nil {
		n++
	}
	if ec.Time != nil {
		n++
	}
	if ec.DataSchema != nil {
		n++
	}
	if ec.DataContentType != nil {
		n++
	}
	// The map is sized exactly: up to 8 entries it fits in one allocation.
	hw := headerWriter{h: make(http.Header, n+extra), vals: make([]string, 0, n)}
	hw.set("Ce-Specversion", event.CloudEventsVersionV1)
	hw.set("Ce-Id", ec.ID)
	hw.set("Ce-Source", source)
	hw.set("Ce-Type", ec.Type)
	if ec.Subject != nil {
		hw.set("Ce-Subject", *ec.Subject)
	}
	if ec.Time != nil {
		hw.set("Ce-Time", ec.Time.String())
	}
	if ec.DataSchema != nil {
		hw.set("Ce-Dataschema", ec.DataSchema.String())
	}
	if ec.DataContentType != nil {
		hw.set("Content-Type", *ec.DataContentType)
	}
	for name, v := range ec.Extensions {
		if name == "" {
			continue
		}
		s, err := types.Format(v)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: event %q extension %q: %v", ErrInvalidEvent, ec.ID, name, err)
		}
		hw.set(extensionHeader(name), s)
	}
	if hw.bad != "" {
		return nil, nil, fmt.Errorf("%w: event %q: header %s has a value not allowed in HTTP", ErrInvalidEvent, ec.ID, hw.bad)
	}
	return hw.h, e.DataEncoded, nil
}

// extensionHeader is the canonical header key of an extension (names are
// [a-z0-9]), without building it for the common ones.
func extensionHeader(name string) string {
	switch name {
	case "partitionkey":
		return "Ce-Partitionkey"
	case extTraceparent:
		return "Ce-Traceparent"
	case extTracestate:
		return "Ce-Tracestate"
	}
	return "Ce-" + strings.ToUpper(name[:1]) + name[1:]
}

// sourceCache remembers the string form of the last source URI-reference
// formatted (url.URL.String builds a new string every time; the events of
// a pipeline mostly share one source). Safe for concurrent use: a miss
// replaces the entry atomically. The zero value is ready.
type sourceCache struct {
	last atomic.Pointer[formattedSource]
}

type formattedSource struct {
	u url.URL
	s string
}

func (c *sourceCache) format(u *url.URL) string {
	if p := c.last.Load(); p != nil && p.u == *u {
		return p.s
	}
	f := &formattedSource{u: *u, s: u.String()}
	c.last.Store(f)
	return f.s
}

// headerWriter fills a header map from one backing slice (one allocation
// instead of one per header) and remembers the first invalid value.
type headerWriter struct {
	h    http.Header
	vals []string
	bad  string
}

func (w *headerWriter) set(key, value string) {
	if w.bad == "" && !httpguts.ValidHeaderFieldValue(value) {
		w.bad = key
	}
	w.vals = append(w.vals, value)
	i := len(w.vals)
	w.h[key] = w.vals[i-1 : i : i]
}

// encodeBinarySDK encodes through sdk-go (CloudEvents 0.3 events).
func encodeBinarySDK(e *cloudevents.Event, extra int) (http.Header, []byte, error) {
	if err := e.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	req := &http.Request{Header: make(http.Header, 8+extra)}
	// An event message is written in binary mode unless told otherwise.
	if err := cehttp.WriteRequest(context.Background(), binding.ToMessage(e), req); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	for k, vs := range req.Header {
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, nil, fmt.Errorf("%w: event %q: header %s has a value not allowed in HTTP", ErrInvalidEvent, e.ID(), k)
			}
		}
	}
	return req.Header, e.DataEncoded, nil
}

// encodeStructured writes e as application/cloudevents+json, appending to
// buf (which may be nil).
func encodeStructured(e *cloudevents.Event, buf []byte, extra int) (http.Header, []byte, error) {
	w := jsonEncoder{buf: slices.Grow(buf[:0], jsonSizeHint(e))}
	if err := w.encode(e); err != nil {
		return nil, nil, err
	}
	h := make(http.Header, 1+extra+2)
	h["Content-Type"] = []string{mediaStructured}
	return h, w.buf, nil
}

// encodeBatch writes in as application/cloudevents-batch+json, appending
// to buf (which may be nil), grown once up front so that it is not copied
// while it fills.
func encodeBatch(in []cloudevents.Event, buf []byte, extra int) (http.Header, []byte, error) {
	size := 2
	for i := range in {
		size += jsonSizeHint(&in[i]) + 1
	}
	w := jsonEncoder{buf: slices.Grow(buf[:0], size)}
	w.buf = append(w.buf, '[')
	for i := range in {
		if i > 0 {
			w.buf = append(w.buf, ',')
		}
		if err := w.encode(&in[i]); err != nil {
			return nil, nil, fmt.Errorf("batch index %d: %w", i, err)
		}
	}
	w.buf = append(w.buf, ']')
	h := make(http.Header, 1+extra+2)
	h["Content-Type"] = []string{mediaBatch}
	return h, w.buf, nil
}

// jsonSizeHint is about the size of e in the JSON format: its data (a
// third more when written in base64) and a typical set of attributes.
func jsonSizeHint(e *cloudevents.Event) int {
	n := 256 + len(e.DataEncoded)
	if e.DataBase64 {
		n += len(e.DataEncoded) / 3
	}
	return n
}

// trace is the W3C trace context sent with a request and given to results
// that lack their own.
type trace struct {
	parent, state string
}

func traceOf(e *cloudevents.Event) trace {
	var t trace
	if e.Context == nil {
		return t
	}
	t.parent, _ = extension(e, extTraceparent).(string)
	if t.parent != "" {
		t.state, _ = extension(e, extTracestate).(string)
	}
	return t
}

// extension is the value of the extension name (lower case), or nil. It
// reads a CloudEvents 1.0 context's map in place: Event.Extensions copies
// the whole map on every call.
func extension(e *cloudevents.Event, name string) any {
	if ec, ok := e.Context.(*event.EventContextV1); ok {
		return ec.Extensions[name]
	}
	return e.Extensions()[name]
}

// batchTrace is the trace shared by every event of a batch, or none: a
// request can only carry one traceparent header.
func batchTrace(in []cloudevents.Event) trace {
	t := traceOf(&in[0])
	for i := 1; i < len(in) && t.parent != ""; i++ {
		if traceOf(&in[i]) != t {
			return trace{}
		}
	}
	return t
}

// headers is how many HTTP headers setHeaders may add.
func (t trace) headers() int {
	switch {
	case t.parent == "":
		return 0
	case t.state == "":
		return 1
	}
	return 2
}

// setHeaders sets the W3C traceparent/tracestate HTTP headers, so that
// tracing middleware that does not know CloudEvents joins the trace.
func (t trace) setHeaders(h http.Header) {
	if t.parent == "" || !httpguts.ValidHeaderFieldValue(t.parent) || !httpguts.ValidHeaderFieldValue(t.state) {
		return
	}
	h["Traceparent"] = []string{t.parent}
	if t.state != "" {
		h["Tracestate"] = []string{t.state}
	}
}

// inherit gives the trace to result events that carry none.
func (t trace) inherit(events []cloudevents.Event) {
	if t.parent == "" {
		return
	}
	for i := range events {
		if extension(&events[i], extTraceparent) != nil {
			continue
		}
		events[i].SetExtension(extTraceparent, t.parent)
		if t.state != "" {
			events[i].SetExtension(extTracestate, t.state)
		}
	}
}
