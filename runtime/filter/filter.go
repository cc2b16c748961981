// Package filter evaluates CloudEvents Subscriptions API filters (exact,
// prefix, suffix, all, any, not, and CESQL) against events. A Filter is
// compiled once from configuration and is safe for concurrent use.
package filter

import (
	"errors"
	"fmt"
	"strings"

	cesql "github.com/cloudevents/sdk-go/sql/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/pipelines"
)

// Filter decides whether an event is delivered.
type Filter interface {
	Match(e *cloudevents.Event) bool
}

// Compile builds a Filter from its configuration. A nil spec matches
// everything. Errors name the offending dialect (validation has already
// checked the shape; Compile checks CESQL syntax).
func Compile(spec *pipelines.FilterSpec) (Filter, error) {
	if spec == nil {
		return matchAll{}, nil
	}
	var parts []Filter
	for _, d := range []struct {
		m  map[string]string
		op func(got, want string) bool
	}{
		{spec.Exact, func(g, w string) bool { return g == w }},
		{spec.Prefix, strings.HasPrefix},
		{spec.Suffix, strings.HasSuffix},
	} {
		for attr, want := range d.m {
			parts = append(parts, attrFilter{attr: strings.ToLower(attr), want: want, op: d.op})
		}
	}
	if len(spec.All) > 0 {
		f, err := compileList(spec.All)
		if err != nil {
			return nil, fmt.Errorf("all: %w", err)
		}
		parts = append(parts, allOf(f))
	}
	if len(spec.Any) > 0 {
		f, err := compileList(spec.Any)
		if err != nil {
			return nil, fmt.Errorf("any: %w", err)
		}
		parts = append(parts, anyOf(f))
	}
	if spec.Not != nil {
		f, err := Compile(spec.Not)
		if err != nil {
			return nil, fmt.Errorf("not: %w", err)
		}
		parts = append(parts, not{f})
	}
	if spec.SQL != "" {
		expr, err := pipelines.ParseCESQL(spec.SQL)
		if err != nil {
			return nil, fmt.Errorf("sql: %w", err)
		}
		parts = append(parts, sqlFilter{expr})
	}
	switch len(parts) {
	case 0:
		return nil, errors.New("empty filter: set one of exact, prefix, suffix, all, any, not, sql")
	case 1:
		return parts[0], nil
	default:
		return allOf(parts), nil
	}
}

func compileList(specs []pipelines.FilterSpec) ([]Filter, error) {
	out := make([]Filter, 0, len(specs))
	for i := range specs {
		f, err := Compile(&specs[i])
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		out = append(out, f)
	}
	return out, nil
}

type matchAll struct{}

func (matchAll) Match(*cloudevents.Event) bool { return true }

type attrFilter struct {
	attr, want string
	op         func(got, want string) bool
}

// Match is false when the attribute is absent, per the Subscriptions API.
func (f attrFilter) Match(e *cloudevents.Event) bool {
	got, ok := Attribute(e, f.attr)
	return ok && f.op(got, f.want)
}

type allOf []Filter

func (fs allOf) Match(e *cloudevents.Event) bool {
	for _, f := range fs {
		if !f.Match(e) {
			return false
		}
	}
	return true
}

type anyOf []Filter

func (fs anyOf) Match(e *cloudevents.Event) bool {
	for _, f := range fs {
		if f.Match(e) {
			return true
		}
	}
	return false
}

type not struct{ f Filter }

func (n not) Match(e *cloudevents.Event) bool { return !n.f.Match(e) }

type sqlFilter struct{ expr cesql.Expression }

// Match treats evaluation errors (missing attributes, type errors) as no
// match, as the CESQL spec's filter semantics require.
func (s sqlFilter) Match(e *cloudevents.Event) bool {
	v, err := s.expr.Evaluate(*e)
	if err != nil {
		return false
	}
	b, ok := v.(bool)
	return ok && b
}

// Attribute returns a context attribute or extension of e as a string.
// Names are lower case, as CloudEvents requires.
func Attribute(e *cloudevents.Event, name string) (string, bool) {
	switch name {
	case "id":
		return e.ID(), true
	case "source":
		return e.Source(), true
	case "specversion":
		return e.SpecVersion(), true
	case "type":
		return e.Type(), true
	case "subject":
		return e.Subject(), e.Subject() != ""
	case "datacontenttype":
		return e.DataContentType(), e.DataContentType() != ""
	case "dataschema":
		return e.DataSchema(), e.DataSchema() != ""
	case "time":
		if e.Time().IsZero() {
			return "", false
		}
		return e.Time().UTC().Format("2006-01-02T15:04:05.999999999Z07:00"), true
	}
	v, ok := e.Extensions()[name]
	if !ok {
		return "", false
	}
	return fmt.Sprint(v), true
}
