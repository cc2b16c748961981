// Package cebinding holds the helpers every CloudEvents protocol binding's
// binary and structured content modes share: setting a context attribute or
// extension from its string form, listing an event's attributes as strings
// for encoding, looking one up by name, and recognising and decoding the
// structured JSON format. The bindings (kafkace, rocketmqce, amqpce,
// runtime/queue) own header naming, prefixes and their own error types:
// errors returned here are plain, and each caller wraps them with its own
// ErrInvalidCloudEvent.
//
// The functions are pure and safe for concurrent use.
package cebinding

import (
	"fmt"
	"sort"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// StructuredContentType is the media type of the structured JSON format.
const StructuredContentType = "application/cloudevents+json"

// NewEvent returns an empty event of the given specversion, or an error if
// the version is neither 1.0 nor 0.3.
func NewEvent(specVersion string) (cloudevents.Event, error) {
	if specVersion != event.CloudEventsVersionV1 && specVersion != event.CloudEventsVersionV03 {
		return cloudevents.Event{}, fmt.Errorf("unsupported specversion %q", specVersion)
	}
	return cloudevents.NewEvent(specVersion), nil
}

// SetAttribute sets the context attribute or extension name (lower case,
// without the binding's prefix) from its string form. specversion is
// ignored: the caller chose it when creating ev. time is parsed as RFC 3339.
// datacontenttype is only honoured when hasContentType is false, since the
// bindings carry it in their own content-type field. Unknown names become
// string extensions; an error means a bad time or an invalid extension name.
func SetAttribute(ev *cloudevents.Event, name, value string, hasContentType bool) error {
	switch name {
	case "specversion":
	case "id":
		ev.SetID(value)
	case "source":
		ev.SetSource(value)
	case "type":
		ev.SetType(value)
	case "subject":
		ev.SetSubject(value)
	case "dataschema", "schemaurl":
		ev.SetDataSchema(value)
	case "datacontenttype":
		// Not part of the bindings (their content-type is), but tolerated.
		if !hasContentType {
			ev.SetDataContentType(value)
		}
	case "time":
		t, err := types.ParseTime(value)
		if err != nil {
			return fmt.Errorf("time %q: %v", value, err)
		}
		ev.SetTime(t)
	default:
		if err := ev.Context.SetExtension(name, value); err != nil {
			return fmt.Errorf("extension %q: %v", name, err)
		}
	}
	return nil
}

// Attributes calls fn with every context attribute the event has and every
// extension, as (lower-case name, canonical string) pairs, in a stable order:
// specversion, id, source, type, subject, time, dataschema, datacontenttype,
// then the extensions sorted by name. Empty optional attributes are left
// out. The error, from an extension value the CloudEvents type system cannot
// format, stops the walk.
func Attributes(ev cloudevents.Event, fn func(name, value string)) error {
	fn("specversion", ev.SpecVersion())
	fn("id", ev.ID())
	fn("source", ev.Source())
	fn("type", ev.Type())
	if v := ev.Subject(); v != "" {
		fn("subject", v)
	}
	if t := ev.Time(); !t.IsZero() {
		fn("time", types.FormatTime(t))
	}
	if v := ev.DataSchema(); v != "" {
		fn("dataschema", v)
	}
	if v := ev.DataContentType(); v != "" {
		fn("datacontenttype", v)
	}
	exts := ev.Extensions()
	names := make([]string, 0, len(exts))
	for name := range exts {
		names = append(names, name)
	}
	sort.Strings(names) // reproducible headers
	for _, name := range names {
		v, err := types.Format(exts[name])
		if err != nil {
			return fmt.Errorf("extension %s: %v", name, err)
		}
		fn(name, v)
	}
	return nil
}

// Attribute returns the canonical string form of the context attribute or
// extension named name (case-insensitive); ok is false when the event lacks
// it or its value is empty. The error, from an extension value the
// CloudEvents type system cannot format, names the extension as given.
func Attribute(ev cloudevents.Event, name string) (value string, ok bool, err error) {
	var v string
	switch strings.ToLower(name) {
	case "id":
		v = ev.ID()
	case "source":
		v = ev.Source()
	case "type":
		v = ev.Type()
	case "subject":
		v = ev.Subject()
	case "dataschema":
		v = ev.DataSchema()
	case "datacontenttype":
		v = ev.DataContentType()
	case "specversion":
		v = ev.SpecVersion()
	case "time":
		if t := ev.Time(); !t.IsZero() {
			v = types.FormatTime(t)
		}
	default:
		ext, has := ev.Extensions()[strings.ToLower(name)]
		if !has {
			return "", false, nil
		}
		s, err := types.Format(ext)
		if err != nil {
			return "", false, fmt.Errorf("extension %s: %v", name, err)
		}
		v = s
	}
	return v, v != "", nil
}

// IsStructured reports whether a content type (parameters allowed, case
// ignored) is the structured JSON format.
func IsStructured(contentType string) bool {
	ct, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(ct), StructuredContentType)
}

// DecodeStructured parses a structured-mode JSON event. It does not
// validate the event; the caller does, after its own additions.
func DecodeStructured(body []byte) (cloudevents.Event, error) {
	ev := cloudevents.NewEvent()
	if err := ev.UnmarshalJSON(body); err != nil {
		return cloudevents.Event{}, fmt.Errorf("structured JSON: %v", err)
	}
	return ev, nil
}
