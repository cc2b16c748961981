package invoke

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// MultiStatus is the body of a 207 Multi-Status answer in batch mode
// (Content-Type application/json): per-input failures plus the results of
// the inputs that succeeded. Inputs not listed in Failed succeeded. See
// docs/functions.md.
type MultiStatus struct {
	Results []cloudevents.Event `json:"results,omitempty"`
	Failed  []FailedEvent       `json:"failed,omitempty"`
}

// FailedEvent is one input a batch function rejected.
type FailedEvent struct {
	// Index is the position of the input in the request batch.
	Index int `json:"index"`
	// Status is an HTTP status classifying the failure like a whole-call
	// answer would (4xx permanent, 5xx/429 retriable). Outside 400-599 it
	// is taken as 500.
	Status int `json:"status"`
	// Reason is a human-readable explanation, kept in Error.Body.
	Reason string `json:"reason,omitempty"`
	// RetryAfter is an optional delay in seconds, like the header.
	RetryAfter float64 `json:"retryAfter,omitempty"`
}

// decodeResponse turns a 2xx answer into a Result. n is the number of
// inputs. A body Sluice cannot use (a malformed or invalid CloudEvent, a
// malformed multi-status document) is an *Error with the 2xx status:
// permanent, since the function would answer the same again.
func decodeResponse(status int, h http.Header, body []byte, n int, batch bool) (Result, error) {
	res := Result{Status: status}
	unusable := func(err error) error {
		return &Error{Status: status, Body: snippet([]byte("unusable response: " + err.Error()))}
	}
	f := format.Lookup(h.Get("Content-Type"))
	switch {
	case f == format.JSONBatch:
		if err := json.Unmarshal(body, &res.Events); err != nil {
			return Result{}, unusable(fmt.Errorf("batch: %w", err))
		}
	case f != nil:
		var e cloudevents.Event
		if err := f.Unmarshal(body, &e); err != nil {
			return Result{}, unusable(err)
		}
		res.Events = []cloudevents.Event{e}
	case h.Get("Ce-Specversion") != "":
		m := cehttp.NewMessage(h, io.NopCloser(bytes.NewReader(body)))
		e, err := binding.ToEvent(context.Background(), m)
		if err != nil {
			return Result{}, unusable(err)
		}
		res.Events = []cloudevents.Event{*e}
	case batch && status == http.StatusMultiStatus:
		var ms MultiStatus
		if err := json.Unmarshal(body, &ms); err != nil {
			return Result{}, unusable(fmt.Errorf("multi-status: %w", err))
		}
		failed, err := ms.failures(n)
		if err != nil {
			return Result{}, unusable(err)
		}
		res.Events, res.Failed = ms.Results, failed
	default:
		// Not a CloudEvent (empty, or plain text/JSON): success, no result.
		return res, nil
	}
	for i := range res.Events {
		if err := res.Events[i].Validate(); err != nil {
			return Result{}, unusable(fmt.Errorf("result event %d: %w", i, err))
		}
	}
	return res, nil
}

// failures checks the failed list against n inputs.
func (ms *MultiStatus) failures(n int) (map[int]*Error, error) {
	if len(ms.Failed) == 0 {
		return nil, nil
	}
	failed := make(map[int]*Error, len(ms.Failed))
	for _, fe := range ms.Failed {
		if fe.Index < 0 || fe.Index >= n {
			return nil, fmt.Errorf("multi-status: failed index %d out of range [0,%d)", fe.Index, n)
		}
		if _, dup := failed[fe.Index]; dup {
			return nil, fmt.Errorf("multi-status: failed index %d listed twice", fe.Index)
		}
		st := fe.Status
		if st < 400 || st > 599 {
			st = http.StatusInternalServerError
		}
		var ra time.Duration
		if fe.RetryAfter > 0 {
			ra = time.Duration(min(fe.RetryAfter, 365*24*3600) * float64(time.Second))
		}
		failed[fe.Index] = &Error{Status: st, RetryAfter: ra, Body: snippet([]byte(fe.Reason))}
	}
	return failed, nil
}
