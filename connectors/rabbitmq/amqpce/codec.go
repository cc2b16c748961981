// Package amqpce converts between AMQP 0-9-1 messages and CloudEvents
// following the CloudEvents AMQP protocol binding (binary and structured
// content modes). It is shared by the RabbitMQ source (connectors/rabbitmq),
// the RabbitMQ sink (sinks/rabbitmq) and tests that read results back.
//
// In binary mode the binding carries context attributes as application
// properties, which AMQP 0-9-1 calls message headers, named
// "cloudEvents_<attr>". Older revisions of the binding (and clients built on
// them) use "cloudEvents:<attr>"; Decode accepts both, Encode writes the
// current "cloudEvents_" form.
//
// The functions are pure and safe for concurrent use.
package amqpce

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/types"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/connectors/cebinding"
)

// Header prefixes and media types of the AMQP protocol binding.
const (
	// Prefix prefixes every context attribute header in binary mode.
	Prefix = "cloudEvents_"
	// LegacyPrefix is the prefix of binding revisions before 2023.
	LegacyPrefix = "cloudEvents:"
	// StructuredContentType marks a message whose body is a JSON CloudEvent.
	StructuredContentType = cebinding.StructuredContentType
)

// ErrInvalidCloudEvent is wrapped by Decode when a message claims to be a
// CloudEvent (a specversion header, or the structured content type) but is
// malformed, and by Encode when an event fails validation. Such messages are
// dead-lettered, not retried.
var ErrInvalidCloudEvent = errors.New("invalid CloudEvent")

// Decode reads a message as a CloudEvent from its headers, content-type
// property and body.
//
// It returns ok=false (and no error) when the message is not a CloudEvent
// in either content mode; the caller wraps it. With ok=true and err != nil
// the message claims to be a CloudEvent but is malformed (err wraps
// ErrInvalidCloudEvent). The returned event's data aliases body.
func Decode(headers amqp.Table, contentType string, body []byte) (ev cloudevents.Event, ok bool, err error) {
	attrs := attributes(headers)
	spec, binary := attrs["specversion"]
	switch {
	case binary:
		ev, err = decodeBinary(attrs, spec, contentType, body)
	case cebinding.IsStructured(contentType):
		ev, err = cebinding.DecodeStructured(body)
		if err != nil {
			err = fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
		}
	default:
		return cloudevents.Event{}, false, nil
	}
	if err != nil {
		return cloudevents.Event{}, true, err
	}
	if err := ev.Validate(); err != nil {
		return cloudevents.Event{}, true, fmt.Errorf("%w: %s", ErrInvalidCloudEvent, strings.TrimSpace(err.Error()))
	}
	return ev, true, nil
}

// attributes collects the prefixed headers by lower-case attribute name. A
// "cloudEvents_" header wins over a "cloudEvents:" one of the same name.
func attributes(headers amqp.Table) map[string]any {
	var out map[string]any
	for k, v := range headers {
		name, legacy, ok := cutPrefix(k)
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]any, len(headers))
		}
		if _, seen := out[name]; seen && legacy {
			continue
		}
		out[name] = v
	}
	return out
}

// cutPrefix splits a header name into the attribute name and which prefix
// it had. Prefixes are compared case-insensitively.
func cutPrefix(k string) (name string, legacy, ok bool) {
	if len(k) <= len(Prefix) {
		return "", false, false
	}
	p := k[:len(Prefix)]
	switch {
	case strings.EqualFold(p, Prefix):
	case strings.EqualFold(p, LegacyPrefix):
		legacy = true
	default:
		return "", false, false
	}
	return strings.ToLower(k[len(Prefix):]), legacy, true
}

func decodeBinary(attrs map[string]any, spec any, contentType string, body []byte) (cloudevents.Event, error) {
	sv, ok := asString(spec)
	if !ok {
		return cloudevents.Event{}, fmt.Errorf("%w: attribute \"specversion\": want a string, got %T", ErrInvalidCloudEvent, spec)
	}
	ev, err := cebinding.NewEvent(sv)
	if err != nil {
		return cloudevents.Event{}, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
	}
	// Sorted, so that the first error reported does not depend on map order.
	names := make([]string, 0, len(attrs))
	for name := range attrs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v := attrs[name]
		if name == "specversion" {
			continue
		}
		// Strings, the binding's usual form, are read as every binding
		// reads them; typed AMQP values are this binding's own.
		if s, ok := asString(v); ok {
			if err := cebinding.SetAttribute(&ev, name, s, contentType != ""); err != nil {
				return cloudevents.Event{}, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
			}
			continue
		}
		switch {
		case name == "time":
			t, ok := v.(time.Time) // an AMQP timestamp: whole seconds
			if !ok {
				return cloudevents.Event{}, fmt.Errorf("%w: attribute \"time\": want a string or timestamp, got %T", ErrInvalidCloudEvent, v)
			}
			ev.SetTime(t.UTC())
		case isContextAttribute(name):
			return cloudevents.Event{}, fmt.Errorf("%w: attribute %q: want a string, got %T", ErrInvalidCloudEvent, name, v)
		default:
			x, err := extensionValue(name, v)
			if err != nil {
				return cloudevents.Event{}, err
			}
			if err := ev.Context.SetExtension(name, x); err != nil {
				return cloudevents.Event{}, fmt.Errorf("%w: extension %q: %v", ErrInvalidCloudEvent, name, err)
			}
		}
	}
	if contentType != "" {
		ev.SetDataContentType(contentType)
	}
	if len(body) > 0 {
		ev.DataEncoded = body
	}
	return ev, nil
}

func isContextAttribute(name string) bool {
	switch name {
	case "id", "source", "type", "subject", "dataschema", "schemaurl", "datacontenttype":
		return true
	}
	return false
}

// asString returns a header value of a String or URI attribute: AMQP
// carries strings as long strings or byte arrays.
func asString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		return string(x), true
	}
	return "", false
}

// extensionValue converts a typed (not string) header value to a
// CloudEvents extension value: AMQP integers within 32 bits become Integer,
// booleans Boolean, timestamps Timestamp; other numbers are kept in their
// decimal string form. (Strings stay strings, as in the other bindings: the
// receiver does not guess types.)
func extensionValue(name string, v any) (any, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case time.Time:
		return types.Timestamp{Time: x.UTC()}, nil
	case int8, int16, int32, int64, int, uint8, uint16, uint32, uint64:
		n, ok := asInt64(x)
		if ok && n >= math.MinInt32 && n <= math.MaxInt32 {
			return int32(n), nil
		}
		return fmt.Sprint(x), nil
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32), nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case amqp.Decimal:
		return fmt.Sprintf("%de-%d", x.Value, x.Scale), nil
	}
	return nil, fmt.Errorf("%w: extension %q: unsupported header type %T", ErrInvalidCloudEvent, name, v)
}

func asInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}

// Encode renders ev in binary content mode as a persistent publishing:
// every context attribute and extension as a "cloudEvents_" header whose
// value is the attribute's canonical string (time in RFC 3339 with
// nanoseconds: an AMQP timestamp only holds seconds), datacontenttype as
// the content-type property, the id as the message-id property, the time
// (whole seconds) as the timestamp property, the type as the type property,
// data as the body. Errors wrap ErrInvalidCloudEvent.
func Encode(ev cloudevents.Event) (amqp.Publishing, error) {
	if err := ev.Validate(); err != nil {
		return amqp.Publishing{}, fmt.Errorf("%w: %s", ErrInvalidCloudEvent, strings.TrimSpace(err.Error()))
	}
	h := make(amqp.Table, 8+len(ev.Extensions()))
	err := cebinding.Attributes(ev, func(name, v string) {
		if name != "datacontenttype" { // the content-type property carries it
			h[Prefix+name] = v
		}
	})
	if err != nil {
		return amqp.Publishing{}, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
	}
	return amqp.Publishing{
		Headers:      h,
		ContentType:  ev.DataContentType(),
		DeliveryMode: amqp.Persistent,
		MessageId:    ev.ID(),
		Timestamp:    ev.Time(),
		Type:         ev.Type(),
		Body:         ev.Data(),
	}, nil
}

// DecodeDelivery is Decode for a consumed message, for code and tests that
// read back what the RabbitMQ sink wrote. A message that is not a
// CloudEvent is an error here (wrapping ErrInvalidCloudEvent).
func DecodeDelivery(d *amqp.Delivery) (cloudevents.Event, error) {
	ev, ok, err := Decode(d.Headers, d.ContentType, d.Body)
	if err == nil && !ok {
		err = fmt.Errorf("%w: message %q has no specversion header and is not structured", ErrInvalidCloudEvent, d.MessageId)
	}
	return ev, err
}
