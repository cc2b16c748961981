// Package log is a sink that writes one line per event to an io.Writer
// (standard output in pipelines), for demos and debugging.
package log

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"unicode/utf8"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/sluicehq/sluice/sinks"
)

// Formats.
const (
	FormatJSON = "json" // one structured-mode CloudEvent (JSON) per line
	FormatText = "text" // "id type source subject data-preview" per line
)

// previewBytes bounds the data shown by the text format.
const previewBytes = 80

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("log sink closed")

// Sink writes events to w. Writes are serialised, so concurrent Writes never
// interleave lines. It fails only when the writer fails. The caller owns w:
// Close does not close it.
type Sink struct {
	mu     sync.Mutex
	w      io.Writer
	text   bool
	closed bool
	buf    bytes.Buffer // reused under mu
}

var _ sinks.Sink = (*Sink)(nil)

// New returns a sink writing to w in format FormatText, or FormatJSON for
// any other value (the pipeline schema rejects unknown formats earlier).
func New(w io.Writer, format string) *Sink {
	return &Sink{w: w, text: format == FormatText}
}

// Write writes one line per event with a single Write call on the writer.
func (s *Sink) Write(ctx context.Context, events []cloudevents.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.buf.Reset()
	for i := range events {
		if err := s.line(&events[i]); err != nil {
			return err
		}
	}
	if _, err := s.w.Write(s.buf.Bytes()); err != nil {
		return fmt.Errorf("log sink: %w", err)
	}
	return nil
}

func (s *Sink) line(e *cloudevents.Event) error {
	if !s.text {
		if e.Context == nil {
			return fmt.Errorf("log sink: event without context")
		}
		if err := event.WriteJson(e, &s.buf); err != nil {
			return fmt.Errorf("log sink: event %q: %w", e.ID(), err)
		}
		s.buf.WriteByte('\n')
		return nil
	}
	subject := e.Subject()
	if subject == "" {
		subject = "-"
	}
	fmt.Fprintf(&s.buf, "%s %s %s %s %s\n", field(e.ID()), field(e.Type()), field(e.Source()), field(subject), preview(e.Data()))
	return nil
}

// field keeps one attribute on one token: quoted if it has spaces or
// control characters.
func field(v string) string {
	for _, r := range v {
		if r <= ' ' || r == '"' || r == 0x7f {
			return strconv.Quote(v)
		}
	}
	if v == "" {
		return `""`
	}
	return v
}

// preview quotes the first bytes of data, cut on a rune boundary.
func preview(data []byte) string {
	if len(data) == 0 {
		return `""`
	}
	cut := len(data) > previewBytes
	if cut {
		data = data[:previewBytes]
		// Drop a rune cut in half (at most 3 bytes); other invalid
		// bytes are shown escaped by Quote.
		for i := 0; i < utf8.UTFMax-1 && len(data) > 0 && !utf8.Valid(data); i++ {
			data = data[:len(data)-1]
		}
	}
	q := strconv.Quote(string(data))
	if cut {
		q += "…"
	}
	return q
}

// Close makes later Writes fail with ErrClosed. It is idempotent and does
// not close the writer.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
