// Package kafkace converts between Kafka records and CloudEvents following the
// CloudEvents Kafka protocol binding 1.0 (binary and structured content
// modes). It is shared by the Kafka source (connectors/kafka), the Kafka sink
// (sinks/kafka) and tests that read results back.
//
// The functions are pure and safe for concurrent use.
package kafkace

import (
	"errors"
	"fmt"
	"strings"

	"github.com/IBM/sarama"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/sluicehq/sluice/connectors/cebinding"
)

// Header names and media types of the Kafka protocol binding.
const (
	// HeaderPrefix prefixes every context attribute header in binary mode.
	HeaderPrefix = "ce_"
	// ContentTypeHeader carries datacontenttype (binary mode) or the
	// structured event format.
	ContentTypeHeader = "content-type"
	// StructuredContentType marks a record whose value is a JSON CloudEvent.
	StructuredContentType = cebinding.StructuredContentType
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
//
// A consumer decoding a stream of records uses a Decoder instead.
func Decode(headers []*sarama.RecordHeader, key, value []byte) (ev cloudevents.Event, ok bool, err error) {
	var d Decoder
	return d.Decode(headers, key, value)
}

// Decoder is Decode for a stream of records: it remembers the last source
// and content type it parsed (see cebinding.Cache), and builds CloudEvents
// 1.0 binary-mode events field by field instead of through sdk-go's
// setters and Validate, which re-parse and allocate on every record. It is
// safe for concurrent use; the zero value is ready. Keep one per consumer.
type Decoder struct {
	cache cebinding.Cache
}

// Decode is the package's Decode.
func (d *Decoder) Decode(headers []*sarama.RecordHeader, key, value []byte) (ev cloudevents.Event, ok bool, err error) {
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
	case hasSpec && string(specVersion) == event.CloudEventsVersionV1:
		ev, err = d.decodeV1(headers, contentType, hasCT, key, value)
		if err != nil {
			return cloudevents.Event{}, true, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
		}
		return ev, true, nil
	case hasSpec:
		ev, err = decodeBinary(headers, contentType, hasCT, string(specVersion), value)
	case hasCT && cebinding.IsStructured(string(contentType)):
		ev, err = cebinding.DecodeStructured(value)
	default:
		return cloudevents.Event{}, false, nil
	}
	if err != nil {
		return cloudevents.Event{}, true, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
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

// decodeV1 reads a CloudEvents 1.0 record in binary mode and validates it.
// Its errors are cebinding's, unwrapped.
func (d *Decoder) decodeV1(headers []*sarama.RecordHeader, contentType []byte, hasCT bool, key, value []byte) (cloudevents.Event, error) {
	ec := &event.EventContextV1{}
	for _, h := range headers {
		if h == nil || len(h.Key) <= len(HeaderPrefix) || !equalFold(h.Key[:len(HeaderPrefix)], HeaderPrefix) {
			continue
		}
		switch name := attrName(h.Key[len(HeaderPrefix):]); name {
		case "source":
			if err := cebinding.SetSourceV1(ec, &d.cache, h.Value); err != nil {
				return cloudevents.Event{}, err
			}
		case "type":
			cebinding.SetTypeV1(ec, &d.cache, h.Value)
		default:
			if err := cebinding.SetAttributeV1(ec, &d.cache, name, string(h.Value), hasCT); err != nil {
				return cloudevents.Event{}, err
			}
		}
	}
	if hasCT {
		cebinding.SetContentTypeV1(ec, &d.cache, contentType)
	}
	if len(key) > 0 {
		if _, has := ec.Extensions[PartitionKeyExtension]; !has {
			if ec.Extensions == nil {
				ec.Extensions = make(map[string]any, 1)
			}
			ec.Extensions[PartitionKeyExtension] = string(key)
		}
	}
	if err := cebinding.ValidateV1(ec, &d.cache); err != nil {
		return cloudevents.Event{}, err
	}
	ev := cloudevents.Event{Context: ec}
	if len(value) > 0 {
		ev.DataEncoded = value
	}
	return ev, nil
}

// attrName is a header's attribute name in lower case, without allocating
// for the context attributes and the common extensions.
func attrName(b []byte) string {
	for _, name := range [...]string{"id", "source", "type", "specversion", PartitionKeyExtension, "subject", "time",
		"dataschema", "datacontenttype", "traceparent", "tracestate"} {
		if equalFold(b, name) {
			return name
		}
	}
	return strings.ToLower(string(b))
}

// decodeBinary reads binary mode of other spec versions (0.3). Its errors
// are cebinding's, unwrapped: Decode wraps them with ErrInvalidCloudEvent.
func decodeBinary(headers []*sarama.RecordHeader, contentType []byte, hasCT bool, specVersion string, value []byte) (cloudevents.Event, error) {
	ev, err := cebinding.NewEvent(specVersion)
	if err != nil {
		return cloudevents.Event{}, err
	}
	for _, h := range headers {
		if h == nil || len(h.Key) <= len(HeaderPrefix) || !equalFold(h.Key[:len(HeaderPrefix)], HeaderPrefix) {
			continue
		}
		name := strings.ToLower(string(h.Key[len(HeaderPrefix):]))
		if err := cebinding.SetAttribute(&ev, name, string(h.Value), hasCT); err != nil {
			return cloudevents.Event{}, err
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
	hs := make([]sarama.RecordHeader, 0, 8+len(ev.Extensions()))
	err := cebinding.Attributes(ev, func(name, v string) {
		if name == "datacontenttype" {
			name = ContentTypeHeader
		} else {
			name = HeaderPrefix + name
		}
		hs = append(hs, sarama.RecordHeader{Key: []byte(name), Value: []byte(v)})
	})
	if err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
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
	v, ok, err := cebinding.Attribute(ev, attr)
	if err != nil {
		return nil, fmt.Errorf("%w: key %v", ErrInvalidCloudEvent, err)
	}
	if !ok {
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
