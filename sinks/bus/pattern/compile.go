package pattern

import (
	"slices"
	"strings"
)

// step is one AND-ed requirement of an alternative: some leaf at path
// satisfies one of conds, or (absent) the path has no leaf at all.
type step struct {
	path   []string
	conds  []cond
	absent bool
	key    string // path and conditions, canonical: equal keys are the same step
	rank   int
}

// alternative is an AND of steps; a pattern is an OR of alternatives.
type alternative []step

// countAlternatives is the size expand will produce, saturating just above
// MaxAlternatives so that hostile patterns are refused before expansion.
func countAlternatives(n *node) int {
	mul := func(a, b int) int {
		if a > MaxAlternatives || b > MaxAlternatives || a*b > MaxAlternatives {
			return MaxAlternatives + 1
		}
		return a * b
	}
	c := 1
	for _, f := range n.fields {
		if f.obj != nil {
			c = mul(c, countAlternatives(f.obj))
		} else if pos, absent := splitExists(f.conds); len(pos) > 0 && absent {
			c = mul(c, 2)
		}
	}
	for _, group := range n.ors {
		s := 0
		for _, alt := range group {
			s += countAlternatives(alt)
			if s > MaxAlternatives {
				s = MaxAlternatives + 1
			}
		}
		c = mul(c, s)
	}
	return c
}

// splitExists separates exists:false (an absence test, which the automaton
// takes as its own kind of step) from the conditions on values.
func splitExists(conds []cond) (pos []cond, absent bool) {
	for _, c := range conds {
		if c.kind == cExists && !c.exists {
			absent = true
		} else {
			pos = append(pos, c)
		}
	}
	return pos, absent
}

// expand multiplies out every $or (and every condition array that offers
// exists:false beside other conditions) into AND-only alternatives, each a
// sorted, de-duplicated list of steps.
func expand(n *node, prefix []string) []alternative {
	alts := []alternative{nil}
	for _, f := range n.fields {
		path := append(prefix[:len(prefix):len(prefix)], f.key)
		var choices []alternative
		if f.obj != nil {
			choices = expand(f.obj, path)
		} else {
			pos, absent := splitExists(f.conds)
			if len(pos) > 0 {
				choices = append(choices, alternative{newStep(path, pos, false)})
			}
			if absent {
				choices = append(choices, alternative{newStep(path, nil, true)})
			}
		}
		alts = cross(alts, choices)
	}
	for _, group := range n.ors {
		var choices []alternative
		for _, alt := range group {
			choices = append(choices, expand(alt, prefix)...)
		}
		alts = cross(alts, choices)
	}
	if len(prefix) == 0 {
		for i, a := range alts {
			alts[i] = normalize(a)
		}
	}
	return alts
}

func cross(as, bs []alternative) []alternative {
	out := make([]alternative, 0, len(as)*len(bs))
	for _, a := range as {
		for _, b := range bs {
			out = append(out, append(a[:len(a):len(a)], b...))
		}
	}
	return out
}

func newStep(path []string, conds []cond, absent bool) step {
	s := step{path: path, absent: absent}
	keys := make([]string, 0, len(conds))
	for i := range conds {
		if r := conds[i].rank(); r > s.rank {
			s.rank = r
		}
		keys = append(keys, conds[i].canon())
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	if absent {
		s.rank = 5
		keys = []string{`{"exists":false}`}
	}
	// Keep one condition per distinct canonical form, in canonical order.
	for _, k := range keys {
		for i := range conds {
			if conds[i].canon() == k {
				s.conds = append(s.conds, conds[i])
				break
			}
		}
	}
	s.key = encodePath(path) + "\x00" + strings.Join(keys, ",")
	return s
}

// normalize sorts an alternative's steps canonically (by operator rank,
// then path and conditions) and drops repeated steps.
func normalize(a alternative) alternative {
	slices.SortFunc(a, func(x, y step) int {
		if x.rank != y.rank {
			return x.rank - y.rank
		}
		return strings.Compare(x.key, y.key)
	})
	return slices.CompactFunc(a, func(x, y step) bool { return x.key == y.key })
}

// selectivity estimates, from the whole rule set, how likely an event is to
// satisfy each step, so that Build can order every rule's steps most
// selective first. The walk then branches on the fields that discard most
// rules, and few partial matches stay alive: a rule on `type = X` and
// `data.currency = "EUR"` must start with the type, which takes one of
// hundreds of values across the rules, not with the currency, which takes
// one of five — else every event in euros wakes a thousand rules.
//
// The estimate for a discrete condition (exact value, prefix, suffix,
// ignore-case, CIDR, anchored wildcard) on a path is 1 / the number of
// distinct such conditions the rules use on that path; other kinds get
// fixed, pessimistic estimates. A step's estimate is the sum over its OR-ed
// conditions. Equal steps get equal estimates, so rules that share a step
// still share automaton states.
type selectivity struct {
	distinct map[string]int // encoded path → distinct discrete conditions on it
}

func newSelectivity(pats []*Pattern) selectivity {
	seen := map[string]map[string]struct{}{}
	for _, p := range pats {
		for _, alt := range p.alts {
			for _, st := range alt {
				path := encodePath(st.path)
				for i := range st.conds {
					if discrete(&st.conds[i]) {
						if seen[path] == nil {
							seen[path] = map[string]struct{}{}
						}
						seen[path][st.conds[i].canon()] = struct{}{}
					}
				}
			}
		}
	}
	s := selectivity{distinct: make(map[string]int, len(seen))}
	for path, set := range seen {
		s.distinct[path] = len(set)
	}
	return s
}

func discrete(c *cond) bool {
	switch c.kind {
	case cExact, cEqualsFold, cPrefix, cSuffix, cPrefixFold, cSuffixFold, cCIDR:
		return true
	case cWildcard:
		return c.rank() == 1
	}
	return false
}

func (s selectivity) estimate(st *step) float64 {
	if st.absent {
		return 0.5
	}
	p := 0.0
	for i := range st.conds {
		c := &st.conds[i]
		switch {
		case discrete(c):
			p += 1 / float64(max(1, s.distinct[encodePath(st.path)]))
		case c.kind == cNumeric:
			p += 0.5
		case c.kind == cAnythingBut:
			p += 0.9
		default: // exists:true, unanchored wildcards
			p += 0.95
		}
	}
	return min(p, 1)
}

// order returns the alternative's steps most selective first (ties broken
// by the canonical order).
func (s selectivity) order(a alternative) alternative {
	est := make(map[string]float64, len(a))
	for i := range a {
		est[a[i].key] = s.estimate(&a[i])
	}
	out := slices.Clone(a)
	slices.SortStableFunc(out, func(x, y step) int {
		switch ex, ey := est[x.key], est[y.key]; {
		case ex < ey:
			return -1
		case ex > ey:
			return 1
		}
		return 0
	})
	return out
}
