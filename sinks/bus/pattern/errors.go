package pattern

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Error is one problem in a pattern, located by the JSON path of the
// offending element inside the pattern (e.g. `data.amount[0].numeric`). The
// config loader maps Segments onto its own document positions to report
// file:line.
type Error struct {
	// Segments is the path as object keys (string) and array indexes (int),
	// from the pattern root; empty for a problem with the whole pattern.
	Segments []any
	// Path is Segments written as `a.b[0]["odd.key"]`.
	Path string
	// Msg says what is wrong, for humans.
	Msg string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return "pattern: " + e.Msg
	}
	return "pattern: " + e.Path + ": " + e.Msg
}

// Errors is every problem Parse found, in document order (keys sorted). Parse returns it
// (never an empty one) so that all problems are reported at once;
// errors.As(err, &*Error) finds the first.
type Errors []*Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// Unwrap exposes each *Error to errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// ErrDuplicateRule is returned by Builder.Add when a rule id is added twice.
var ErrDuplicateRule = errors.New("pattern: duplicate rule id")

// ErrNilPattern is returned by Builder.Add for a nil pattern.
var ErrNilPattern = errors.New("pattern: nil pattern")

// ErrInvalidData is returned (wrapped) by Flatten when the event declares a
// JSON data content type but its data is not valid JSON; the fields are then
// flattened without `data`, exactly as Match treats such an event.
var ErrInvalidData = errors.New("pattern: event data is not valid JSON")

func formatPath(segs []any) string {
	var b strings.Builder
	for _, s := range segs {
		switch s := s.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", s)
		case string:
			if simpleKey(s) {
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(s)
			} else {
				b.WriteString("[" + strconv.Quote(s) + "]")
			}
		}
	}
	return b.String()
}

func simpleKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '$') {
			return false
		}
	}
	return true
}
