// Package rocketmqce converts between RocketMQ messages and CloudEvents.
//
// CloudEvents has no official RocketMQ protocol binding, so Sluice defines
// one modelled on the Kafka binding (docs/connectors/rocketmq.md, "Mapping"):
//
//   - binary mode: every context attribute and extension is a user property
//     named "ce_" + attribute name (ce_specversion, ce_id, ce_source,
//     ce_type, ce_subject, ce_time, ce_dataschema, ce_<extension>), the
//     datacontenttype is the "content-type" property, and the body is the
//     data;
//   - structured mode: the "content-type" property is
//     application/cloudevents+json and the body is the JSON event.
//
// Encode writes binary mode, except for events without data: brokers
// refuse messages with an empty body, so those are written in structured
// mode (the JSON event is never empty).
//
// It is shared by the RocketMQ source (connectors/rocketmq), the RocketMQ
// sink (sinks/rocketmq) and tests that read results back. The functions are
// pure and safe for concurrent use.
package rocketmqce

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/cebinding"
)

// Property names and media types of the binding.
const (
	// PropertyPrefix prefixes every context attribute property in binary mode.
	PropertyPrefix = "ce_"
	// ContentTypeProperty carries datacontenttype (binary mode) or the
	// structured event format.
	ContentTypeProperty = "content-type"
	// StructuredContentType marks a message whose body is a JSON CloudEvent.
	StructuredContentType = cebinding.StructuredContentType
	// PartitionKeyExtension is the extension the binding maps to the
	// message key (KEYS), like the Kafka binding's record key.
	PartitionKeyExtension = "partitionkey"
	// MaxPropertiesSize is the most bytes RocketMQ's message format holds
	// for all properties together (a signed 16-bit length).
	MaxPropertiesSize = 32767
)

// ErrInvalidCloudEvent is wrapped by Decode when a message claims to be a
// CloudEvent (a ce_specversion property, or the structured content type)
// but is malformed, and by Encode when an event cannot be represented. Such
// messages are dead-lettered, not retried.
var ErrInvalidCloudEvent = errors.New("invalid CloudEvent")

// Decode reads a message's properties and body as a CloudEvent.
//
// It returns ok=false (and no error) when the message is a CloudEvent in
// neither content mode; the caller wraps it. With ok=true and err != nil
// the message claims to be a CloudEvent but is malformed (err wraps
// ErrInvalidCloudEvent). firstKey (the message's first key, "" if none)
// becomes the partitionkey extension unless the event has one. The returned
// event's data aliases body.
func Decode(props map[string]string, firstKey string, body []byte) (ev cloudevents.Event, ok bool, err error) {
	specVersion, hasSpec := lookupFold(props, PropertyPrefix+"specversion")
	contentType, hasCT := lookupFold(props, ContentTypeProperty)
	switch {
	case hasSpec:
		ev, err = decodeBinary(props, contentType, hasCT, specVersion, body)
	case hasCT && cebinding.IsStructured(contentType):
		ev, err = cebinding.DecodeStructured(body)
	default:
		return cloudevents.Event{}, false, nil
	}
	if err != nil {
		return cloudevents.Event{}, true, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
	}
	if firstKey != "" {
		if _, has := ev.Extensions()[PartitionKeyExtension]; !has {
			ev.SetExtension(PartitionKeyExtension, firstKey)
		}
	}
	if err := ev.Validate(); err != nil {
		return cloudevents.Event{}, true, fmt.Errorf("%w: %s", ErrInvalidCloudEvent, strings.TrimSpace(err.Error()))
	}
	return ev, true, nil
}

// lookupFold finds a property by ASCII case-insensitive name. RocketMQ
// property names are case-sensitive, but producers in other languages may
// capitalise them, as HTTP headers often are.
func lookupFold(props map[string]string, name string) (string, bool) {
	if v, ok := props[name]; ok {
		return v, true
	}
	for k, v := range props {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

// decodeBinary reads binary mode. Its errors are cebinding's, unwrapped:
// Decode wraps them with ErrInvalidCloudEvent.
func decodeBinary(props map[string]string, contentType string, hasCT bool, specVersion string, body []byte) (cloudevents.Event, error) {
	ev, err := cebinding.NewEvent(specVersion)
	if err != nil {
		return cloudevents.Event{}, err
	}
	// Sorted, so that when a name appears in two spellings the result does
	// not depend on map order.
	names := make([]string, 0, len(props))
	for k := range props {
		if len(k) > len(PropertyPrefix) && strings.EqualFold(k[:len(PropertyPrefix)], PropertyPrefix) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		name := strings.ToLower(k[len(PropertyPrefix):])
		if err := cebinding.SetAttribute(&ev, name, props[k], hasCT); err != nil {
			return cloudevents.Event{}, err
		}
	}
	if hasCT {
		ev.SetDataContentType(contentType)
	}
	if len(body) > 0 {
		ev.DataEncoded = body
	}
	return ev, nil
}

// Message is an event in binary content mode, ready for a producer.
type Message struct {
	// Properties are the ce_ attributes and content-type.
	Properties map[string]string
	// Key is the value of the key attribute ("" when the event lacks it).
	Key  string
	Body []byte
}

// Encode renders ev in binary content mode, or in structured mode when it
// has no data (see the package comment). keyAttr names the attribute or
// extension whose value becomes the message key ("" means
// PartitionKeyExtension). Errors wrap ErrInvalidCloudEvent: an invalid event,
// a value RocketMQ's property encoding cannot carry (the bytes 0x01 and
// 0x02 separate properties), or properties over MaxPropertiesSize.
func Encode(ev cloudevents.Event, keyAttr string) (Message, error) {
	if err := ev.Validate(); err != nil {
		return Message{}, fmt.Errorf("%w: %s", ErrInvalidCloudEvent, strings.TrimSpace(err.Error()))
	}
	if keyAttr == "" {
		keyAttr = PartitionKeyExtension
	}
	key, _, err := Attribute(ev, keyAttr)
	if err != nil {
		return Message{}, err
	}
	if len(ev.Data()) == 0 {
		body, err := ev.MarshalJSON()
		if err != nil {
			return Message{}, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
		}
		return Message{Properties: map[string]string{ContentTypeProperty: StructuredContentType}, Key: key, Body: body}, nil
	}
	props := make(map[string]string, 8+len(ev.Extensions()))
	err = cebinding.Attributes(ev, func(name, v string) {
		if name == "datacontenttype" {
			props[ContentTypeProperty] = v
		} else {
			props[PropertyPrefix+name] = v
		}
	})
	if err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
	}
	size := 0
	for k, v := range props {
		if strings.ContainsAny(v, "\x01\x02") {
			return Message{}, fmt.Errorf("%w: %s contains a byte 0x01 or 0x02, which RocketMQ properties cannot carry", ErrInvalidCloudEvent, k)
		}
		size += len(k) + len(v) + 2
	}
	if size > MaxPropertiesSize {
		return Message{}, fmt.Errorf("%w: attributes take %d bytes as RocketMQ properties, more than %d", ErrInvalidCloudEvent, size, MaxPropertiesSize)
	}
	return Message{Properties: props, Key: key, Body: ev.Data()}, nil
}

// Attribute returns the value of the context attribute or extension named
// name (case-insensitive) in its canonical string form, and whether the
// event has it. Errors wrap ErrInvalidCloudEvent.
func Attribute(ev cloudevents.Event, name string) (string, bool, error) {
	v, ok, err := cebinding.Attribute(ev, name)
	if err != nil {
		return "", false, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
	}
	return v, ok, nil
}
