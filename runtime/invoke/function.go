// Package invoke calls CloudEvents functions over HTTP (binary, structured
// and batch modes) and defines the Function contract the runtime depends on.
package invoke

import (
	"context"
	"fmt"
	"net/http"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// Function processes events. Implementations are safe for concurrent use.
type Function interface {
	// Invoke sends in (one event, or several in batch mode) and returns the
	// function's result. A nil error means a 2xx answer. Any failure is an
	// error: *Error for an HTTP answer or transport failure, ctx's error when
	// the caller gave up. The runtime classifies errors with retry.Classify.
	// Invoke must not keep in once it returns: the caller reuses it.
	Invoke(ctx context.Context, in []cloudevents.Event) (Result, error)
}

// Result is a successful (2xx) invocation.
type Result struct {
	// Status is the HTTP status code.
	Status int
	// Events are the result events: the CloudEvent in the response body
	// (zero or one in binary/structured mode, any number in batch mode).
	Events []cloudevents.Event
	// Failed reports, in batch mode only, inputs the function rejected
	// individually (index into in → error). Inputs not listed succeeded.
	Failed map[int]*Error
}

// Error is a failed invocation: a non-2xx HTTP answer, or a transport
// failure (Status 0) such as a refused connection or a timeout.
type Error struct {
	// Status is the HTTP status; 0 for transport failures. A 2xx Status
	// means the function answered but Sluice cannot use the answer (body
	// over the size limit, malformed result event): permanent.
	Status     int
	RetryAfter time.Duration // parsed Retry-After; 0 if absent
	Body       string        // first bytes of the response body, for reasons
	Timeout    bool          // the call timed out
	Err        error         // underlying transport error, if any
}

func (e *Error) Error() string {
	switch {
	case e.Timeout:
		return fmt.Sprintf("function timed out: %v", e.Err)
	case e.Status == 0:
		return fmt.Sprintf("function unreachable: %v", e.Err)
	case e.Body != "":
		return fmt.Sprintf("function answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Body)
	default:
		return fmt.Sprintf("function answered %d %s", e.Status, http.StatusText(e.Status))
	}
}

func (e *Error) Unwrap() error { return e.Err }
