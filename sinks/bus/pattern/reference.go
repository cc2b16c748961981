package pattern

import (
	"net/netip"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// The reference matcher: a direct, recursive reading of the pattern
// semantics over the decoded JSON view of the event, sharing no matching
// code with the automaton (only the parsed pattern). It exists to be
// obviously right, as the oracle of the differential fuzz test and as the
// "test every rule in turn" baseline of benchmark B8.
//
// Semantics, in the words the code follows:
//   - $or is multiplied out into alternatives; an alternative is the
//     pattern's fields merged with one choice from each $or (objects at the
//     same key merge; condition arrays on the same key must all match).
//     The event matches if some alternative does.
//   - A condition array matches if one of its conditions matches one of the
//     leaf values at that place (arrays in the event are looked through).
//   - An object pattern matched against an array matches if it matches one
//     element: the fields of one object pattern come from the same array
//     element.
//   - {"exists": false} matches when the path has no leaf value anywhere in
//     the event (an object, an empty array or a missing key all count as
//     no leaf).

// ReferenceMatch reports whether p matches e, the slow and simple way.
func ReferenceMatch(p *Pattern, e *cloudevents.Event) bool {
	return ReferenceMatchObject(p, EventObject(e))
}

// ReferenceMatchObject is ReferenceMatch on an event view already built by
// EventObject, so that one decoded event can be tested against many rules.
func ReferenceMatchObject(p *Pattern, event map[string]any) bool {
	for _, t := range p.ref {
		r := refRun{root: event}
		if r.children(t, event, true, nil) {
			return true
		}
	}
	return false
}

// refTree is one alternative: AND of condition arrays and child objects.
type refTree struct {
	leaves [][]cond
	kids   map[string]*refTree
}

func refAlternatives(n *node) []*refTree {
	alts := []*refTree{{}}
	for _, f := range n.fields {
		var choices []*refTree
		if f.obj != nil {
			for _, sub := range refAlternatives(f.obj) {
				choices = append(choices, &refTree{kids: map[string]*refTree{f.key: sub}})
			}
		} else {
			choices = []*refTree{{kids: map[string]*refTree{f.key: {leaves: [][]cond{f.conds}}}}}
		}
		alts = refCross(alts, choices)
	}
	for _, group := range n.ors {
		var choices []*refTree
		for _, alt := range group {
			choices = append(choices, refAlternatives(alt)...)
		}
		alts = refCross(alts, choices)
	}
	return alts
}

func refCross(as, bs []*refTree) []*refTree {
	var out []*refTree
	for _, a := range as {
		for _, b := range bs {
			out = append(out, refMerge(refMerge(&refTree{}, a), b))
		}
	}
	return out
}

// refMerge merges b into a (copying, never sharing, a's maps) and returns a.
func refMerge(a, b *refTree) *refTree {
	a.leaves = append(a.leaves[:len(a.leaves):len(a.leaves)], b.leaves...)
	kids := make(map[string]*refTree, len(a.kids)+len(b.kids))
	for k, v := range a.kids {
		kids[k] = v
	}
	for k, v := range b.kids {
		if old, ok := kids[k]; ok {
			kids[k] = refMerge(refMerge(&refTree{}, old), v)
		} else {
			kids[k] = v
		}
	}
	a.kids = kids
	return a
}

type refRun struct {
	root map[string]any
}

// tree matches t against v (present says whether the key exists at all);
// path is where v sits, for exists:false.
func (r refRun) tree(t *refTree, v any, present bool, path []string) bool {
	for _, list := range t.leaves {
		if !r.list(list, v, present, path) {
			return false
		}
	}
	if len(t.kids) == 0 {
		return true
	}
	return r.children(t, v, present, path)
}

func (r refRun) children(t *refTree, v any, present bool, path []string) bool {
	switch x := v.(type) {
	case []any:
		if len(x) == 0 {
			return r.children(t, nil, false, path)
		}
		for _, e := range x {
			if r.children(t, e, true, path) {
				return true
			}
		}
		return false
	case map[string]any:
		for k, kid := range t.kids {
			cv, ok := x[k]
			if !r.tree(kid, cv, ok, append(path[:len(path):len(path)], k)) {
				return false
			}
		}
		return true
	}
	for k, kid := range t.kids {
		if !r.tree(kid, nil, false, append(path[:len(path):len(path)], k)) {
			return false
		}
	}
	return true
}

func (r refRun) list(list []cond, v any, present bool, path []string) bool {
	for i := range list {
		c := &list[i]
		if c.kind == cExists && !c.exists {
			if !refHasLeaf(r.root, path) {
				return true
			}
			continue
		}
		if present && refAnyLeaf(v, c) {
			return true
		}
	}
	return false
}

// refAnyLeaf reports whether some leaf of v (looking through arrays, not
// into objects) satisfies c.
func refAnyLeaf(v any, c *cond) bool {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if refAnyLeaf(e, c) {
				return true
			}
		}
		return false
	case map[string]any:
		return false
	}
	return refCond(c, v)
}

// refHasLeaf reports whether the event has any leaf value at path.
func refHasLeaf(v any, path []string) bool {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if refHasLeaf(e, path) {
				return true
			}
		}
		return false
	case map[string]any:
		if len(path) == 0 {
			return false
		}
		cv, ok := x[path[0]]
		return ok && refHasLeaf(cv, path[1:])
	}
	return len(path) == 0
}

// refCond tests one condition against one leaf (string, float64, bool, nil).
func refCond(c *cond, v any) bool {
	s, isStr := v.(string)
	switch c.kind {
	case cExact:
		switch c.val.kind {
		case kString:
			return isStr && s == c.val.str
		case kNumber:
			f, ok := v.(float64)
			return ok && f == c.val.num
		case kTrue, kFalse:
			b, ok := v.(bool)
			return ok && b == (c.val.kind == kTrue)
		default:
			return v == nil
		}
	case cPrefix:
		return isStr && strings.HasPrefix(s, c.str)
	case cSuffix:
		return isStr && strings.HasSuffix(s, c.str)
	case cEqualsFold:
		return isStr && strings.EqualFold(s, c.str)
	case cPrefixFold, cSuffixFold:
		if !isStr {
			return false
		}
		rs, rp := []rune(s), []rune(c.str)
		if len(rp) > len(rs) {
			return false
		}
		if c.kind == cSuffixFold {
			rs = rs[len(rs)-len(rp):]
		}
		return strings.EqualFold(string(rs[:len(rp)]), string(rp))
	case cWildcard:
		return isStr && refGlob(c.str, s)
	case cNumeric:
		f, ok := v.(float64)
		if !ok {
			return false
		}
		g := c.rng
		if g.hasLo && (f < g.lo || f == g.lo && !g.loIncl) {
			return false
		}
		if g.hasHi && (f > g.hi || f == g.hi && !g.hiIncl) {
			return false
		}
		return true
	case cExists:
		return c.exists
	case cCIDR:
		if !isStr {
			return false
		}
		a, err := netip.ParseAddr(s)
		return err == nil && c.cidr.Contains(a.Unmap())
	case cAnythingBut:
		for i := range c.not {
			if refCond(&c.not[i], v) {
				return false
			}
		}
		return true
	}
	return false
}

// refGlob matches s against the wildcard source text w by dynamic
// programming over (pattern token, string byte), reading the escapes
// itself rather than using the parsed parts.
func refGlob(w, s string) bool {
	type tok struct {
		star bool
		b    byte
	}
	var toks []tok
	for i := 0; i < len(w); i++ {
		switch w[i] {
		case '\\':
			i++
			toks = append(toks, tok{b: w[i]})
		case '*':
			toks = append(toks, tok{star: true})
		default:
			toks = append(toks, tok{b: w[i]})
		}
	}
	// can[j] is true when the tokens consumed so far can match s[:j].
	can := make([]bool, len(s)+1)
	can[0] = true
	for _, t := range toks {
		next := make([]bool, len(s)+1)
		for j := 0; j <= len(s); j++ {
			if t.star {
				next[j] = can[j] || (j > 0 && next[j-1])
			} else {
				next[j] = j > 0 && can[j-1] && s[j-1] == t.b
			}
		}
		can = next
	}
	return can[len(s)]
}
