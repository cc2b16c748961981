package invoke

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
)

// jsonEncoder writes CloudEvents in the JSON event format straight into a
// byte slice, for structured and batch mode. sdk-go's event.WriteJson
// borrows a jsoniter stream per event, formats every attribute through it
// and was 16 % of Sluice's CPU in batch mode.
//
// The output is byte for byte what event.WriteJson writes (same member
// order: specversion, id, source, type, subject, datacontenttype,
// dataschema, time, data or data_base64, extensions by name; same string
// escaping) for every CloudEvents 1.0 event whose strings are valid UTF-8
// and whose extensions are strings, booleans, integers or binary. It
// differs only where WriteJson writes invalid JSON: text data or strings
// that are not valid UTF-8 (data goes out as data_base64, strings with
// U+FFFD for each bad run, as strings.ToValidUTF8 does) and empty data
// declared as JSON (left out). Other spec versions and other extension
// types (URI, URI-reference, timestamp) go through event.WriteJson.
//
// An encoder is used by one goroutine at a time; it keeps the source it
// formatted last, since the events of a batch mostly share one.
type jsonEncoder struct {
	buf     []byte
	names   []string // scratch: extension names, sorted
	sources sourceCache
}

// encode appends e's JSON. Missing required attributes wrap ErrInvalidEvent.
func (w *jsonEncoder) encode(e *cloudevents.Event) error {
	ec, ok := e.Context.(*event.EventContextV1)
	if !ok || !w.extensionNames(ec.Extensions) {
		return w.encodeSDK(e)
	}
	src := w.sources.format(&ec.Source.URL)
	if ec.ID == "" || ec.Type == "" || src == "" {
		return fmt.Errorf("%w: id, source and type are required (id %q)", ErrInvalidEvent, ec.ID)
	}
	b := append(w.buf, `{"specversion":"1.0","id":`...)
	b = appendString(b, ec.ID)
	b = append(b, `,"source":`...)
	b = appendString(b, src)
	b = append(b, `,"type":`...)
	b = appendString(b, ec.Type)
	if ec.Subject != nil {
		b = append(b, `,"subject":`...)
		b = appendString(b, *ec.Subject)
	}
	if ec.DataContentType != nil {
		b = append(b, `,"datacontenttype":`...)
		b = appendString(b, *ec.DataContentType)
	}
	if ec.DataSchema != nil {
		b = append(b, `,"dataschema":`...)
		b = appendString(b, ec.DataSchema.String())
	}
	if ec.Time != nil {
		b = append(b, `,"time":"`...)
		b = ec.Time.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	b = appendData(b, e, ec.DataContentType)
	for _, name := range w.names {
		b = append(b, ',')
		b = appendString(b, name)
		b = append(b, ':')
		switch v := ec.Extensions[name].(type) {
		case string:
			b = appendString(b, v)
		case bool:
			b = strconv.AppendBool(b, v)
		case int32:
			b = strconv.AppendInt(b, int64(v), 10)
		case []byte:
			b = appendBase64(b, v)
		}
	}
	w.buf = append(b, '}')
	return nil
}

// encodeSDK appends e as written by sdk-go, which assumes a valid event:
// the required attributes are checked first (cheaply).
func (w *jsonEncoder) encodeSDK(e *cloudevents.Event) error {
	if e.Context == nil || e.ID() == "" || e.Type() == "" || e.Source() == "" {
		return fmt.Errorf("%w: id, source and type are required (id %q)", ErrInvalidEvent, e.ID())
	}
	buf := bytes.NewBuffer(w.buf)
	if err := event.WriteJson(e, buf); err != nil {
		return fmt.Errorf("%w: event %q: %v", ErrInvalidEvent, e.ID(), err)
	}
	w.buf = buf.Bytes()
	return nil
}

// extensionNames collects the extension names, sorted, into w.names and
// reports whether every value has a type the encoder writes itself.
func (w *jsonEncoder) extensionNames(exts map[string]any) bool {
	w.names = w.names[:0]
	for name, v := range exts {
		switch v.(type) {
		case string, bool, int32, []byte:
		default:
			return false
		}
		w.names = append(w.names, name)
	}
	slices.Sort(w.names)
	return true
}

// appendData appends the data member the way event.WriteJson chooses it:
// raw JSON when the media type is one sdk-go treats as JSON (or absent)
// and the event is not marked base64, data_base64 when it is marked (or is
// text that is not valid UTF-8, which a JSON string cannot carry), a JSON
// string otherwise.
func appendData(b []byte, e *cloudevents.Event, ct *string) []byte {
	data := e.DataEncoded
	if data == nil {
		return b
	}
	if !e.DataBase64 && isJSONMedia(ct) {
		if len(data) == 0 {
			return b // `"data":` with nothing after it is not JSON
		}
		b = append(b, `,"data":`...)
		return append(b, data...)
	}
	if e.DataBase64 || !utf8.Valid(data) {
		b = append(b, `,"data_base64":`...)
		return appendBase64(b, data)
	}
	b = append(b, `,"data":`...)
	return appendEscaped(b, data)
}

// isJSONMedia mirrors sdk-go's choice: the media type, lower-cased and
// without parameters, is one of its four JSON types, or there is none.
func isJSONMedia(ct *string) bool {
	if ct == nil {
		return true
	}
	mt, _, _ := strings.Cut(*ct, ";")
	mt = strings.TrimSpace(mt)
	for _, j := range [...]string{event.ApplicationJSON, event.TextJSON, event.ApplicationCloudEventsJSON, event.ApplicationCloudEventsBatchJSON, ""} {
		if strings.EqualFold(mt, j) {
			return true
		}
	}
	return false
}

func appendBase64(b, data []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, data)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string (see appendEscaped); each run of
// bytes that is not valid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\ufffd")
	}
	return appendEscaped(b, s)
}

// appendEscaped appends valid UTF-8 s as a JSON string with jsoniter's
// escaping as sdk-go configures it (no HTML escaping): \" \\ \n \r \t,
// \u00XX for the other control characters, everything else as is.
func appendEscaped[S string | []byte](b []byte, s S) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
