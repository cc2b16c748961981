package pipelines

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// FieldError is one problem in a configuration file: where it is, which
// field, and what is wrong. Msg never contains a secret's value.
type FieldError struct {
	Pos  Position
	Path string // field path such as "spec.delivery.retry.delay"; "" for the file or document
	Msg  string
	Err  error // underlying cause (an *fs.PathError, ...), or nil
}

// Error formats e as "file:line:col: path: msg".
func (e *FieldError) Error() string {
	var b strings.Builder
	if pos := e.Pos.String(); pos != "" {
		b.WriteString(pos)
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying cause, so errors.Is(err, fs.ErrNotExist)
// works for unreadable files.
func (e *FieldError) Unwrap() error { return e.Err }

// LoadError holds every problem found while loading a set of files, sorted
// by file, line and column. Loading returns either a *LoadError or no error.
type LoadError struct {
	Errors []*FieldError
}

// Error lists every problem, one per line.
func (e *LoadError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes the individual errors to errors.Is and errors.As.
func (e *LoadError) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		errs[i] = fe
	}
	return errs
}

// maxErrors bounds a LoadError, so that a generated or hostile file cannot
// bury the first problems under hundreds of thousands of others.
const maxErrors = 1000

// errorOrNil sorts errs into a *LoadError, or returns nil when there are none
// (never a typed nil). Past maxErrors, the rest are summed up in a last error.
func errorOrNil(errs []*FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *FieldError) int {
		return cmp.Or(
			cmp.Compare(a.Pos.File, b.Pos.File),
			cmp.Compare(a.Pos.Line, b.Pos.Line),
			cmp.Compare(a.Pos.Column, b.Pos.Column),
		)
	})
	if len(errs) > maxErrors {
		more := len(errs) - maxErrors
		errs = append(errs[:maxErrors:maxErrors], &FieldError{Msg: fmt.Sprintf("too many errors: %d more not shown", more)})
	}
	return &LoadError{Errors: errs}
}
