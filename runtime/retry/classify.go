// Package retry decides what happens after an invocation fails: it
// classifies errors into success, retriable and permanent outcomes (with an
// overload signal for flow control) and turns a pipeline's retry policy into
// backoff delays.
//
// Everything here is pure logic without goroutines; all values are safe for
// concurrent use.
package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/runtime/invoke"
)

// Class is the delivery outcome of one attempt.
type Class int

const (
	// Success: the function answered 2xx.
	Success Class = iota
	// Retriable: the attempt may succeed later (5xx except 501, 408, 429,
	// timeouts, connection errors, cancellation).
	Retriable
	// Permanent: retrying cannot help (other 4xx, 501, undecodable input);
	// the event goes to the failure route at once.
	Permanent
)

func (c Class) String() string {
	switch c {
	case Success:
		return "success"
	case Retriable:
		return "retriable"
	case Permanent:
		return "permanent"
	default:
		return fmt.Sprintf("Class(%d)", int(c))
	}
}

// Verdict is the classification of one attempt's error.
type Verdict struct {
	Class Class
	// Overload reports that the target signalled it is over capacity (429,
	// 503, 504, timeouts, connection refused or reset): the AIMD limiter
	// should cut its limit.
	Overload bool
	// RetryAfter is the target's Retry-After hint (0 if none).
	RetryAfter time.Duration
	// Status is the HTTP status, 0 when there was no HTTP answer.
	Status int
	// Reason is a short human-readable cause ("http 503", "timeout",
	// "connection refused", "decode: ..."), used in dead-letter extensions
	// and logs. It never contains a response body.
	Reason string
}

// PermanentError marks an error that must not be retried, whatever it wraps
// (undecodable input, a result that cannot be encoded, ...). Create it with
// MarkPermanent; detect it with errors.As.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string { return e.Err.Error() }

func (e *PermanentError) Unwrap() error { return e.Err }

// MarkPermanent wraps err so that Classify reports it as Permanent. The
// wrapped error's message becomes the Verdict's Reason, so give it a short
// prefix ("decode: ...").
//
// (It is not called Permanent because that name is the Class constant.)
func MarkPermanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// maxReasonLen bounds Reason so that dead-letter extensions stay small.
const maxReasonLen = 200

// Classify maps the error of one attempt (nil, an *invoke.Error, a
// *PermanentError, a context error or a plain transport error, possibly
// wrapped) to a Verdict, following DESIGN §5:
//
//   - nil → Success.
//   - *PermanentError anywhere in the chain → Permanent (explicit intent wins).
//   - HTTP answers: 5xx except 501, 408 and 429 → Retriable; every other
//     status (4xx, 501, unexpected 1xx/3xx, and a 2xx whose body Sluice
//     cannot use) → Permanent. 429, 503 and 504 are overload signals.
//   - Failed calls without an HTTP answer: timeouts, connection refused or
//     reset → Retriable with Overload; EOF and other transport errors →
//     Retriable.
//   - A bare context.Canceled or context.DeadlineExceeded (not inside an
//     *invoke.Error) means the caller gave up (Function contract): Retriable
//     without Overload, since the target said nothing about its capacity.
//     The caller knows why it gave up (shutdown, revoked lane) and decides
//     whether to retry at all. A per-call timeout is an *invoke.Error with
//     Timeout set, and is an overload.
//   - Anything else → Retriable: unknown failures are retried until the
//     attempts or maxEventAge run out, which is the safe side for
//     at-least-once delivery.
func Classify(err error) Verdict {
	if err == nil {
		return Verdict{Class: Success, Reason: "ok"}
	}
	if pe, ok := errors.AsType[*PermanentError](err); ok {
		return Verdict{Class: Permanent, Reason: shorten(pe.Err.Error())}
	}
	// The event cannot be encoded, or the target is refused by the SSRF
	// guard: sending again would fail the same way.
	if errors.Is(err, invoke.ErrInvalidEvent) || errors.Is(err, invoke.ErrForbiddenAddress) {
		return Verdict{Class: Permanent, Reason: shorten(err.Error())}
	}
	ie, fromCall := errors.AsType[*invoke.Error](err)
	switch {
	case fromCall && ie.Status != 0:
		v := classifyStatus(ie.Status, ie.RetryAfter)
		// The function's own words are what an operator reading a dead
		// letter needs ("amount must be positive"), so the first line of
		// the body joins the reason.
		// (For an unusable 2xx the body is invoke's own description.)
		if line := firstLine(ie.Body); line != "" {
			v.Reason = shorten(fmt.Sprintf("http %d: %s", ie.Status, line))
		}
		return v
	case fromCall && (ie.Timeout || errors.Is(ie.Err, context.DeadlineExceeded)):
		return Verdict{Class: Retriable, Overload: true, Reason: "timeout"}
	case errors.Is(err, context.Canceled):
		return Verdict{Class: Retriable, Reason: "canceled"}
	case !fromCall && errors.Is(err, context.DeadlineExceeded):
		return Verdict{Class: Retriable, Reason: "deadline exceeded"}
	}
	return classifyTransport(err)
}

func classifyStatus(status int, retryAfter time.Duration) Verdict {
	v := Verdict{Status: status, RetryAfter: retryAfter, Reason: fmt.Sprintf("http %d", status)}
	switch {
	case status == 429:
		v.Class, v.Overload = Retriable, true
	case status == 408:
		v.Class = Retriable
	case status == 501:
		v.Class = Permanent
	case status == 503 || status == 504:
		// 504 is a gateway in front of the function timing out: the same
		// capacity signal as our own timeout.
		v.Class, v.Overload = Retriable, true
	case status >= 500 && status <= 599:
		v.Class = Retriable
	case status >= 200 && status <= 299:
		// invoke reports a 2xx it cannot use (malformed CloudEvent, body
		// over the size limit) as an error: the function would answer the
		// same again.
		v.Class, v.Reason = Permanent, fmt.Sprintf("http %d: unusable response", status)
	default:
		v.Class = Permanent
	}
	return v
}

// classifyTransport judges a failure without an HTTP answer.
func classifyTransport(err error) Verdict {
	v := Verdict{Class: Retriable}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		v.Overload, v.Reason = true, "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		v.Overload, v.Reason = true, "connection reset"
	case errors.As(err, &ne) && ne.Timeout():
		v.Overload, v.Reason = true, "timeout"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		v.Reason = "connection closed"
	default:
		v.Reason = shorten(err.Error())
	}
	return v
}

// firstLine is the first non-blank line of s, trimmed.
func firstLine(s string) string {
	for line := range strings.Lines(s) {
		if t := strings.TrimSpace(line); t != "" {
			return t
		}
	}
	return ""
}

func shorten(s string) string {
	if len(s) <= maxReasonLen {
		return s
	}
	// Cut on a rune boundary so the reason stays valid UTF-8.
	cut := maxReasonLen
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
