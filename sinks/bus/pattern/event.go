package pattern

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// The JSON view of an event that patterns apply to:
//
//   - every context attribute that is set (specversion, id, source, type,
//     subject, time, datacontenttype, dataschema) and every extension, at the
//     top level; integer extensions are numbers, boolean extensions are
//     booleans, everything else is its canonical CloudEvents string (time as
//     RFC 3339 in UTC);
//   - the data under "data", only when it is JSON: datacontenttype is
//     application/json, text/json or */*+json (or absent, and the data
//     parses as JSON). Data that is not JSON is absent from the view. An
//     extension named "data" is ignored.

// The context attributes, by index: coreAttrs names, coreValue reads.
const coreAttrs = 8

func coreName(i int) string {
	switch i {
	case 0:
		return "specversion"
	case 1:
		return "id"
	case 2:
		return "source"
	case 3:
		return "type"
	case 4:
		return "subject"
	case 5:
		return "time"
	case 6:
		return "datacontenttype"
	}
	return "dataschema"
}

// coreValue is context attribute i of e as a string, "" when unset.
func coreValue(e *cloudevents.Event, i int) string {
	if ec, ok := e.Context.(*event.EventContextV1); ok {
		return coreValueV1(ec, i)
	}
	switch i {
	case 0:
		return e.SpecVersion()
	case 1:
		return e.ID()
	case 2:
		return e.Source()
	case 3:
		return e.Type()
	case 4:
		return e.Subject()
	case 5:
		if t := e.Time(); !t.IsZero() {
			return types.FormatTime(t)
		}
		return ""
	case 6:
		return e.DataContentType()
	}
	return e.DataSchema()
}

// coreValueV1 is coreValue for the usual 1.0 context, read from its fields
// directly: its getters have value receivers, so each call through the
// EventContext interface copies the whole context. It returns what the
// getters return.
func coreValueV1(ec *event.EventContextV1, i int) string {
	deref := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	switch i {
	case 0:
		return event.CloudEventsVersionV1
	case 1:
		return ec.ID
	case 2:
		return sourceString(&ec.Source.URL)
	case 3:
		return ec.Type
	case 4:
		return deref(ec.Subject)
	case 5:
		if ec.Time != nil && !ec.Time.IsZero() {
			return types.FormatTime(ec.Time.Time)
		}
		return ""
	case 6:
		return deref(ec.DataContentType)
	}
	if ec.DataSchema != nil {
		return ec.DataSchema.String()
	}
	return ""
}

// sourceString is u.String() (what the SDK's Source getter returns),
// without building a new string for the usual source, a bare absolute
// path: String() would then return exactly u.EscapedPath(), which does not
// allocate unless the path needs escaping.
func sourceString(u *url.URL) string {
	if u.Scheme == "" && u.Opaque == "" && u.User == nil && u.Host == "" && !u.ForceQuery &&
		u.RawQuery == "" && u.Fragment == "" && strings.HasPrefix(u.Path, "/") {
		return u.EscapedPath()
	}
	return u.String()
}

// extValue converts an extension value: integers are numbers, booleans
// booleans, everything else its canonical string.
func extValue(v any) (value, bool) {
	switch x := v.(type) {
	case int32:
		return numberValue(float64(x)), true
	case bool:
		return boolValue(x), true
	}
	s, err := types.Format(v)
	return stringValue(s), err == nil // the SDK refuses to set anything else
}

// attributes calls fn with every context attribute and extension of e,
// converted to its view value.
func attributes(e *cloudevents.Event, fn func(name string, v value)) {
	if e.Context == nil {
		return
	}
	for i := range coreAttrs {
		if v := coreValue(e, i); v != "" {
			fn(coreName(i), stringValue(v))
		}
	}
	for name, v := range extensions(e) {
		if name == "data" {
			continue
		}
		if val, ok := extValue(v); ok {
			fn(name, val)
		}
	}
}

// extensions returns e's extension map without the copy Event.Extensions
// makes on every call; it must not be modified.
func extensions(e *cloudevents.Event) map[string]any {
	switch ec := e.Context.(type) {
	case *event.EventContextV1:
		return ec.Extensions
	case *event.EventContextV03:
		return ec.Extensions
	}
	return e.Extensions()
}

// dataMode says how to treat the event's data.
type dataMode uint8

const (
	dataNone     dataMode = iota // no data, or not JSON: absent from the view
	dataMaybe                    // no content type: JSON if it parses
	dataDeclared                 // JSON content type: invalid data is an error
)

func dataModeOf(e *cloudevents.Event) dataMode {
	if len(e.Data()) == 0 {
		return dataNone
	}
	ct := coreValue(e, 6) // datacontenttype
	if ct == "application/json" {
		return dataDeclared
	}
	if ct == "" {
		return dataMaybe
	}
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.ToLower(strings.TrimSpace(ct))
	if ct == "application/json" || ct == "text/json" || strings.HasSuffix(ct, "+json") {
		return dataDeclared
	}
	return dataNone
}

// EventObject returns the JSON view of e that patterns apply to (see the
// package documentation), decoded with encoding/json: strings, float64
// numbers, bools, nil, []any and map[string]any. It is the input of
// ReferenceMatchObject; data that is not valid JSON is left out.
func EventObject(e *cloudevents.Event) map[string]any {
	obj := map[string]any{}
	attributes(e, func(name string, v value) { obj[name] = v.any() })
	if dataModeOf(e) != dataNone {
		if v, err := decodeJSON(e.Data()); err == nil {
			obj["data"] = numbersToFloat(v)
		}
	}
	return obj
}

// numbersToFloat replaces json.Number with float64. Out-of-range numbers
// become ±Inf (what strconv.ParseFloat returns), as in the event scanner.
func numbersToFloat(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, _ := strconv.ParseFloat(string(x), 64)
		if f == 0 {
			f = 0 // -0 is 0
		}
		return f
	case []any:
		for i := range x {
			x[i] = numbersToFloat(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = numbersToFloat(x[k])
		}
	}
	return v
}

// hop is one array traversal on the way to a leaf: the array (numbered in
// document order) and the element index.
type hop struct{ arr, idx int32 }

// flatField is one leaf of a flattened event. trail lists the array hops
// down to the innermost object containing the leaf: two leaves can be used
// by one pattern only if they agree on every array they share (they come
// from the same array elements). Hops that lead straight to the leaf (an
// array of scalars) are left out, since no other path goes through them.
type flatField struct {
	path  string // encoded path (Flatten); empty in the matcher's own scan
	pid   int32  // path id (matcher scan)
	val   value
	trail []hop
}

// Flattened is an event reduced to its leaf values, each with its path,
// sorted by path (document order within a path). Build it with Flatten; it
// is immutable and may be matched by many Matchers concurrently.
type Flattened struct {
	fields []flatField
}

// Field is one leaf of a Flattened event. Path joins the object keys with
// "." (a "." or "\" inside a key is escaped with "\"); array indexes are not
// part of paths. Value is a string, float64, bool or nil.
type Field struct {
	Path  string
	Value any
}

// Len is the number of leaf values.
func (f Flattened) Len() int { return len(f.fields) }

// Fields returns a copy of the leaf values, in order.
func (f Flattened) Fields() []Field {
	out := make([]Field, len(f.fields))
	for i, ff := range f.fields {
		out[i] = Field{Path: ff.path, Value: ff.val.any()}
	}
	return out
}

// Flatten reduces e to its leaf values (see EventObject for what the event
// view holds). When e declares JSON data that does not parse, it returns the
// attributes without data and an error wrapping ErrInvalidData — Match
// treats such an event the same way.
func Flatten(e *cloudevents.Event) (Flattened, error) {
	var out []flatField
	attributes(e, func(name string, v value) {
		out = append(out, flatField{path: encodePath([]string{name}), val: v})
	})
	var err error
	if mode := dataModeOf(e); mode != dataNone {
		sc := scanner{s: string(e.Data()), full: true, path: []byte("data")}
		if serr := sc.scan(nil); serr != nil {
			if mode == dataDeclared {
				err = fmt.Errorf("%w: %v", ErrInvalidData, serr)
			}
		} else {
			out = append(out, sc.out...)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].path < out[j].path })
	return Flattened{fields: out}, err
}

// encodePath joins path segments with ".", escaping "." and "\" in a
// segment so that distinct paths never share an encoding.
func encodePath(segs []string) string {
	var b []byte
	for i, s := range segs {
		if i > 0 {
			b = append(b, '.')
		}
		b = appendSegment(b, s)
	}
	return string(b)
}

func appendSegment(b []byte, s string) []byte {
	if !strings.ContainsAny(s, `.\`) {
		return append(b, s...)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '.' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return b
}
