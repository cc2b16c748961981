package async

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// Invocation event attributes.
const (
	// InvocationType is the type of an event made from a plain request body.
	InvocationType = "dev.sluice.invocation"
	// ExtTenant and ExtFunction route a queued task to its function's
	// pipeline (and let queue.Move select one function's tasks by their
	// ce-sluicefunction header). They are removed before the function is
	// called.
	ExtTenant   = "sluicetenant"
	ExtFunction = "sluicefunction"
)

// errBadEvent is a request that claims to be a CloudEvent but is not a
// valid one, or a body that cannot be read: 400.
var errBadEvent = errors.New("bad CloudEvent")

// errBatch is a CloudEvents batch: one invocation is one event.
var errBatch = errors.New("a CloudEvents batch cannot be one invocation; send the events one by one")

// parsedEvent is an invocation's event and whether the client sent it as
// a CloudEvent (whose id then deduplicates).
type parsedEvent struct {
	event       cloudevents.Event
	cloudEvent  bool
	contentType string
}

// parseInvocation reads a request body (already size-limited by the
// caller) as a CloudEvent in binary or structured content mode, or wraps a
// plain body into one: id = taskID, type InvocationType, source
// /v1/functions/<name>, time = received, datacontenttype from Content-Type.
func parseInvocation(ctx context.Context, r *http.Request, body []byte, function, taskID string, received time.Time) (parsedEvent, error) {
	msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(body)))
	defer func() { _ = msg.Finish(nil) }()
	switch msg.ReadEncoding() {
	case binding.EncodingBatch:
		return parsedEvent{}, errBatch
	case binding.EncodingBinary, binding.EncodingStructured:
		ev, err := binding.ToEvent(ctx, msg)
		if err != nil {
			return parsedEvent{}, fmt.Errorf("%w: %s", errBadEvent, strings.TrimSpace(err.Error()))
		}
		if err := ev.Validate(); err != nil {
			return parsedEvent{}, fmt.Errorf("%w: %s", errBadEvent, strings.TrimSpace(err.Error()))
		}
		for _, ext := range []string{ExtTenant, ExtFunction, ExtTask} {
			if _, ok := ev.Extensions()[ext]; ok {
				return parsedEvent{}, fmt.Errorf("%w: extension %s is reserved", errBadEvent, ext)
			}
		}
		return parsedEvent{event: *ev, cloudEvent: true, contentType: ev.DataContentType()}, nil
	}
	if strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/cloudevents") {
		// An unknown CloudEvents format (not JSON): refuse rather than wrap.
		return parsedEvent{}, fmt.Errorf("%w: unsupported CloudEvents format %q", errBadEvent, r.Header.Get("Content-Type"))
	}
	ev := cloudevents.NewEvent()
	ev.SetID(taskID)
	ev.SetType(InvocationType)
	ev.SetSource("/v1/functions/" + function)
	ev.SetTime(received)
	ct := r.Header.Get("Content-Type")
	if ct != "" {
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			return parsedEvent{}, fmt.Errorf("%w: Content-Type %q: %v", errBadEvent, ct, err)
		}
		ev.SetDataContentType(ct)
	} else if len(body) > 0 {
		ev.SetDataContentType("application/octet-stream")
	}
	if len(body) > 0 {
		ev.DataEncoded = body
	}
	return parsedEvent{event: ev, contentType: ct}, nil
}
