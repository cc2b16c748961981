package bus

import (
	"fmt"
	"slices"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/filter"
	"github.com/sluicehq/sluice/sinks/bus/pattern"
)

// router decides which rules of a bus an event goes to. It is compiled once
// per configuration, is immutable and safe for concurrent use.
//
// Pattern rules are matched together by one pattern.Matcher, whose cost
// does not grow with the number of rules (BENCHMARKS B8); filter rules (the
// CloudEvents Subscriptions API) are evaluated in turn, and rules with
// neither match every event.
type router struct {
	rules   []*rule
	byName  map[string]*rule
	matcher *pattern.Matcher // the pattern rules, by name
	filters []*rule          // rules with a filter
	always  []*rule          // rules with neither
}

// rule is one rule of a bus.
type rule struct {
	name  string
	index int
	// match decides for this rule alone (a Kafka-stored bus's targets each
	// test their own rule).
	match func(*cloudevents.Event) bool
	// filter is set for filter rules.
	filter filter.Filter
}

// newRouter compiles the rules of a bus.
func newRouter(specs []pipelines.BusRule) (*router, error) {
	r := &router{byName: make(map[string]*rule, len(specs))}
	all := pattern.NewBuilder()
	for i, s := range specs {
		ru := &rule{name: s.Name, index: i}
		switch {
		case s.Pattern != nil:
			p, err := pattern.Parse(s.Pattern)
			if err != nil {
				return nil, fmt.Errorf("rule %s: pattern: %w", s.Name, err)
			}
			if err := all.Add(s.Name, p); err != nil {
				return nil, fmt.Errorf("rule %s: %w", s.Name, err)
			}
			one := pattern.NewBuilder()
			_ = one.Add(s.Name, p) // a fresh builder refuses nothing
			m := one.Build()
			ru.match = func(e *cloudevents.Event) bool { return len(m.Match(e)) > 0 }
		case s.Filter != nil:
			f, err := filter.Compile(s.Filter)
			if err != nil {
				return nil, fmt.Errorf("rule %s: filter: %w", s.Name, err)
			}
			ru.filter = f
			ru.match = f.Match
			r.filters = append(r.filters, ru)
		default:
			ru.match = func(*cloudevents.Event) bool { return true }
			r.always = append(r.always, ru)
		}
		if _, dup := r.byName[s.Name]; dup {
			return nil, fmt.Errorf("rule %s: defined twice", s.Name)
		}
		r.byName[s.Name] = ru
		r.rules = append(r.rules, ru)
	}
	r.matcher = all.Build()
	return r, nil
}

// match returns the rules e goes to, in configuration order. A replayed
// event restricted to one rule (ExtReplayRule) goes at most to that one.
func (r *router) match(e *cloudevents.Event) []*rule {
	if only := replayRule(e); only != "" {
		if ru := r.byName[only]; ru != nil && ru.match(e) {
			return []*rule{ru}
		}
		return nil
	}
	var out []*rule
	if r.matcher.Len() > 0 {
		for _, name := range r.matcher.Match(e) {
			out = append(out, r.byName[name])
		}
	}
	for _, ru := range r.filters {
		if ru.filter.Match(e) {
			out = append(out, ru)
		}
	}
	out = append(out, r.always...)
	slices.SortFunc(out, func(a, b *rule) int { return a.index - b.index })
	return out
}

// wants reports whether an event goes to ru: its own test, and a replayed
// event's restriction to one rule.
func (ru *rule) wants(e *cloudevents.Event) bool {
	if only := replayRule(e); only != "" && only != ru.name {
		return false
	}
	return ru.match(e)
}

// archiveFilter decides which events an archive keeps: a pattern, or every
// event. Replayed events are never archived again, so that replaying a
// window twice does not grow the archive.
type archiveFilter struct {
	m *pattern.Matcher // nil: every event
}

func newArchiveFilter(raw map[string]any) (*archiveFilter, error) {
	if raw == nil {
		return &archiveFilter{}, nil
	}
	p, err := pattern.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("archive pattern: %w", err)
	}
	b := pattern.NewBuilder()
	_ = b.Add("archive", p)
	return &archiveFilter{m: b.Build()}, nil
}

func (a *archiveFilter) wants(e *cloudevents.Event) bool {
	if replayOf(e) != "" {
		return false
	}
	return a.m == nil || len(a.m.Match(e)) > 0
}
