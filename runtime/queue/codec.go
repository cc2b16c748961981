package queue

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors/cebinding"
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
	h := make(map[string]string, 8+len(ev.Extensions()))
	err = cebinding.Attributes(ev, func(name, v string) {
		if name == "datacontenttype" {
			h[ContentTypeHeader] = v
		} else {
			h[HeaderPrefix+name] = v
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
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
	ev, err = cebinding.NewEvent(spec)
	if err != nil {
		return cloudevents.Event{}, true, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
	}
	ct, hasCT := headers[ContentTypeHeader]
	for k, v := range headers {
		if len(k) <= len(HeaderPrefix) || !strings.EqualFold(k[:len(HeaderPrefix)], HeaderPrefix) {
			continue
		}
		if err := cebinding.SetAttribute(&ev, strings.ToLower(k[len(HeaderPrefix):]), v, hasCT); err != nil {
			return cloudevents.Event{}, true, fmt.Errorf("%w: %v", ErrInvalidCloudEvent, err)
		}
	}
	if hasCT {
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
