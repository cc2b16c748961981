package bus

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/runtime/queue"
)

// Extension attributes the bus sets on events.
const (
	// ExtReplay marks an event delivered again by a replay; its value is
	// the replay's id.
	ExtReplay = "sluicereplay"
	// ExtReplayRule restricts a replayed event to one rule while it is on
	// the bus; it is removed before the event reaches a target.
	ExtReplayRule = "sluicereplayrule"
)

// structuredType is how the embedded storage keeps events: CloudEvents JSON
// (structured mode) as the message body, so that extension values keep
// their types (integers and booleans match numeric and boolean patterns),
// which binary mode's string headers would lose.
const structuredType = "application/cloudevents+json"

// encode renders ev for the embedded queue.
func encode(ev *cloudevents.Event) ([]byte, map[string]string, error) {
	if err := ev.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errInvalidEvent, err)
	}
	if !ev.DataBase64 && len(ev.DataEncoded) > 0 && !utf8.Valid(ev.DataEncoded) && !isJSON(ev.DataMediaType()) {
		// Structured mode writes other data as a JSON string, which
		// cannot hold arbitrary bytes.
		c := *ev
		c.DataBase64 = true
		ev = &c
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errInvalidEvent, err)
	}
	return b, map[string]string{queue.ContentTypeHeader: structuredType}, nil
}

// errInvalidEvent: an event put on a bus fails CloudEvents validation.
var errInvalidEvent = errors.New("invalid CloudEvent")

// unwrap turns a message read from the embedded queue back into the event
// encode stored (the queue hands such a body out wrapped in an event of its
// own). Messages of other sources are left alone. A body that does not
// decode sets DecodeErr, so that the engine dead-letters it.
func unwrap(msg *connectors.Message) {
	if msg.DecodeErr != nil || msg.Event.Type() != queue.WrappedEventType || msg.Event.DataContentType() != structuredType {
		return
	}
	var ev cloudevents.Event
	if err := json.Unmarshal(msg.Event.Data(), &ev); err != nil {
		msg.DecodeErr = fmt.Errorf("bus: stored event does not decode: %w", err)
		return
	}
	msg.Event = ev
}

// ingressID is the queue message id of an event put on the bus whose
// ingress queue is ingress: a digest of the queue (ids are deduplicated
// across every queue of the store) and of the event's source and id (the
// CloudEvents identity), so a producer retrying a put within the duplicate
// window stores the event once. A replayed event adds its replay id: it is
// a new delivery of an event seen before.
func ingressID(ingress string, ev *cloudevents.Event) string {
	h := sha256.New()
	for _, s := range []string{ingress, ev.Source(), ev.ID(), replayOf(ev)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "e" + hex.EncodeToString(h.Sum(nil)[:20])
}

// replayOf returns the replay id of a replayed event, "" for others.
func replayOf(ev *cloudevents.Event) string {
	s, _ := ev.Extensions()[ExtReplay].(string)
	return s
}

// replayRule returns the one rule a replayed event is meant for, "" for
// every rule.
func replayRule(ev *cloudevents.Event) string {
	s, _ := ev.Extensions()[ExtReplayRule].(string)
	return s
}

// isJSON reports whether a media type is JSON (as the SDK decides when
// writing structured mode).
func isJSON(mediaType string) bool {
	switch mediaType {
	case "", "application/json", "text/json":
		return true
	}
	return strings.HasSuffix(mediaType, "+json")
}
