// Package kafkace converts between Kafka records and CloudEvents following the
// CloudEvents Kafka protocol binding 1.0 (binary and structured content
// modes). It is shared by the Kafka source (connectors/kafka), the Kafka sink
// (sinks/kafka) and tests that read results back.
//
// The functions are pure and safe for concurrent use.
package kafkace

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/IBM/sarama"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// Header names and media types of the Kafka protocol binding.
const (
	// HeaderPrefix prefixes every context attribute header in binary mode.
	HeaderPrefix = "ce_"
	// ContentTypeHeader carries datacontenttype (binary mode) or the
	// structured event format.
	ContentTypeHeader = "content-type"
	// StructuredContentType marks a record whose value is a JSON CloudEvent.
	StructuredContentType = "application/cloudevents+json"
	// PartitionKeyExtension is the extension the binding maps to the record key.
	PartitionKeyExtension = "partitionkey"
)

// ErrInvalidCloudEvent is wrapped by Decode when a record claims to be a
// CloudEvent (a ce_specversion header, or the structured content type) but is
// malformed, and by Encode when an event fails validation. Such records are
// dead-lettered, not retried.
var ErrInvalidCloudEvent = errors.New("invalid CloudEvent")

// Decode reads a record as a CloudEvent.
//
// It returns ok=false (and no error) when the record is not a CloudEvent in
// either content mode; the caller wraps it. With ok=true and err != nil the
// record claims to be a CloudEvent but is malformed (err wraps
// ErrInvalidCloudEvent). The record key becomes the partitionkey extension
// unless the event already has one. The returned event's data aliases value.
func Decode(headers []*sarama.RecordHeader, key, value []byte) (ev cloudevents.Event, ok bool, err error) {
	var specVersion, contentType []byte
	hasSpec, hasCT := false, false
	for _, h := range headers {
		if h == nil {
			continue
		}
		switch {
		case equalFold(h.Key, HeaderPrefix+"specversion"):
			specVersion, hasSpec = h.Value, true
		case equalFold(h.Key, ContentTypeHeader):
			contentType, hasCT = h.Value, true
		}
	}
	switch {
	case hasSpec:
		ev, err = decodeBinary(headers, contentType, hasCT, string(specVersion), value)
	case hasCT && isStructured(contentType):
		ev, err = decodeStructured(value)
	default:
		return cloudevents.Event{}, false, nil
	}
	if err != nil {
		return cloudevents.Event{}, true, err
	}
	if len(key) > 0 {
		if _, has := ev.Extensions()[PartitionKeyExtension]; !has {
			ev.SetExtension(PartitionKeyExtension, string(key))
		}
	}
	if err := ev.Validate(); err != nil {
		return cloudevents.Event{}, true, fmt.Errorf("%w: %s", ErrInvalidCloudEvent, strings.TrimSpace(err.Error()))
	}
	return ev, true, nil
}

func decodeBinary(headers []*sarama.RecordHeader, contentType []byte, hasCT bool, specVersion string, value []byte) (cloudevents.Event, error) {
	if specVersion != event.CloudEventsVersionV1 && specVersion != event.CloudEventsVersionV03 {
		return cloudevents.Event{}, fmt.Errorf("%w: unsupported specversion %q", ErrInvalidCloudEvent, specVersion)
	}
	ev := cloudevents.NewEvent(specVersion)
	for _, h := range headers {
		if h == nil || len(h.Key) <= len(HeaderPrefix) || !equalFold(h.Key[:len(HeaderPrefix)], HeaderPrefix) {
			continue
		}
		name := strings.ToLower(string(h.Key[len(HeaderPrefix):]))
		v := string(h.Value)
		switch name {
		case "specversion":
		case "id":
			ev.SetID(v)
		case "source":
			ev.SetSource(v)
		case "type":
			ev.SetType(v)
		case "subject":
			ev.SetSubject(v)
		case "dataschema", "schemaurl":
			ev.SetDataSchema(v)
		case "datacontenttype":
			// Not part of the binding (content-type is), but tolerated.
			if !hasCT {
				ev.SetDataContentType(v)
			}
		case "time":
			t, err := types.ParseTime(v)
			if err != nil {
				return cloudevents.Event{}, fmt.Errorf("%w: time %q: %v", ErrInvalidCloudEvent, v, err)
			}
			ev.SetTime(t)
		default:
			ev.SetExtension(name, v)
		}
	}
	if hasCT {
		ev.SetDataContentType(string(contentType))
	}
	if len(value) > 0 {
		ev.DataEncoded = value
	}
	return ev, nil
}

func decodeStructured(value []byte) (cloudevents.Event, error) {
	ev := cloudevents.NewEvent()
	if err := ev.UnmarshalJSON(value); err != nil {
		return cloudevents.Event{}, fmt.Errorf("%w: structured JSON: %v", ErrInvalidCloudEvent, err)
	}
	return ev, nil
}

func isStructured(contentType []byte) bool {
	ct := contentType
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return equalFold(bytes.TrimSpace(ct), StructuredContentType)
}

// equalFold compares an ASCII header name without allocating.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// Record is a Kafka record in binary content mode, ready for a producer.
type Record struct {
	Key     []byte // nil when the key attribute is absent
	Headers []sarama.RecordHeader
	Value   []byte
}

// Encode renders ev in binary content mode: every context attribute and
// extension as a ce_ header (extensions formatted per the CloudEvents type
// system), datacontenttype as the content-type header, data as the value.
// keyAttr names the attribute or extension whose value becomes the record key
// ("" means PartitionKeyExtension); no key when the event lacks it.
// Errors wrap ErrInvalidCloudEvent.
func Encode(ev cloudevents.Event, keyAttr string) (Record, error) {
	if err := ev.Validate(); err != nil {
		return Record{}, fmt.Errorf("%w: %s", ErrInvalidCloudEvent, strings.TrimSpace(err.Error()))
	}
	exts := ev.Extensions()
	hs := make([]sarama.RecordHeader, 0, 8+len(exts))
	add := func(name, v string) {
		hs = append(hs, sarama.RecordHeader{Key: []byte(name), Value: []byte(v)})
	}
	add(HeaderPrefix+"specversion", ev.SpecVersion())
	add(HeaderPrefix+"id", ev.ID())
	add(HeaderPrefix+"source", ev.Source())
	add(HeaderPrefix+"type", ev.Type())
	if v := ev.Subject(); v != "" {
		add(HeaderPrefix+"subject", v)
	}
	if t := ev.Time(); !t.IsZero() {
		add(HeaderPrefix+"time", types.FormatTime(t))
	}
	if v := ev.DataSchema(); v != "" {
		add(HeaderPrefix+"dataschema", v)
	}
	if v := ev.DataContentType(); v != "" {
		add(ContentTypeHeader, v)
	}
	names := make([]string, 0, len(exts))
	for name := range exts {
		names = append(names, name)
	}
	sort.Strings(names) // stable header order, for reproducible records
	for _, name := range names {
		v, err := types.Format(exts[name])
		if err != nil {
			return Record{}, fmt.Errorf("%w: extension %s: %v", ErrInvalidCloudEvent, name, err)
		}
		add(HeaderPrefix+name, v)
	}
	key, err := keyOf(ev, keyAttr)
	if err != nil {
		return Record{}, err
	}
	return Record{Key: key, Headers: hs, Value: ev.Data()}, nil
}

// keyOf returns the value of the attribute or extension named attr, or nil.
func keyOf(ev cloudevents.Event, attr string) ([]byte, error) {
	if attr == "" {
		attr = PartitionKeyExtension
	}
	var v string
	switch strings.ToLower(attr) {
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
		ext, ok := ev.Extensions()[strings.ToLower(attr)]
		if !ok {
			return nil, nil
		}
		s, err := types.Format(ext)
		if err != nil {
			return nil, fmt.Errorf("%w: key extension %s: %v", ErrInvalidCloudEvent, attr, err)
		}
		v = s
	}
	if v == "" {
		return nil, nil
	}
	return []byte(v), nil
}

// DecodeMessage is Decode for a consumed record, for code and tests that read
// back what the Kafka sink wrote. A record that is not a CloudEvent is an
// error here (wrapping ErrInvalidCloudEvent).
func DecodeMessage(m *sarama.ConsumerMessage) (cloudevents.Event, error) {
	ev, ok, err := Decode(m.Headers, m.Key, m.Value)
	if err == nil && !ok {
		err = fmt.Errorf("%w: record %s/%d@%d has no ce_specversion header and is not structured", ErrInvalidCloudEvent, m.Topic, m.Partition, m.Offset)
	}
	return ev, err
}
