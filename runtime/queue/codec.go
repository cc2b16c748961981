package queue

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// Header names of the CloudEvents NATS protocol binding (binary content
// mode): every context attribute and extension is a "ce-" header and
// datacontenttype is "content-type".
const (
	HeaderPrefix      = "ce-"
	ContentTypeHeader = "content-type"
)

// MsgIDHeader carries Publish's msgID with the message. JetStream's own
// Nats-Msg-Id cannot serve: Move republishes under a new one.
const MsgIDHeader = "Sluice-Msg-Id"

// WrappedEventType is the type of a stored message that is not a CloudEvent,
// wrapped into one by the Source.
const WrappedEventType = "dev.sluice.queue.message"

// ErrInvalidCloudEvent is wrapped by EncodeEvent when an event fails
// validation, and by a Message's DecodeErr when a stored message claims to
// be a CloudEvent but is malformed (such messages are dead-lettered).
var ErrInvalidCloudEvent = errors.New("invalid CloudEvent")

// EncodeEvent renders ev in binary content mode, ready for Publish: the data
// as the message body, the attributes and extensions (formatted per the
// CloudEvents type system) as headers.
func EncodeEvent(ev cloudevents.Event) (data []byte, headers map[string]string, err error) {
	if err := ev.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrInvalidCloudEvent, strings.TrimSpace(err.Error()))
	}
	exts := ev.Extensions()
	h := make(map[string]string, 8+len(exts))
	h[HeaderPrefix+"specversion"] = ev.SpecVersion()
	h[HeaderPrefix+"id"] = ev.ID()
	h[HeaderPrefix+"source"] = ev.Source()
	h[HeaderPrefix+"type"] = ev.Type()
	if v := ev.Subject(); v != "" {
		h[HeaderPrefix+"subject"] = v
	}
	if t := ev.Time(); !t.IsZero() {
		h[HeaderPrefix+"time"] = types.FormatTime(t)
	}
	if v := ev.DataSchema(); v != "" {
		h[HeaderPrefix+"dataschema"] = v
	}
	if v := ev.DataContentType(); v != "" {
		h[ContentTypeHeader] = v
	}
	for name, v := range exts {
		s, err := types.Format(v)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: extension %s: %v", ErrInvalidCloudEvent, name, err)
		}
		h[HeaderPrefix+name] = s
	}
	return ev.Data(), h, nil
}

// decodeEvent reads a stored message as a CloudEvent. ok is false when the
// message is not one (no ce-specversion header); with ok true and err non-nil
// it claims to be one but is malformed (err wraps ErrInvalidCloudEvent). The
// event's data aliases data.
func decodeEvent(headers map[string]string, data []byte) (ev cloudevents.Event, ok bool, err error) {
	spec, has := headers[HeaderPrefix+"specversion"]
	if !has {
		return cloudevents.Event{}, false, nil
	}
	if spec != event.CloudEventsVersionV1 && spec != event.CloudEventsVersionV03 {
		return cloudevents.Event{}, true, fmt.Errorf("%w: unsupported specversion %q", ErrInvalidCloudEvent, spec)
	}
	ev = cloudevents.NewEvent(spec)
	for k, v := range headers {
		if len(k) <= len(HeaderPrefix) || !strings.EqualFold(k[:len(HeaderPrefix)], HeaderPrefix) {
			continue
		}
		switch name := strings.ToLower(k[len(HeaderPrefix):]); name {
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
		case "time":
			t, err := types.ParseTime(v)
			if err != nil {
				return cloudevents.Event{}, true, fmt.Errorf("%w: time %q: %v", ErrInvalidCloudEvent, v, err)
			}
			ev.SetTime(t)
		case "datacontenttype":
			if _, hasCT := headers[ContentTypeHeader]; !hasCT {
				ev.SetDataContentType(v)
			}
		default:
			ev.SetExtension(name, v)
		}
	}
	if ct, has := headers[ContentTypeHeader]; has {
		ev.SetDataContentType(ct)
	}
	if len(data) > 0 {
		ev.DataEncoded = data
	}
	if err := ev.Validate(); err != nil {
		return cloudevents.Event{}, true, fmt.Errorf("%w: %s", ErrInvalidCloudEvent, strings.TrimSpace(err.Error()))
	}
	return ev, true, nil
}

// wrapEvent makes a CloudEvent out of a stored message that is not one, so
// that it can be processed or dead-lettered like any other.
func wrapEvent(stream, queue string, seq uint64, headers map[string]string, data []byte) cloudevents.Event {
	ev := cloudevents.NewEvent()
	id := headers[MsgIDHeader]
	if id == "" {
		id = queue + "-" + strconv.FormatUint(seq, 10)
	}
	ev.SetID(id)
	ev.SetSource("nats://" + stream + "/" + queue)
	ev.SetType(WrappedEventType)
	ct := headers[ContentTypeHeader]
	if ct == "" {
		ct = "application/octet-stream"
	}
	ev.SetDataContentType(ct)
	if len(data) > 0 {
		ev.DataEncoded = data
	}
	return ev
}

// flatten turns NATS headers into the single-valued map Publish accepted.
func flatten(h map[string][]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 && !strings.HasPrefix(k, "Nats-") {
			out[k] = v[0]
		}
	}
	return out
}
