package pattern

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Limits on one pattern; Parse refuses patterns beyond them so that a single
// rule cannot make the automaton (or the reference matcher) explode.
const (
	// MaxDepth is the deepest nesting of objects (and $or alternatives).
	MaxDepth = 32
	// MaxConditions is the most match conditions in one pattern.
	MaxConditions = 4096
	// MaxAlternatives is the most AND-only alternatives one pattern may
	// expand to once every $or (and every exists:false offered as one choice
	// among others) is multiplied out.
	MaxAlternatives = 1024
)

// Pattern is one parsed, validated event pattern. It is immutable and safe
// for concurrent use; compile many of them together with a Builder.
type Pattern struct {
	root *node
	alts []alternative // root expanded into AND-only alternatives, for the automaton
	ref  []*refTree    // the same, built independently, for the reference matcher
}

// node is one object of the pattern.
type node struct {
	fields []fieldPat // sorted by key
	ors    [][]*node  // each $or: its alternatives
}

// fieldPat is one key of a pattern object: either a condition array (conds)
// or a nested object (obj).
type fieldPat struct {
	key   string
	conds []cond
	obj   *node
}

// Parse validates a pattern and returns it. raw is the pattern as decoded
// from YAML (map[string]any or map[any]any, with YAML's number types) or as
// JSON text ([]byte, json.RawMessage or string). On failure the error is an
// Errors listing every problem, each an *Error with the path of the
// offending element.
func Parse(raw any) (*Pattern, error) {
	switch r := raw.(type) {
	case []byte:
		return parseJSON(r)
	case json.RawMessage:
		return parseJSON(r)
	case string:
		return parseJSON([]byte(r))
	}
	return parseValue(raw)
}

func parseJSON(b []byte) (*Pattern, error) {
	v, err := decodeJSON(b)
	if err != nil {
		return nil, Errors{{Msg: err.Error()}}
	}
	return parseValue(v)
}

// parseValue parses a decoded pattern (never JSON text).
func parseValue(v any) (*Pattern, error) {
	p := &parser{}
	m, ok := p.object(v)
	if !ok {
		return nil, Errors{{Msg: "a pattern must be a JSON object"}}
	}
	root := p.node(m, 1)
	if len(p.errs) > 0 {
		return nil, p.errs // in document order: keys sorted, indexes ascending
	}
	n := countAlternatives(root)
	if n > MaxAlternatives {
		return nil, Errors{{Msg: fmt.Sprintf("pattern expands to more than %d alternatives ($or and exists:false choices multiply)", MaxAlternatives)}}
	}
	return &Pattern{root: root, alts: expand(root, nil), ref: refAlternatives(root)}, nil
}

// String returns the pattern as canonical JSON (sorted keys, normalised
// conditions).
func (p *Pattern) String() string {
	var b strings.Builder
	writeNode(&b, p.root)
	return b.String()
}

func writeNode(b *strings.Builder, n *node) {
	b.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			b.WriteByte(',')
		}
		first = false
	}
	writeOrs := func() {
		for _, group := range n.ors {
			sep()
			b.WriteString(`"$or":[`)
			for i, alt := range group {
				if i > 0 {
					b.WriteByte(',')
				}
				writeNode(b, alt)
			}
			b.WriteByte(']')
		}
	}
	wroteOrs := false
	for _, f := range n.fields {
		if !wroteOrs && f.key > "$or" {
			writeOrs()
			wroteOrs = true
		}
		sep()
		k, _ := json.Marshal(f.key)
		b.Write(k)
		b.WriteByte(':')
		if f.obj != nil {
			writeNode(b, f.obj)
			continue
		}
		b.WriteByte('[')
		for i := range f.conds {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(f.conds[i].canon())
		}
		b.WriteByte(']')
	}
	if !wroteOrs {
		writeOrs()
	}
	b.WriteByte('}')
}

// parser collects every error with the path where it was found.
type parser struct {
	path   []any
	errs   Errors
	nconds int
}

func (p *parser) push(s any) { p.path = append(p.path, s) }
func (p *parser) pop()       { p.path = p.path[:len(p.path)-1] }

func (p *parser) fail(format string, args ...any) {
	segs := slices.Clone(p.path)
	p.errs = append(p.errs, &Error{Segments: segs, Path: formatPath(segs), Msg: fmt.Sprintf(format, args...)})
}

// object accepts the map types YAML and JSON decoders produce.
func (p *parser) object(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			ks, ok := k.(string)
			if !ok {
				p.fail("object key %v is not a string", k)
				continue
			}
			out[ks] = v
		}
		return out, true
	}
	return nil, false
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (p *parser) node(m map[string]any, depth int) *node {
	if depth > MaxDepth {
		p.fail("nested deeper than %d levels", MaxDepth)
		return nil
	}
	if len(m) == 0 {
		p.fail("empty object: give at least one field")
		return nil
	}
	n := &node{}
	for _, k := range sortedKeys(m) {
		v := m[k]
		p.push(k)
		if k == "$or" {
			if group := p.or(v, depth); group != nil {
				n.ors = append(n.ors, group)
			}
			p.pop()
			continue
		}
		if list, ok := v.([]any); ok {
			if conds := p.conds(list); conds != nil {
				n.fields = append(n.fields, fieldPat{key: k, conds: conds})
			}
		} else if obj, ok := p.object(v); ok {
			if child := p.node(obj, depth+1); child != nil {
				n.fields = append(n.fields, fieldPat{key: k, obj: child})
			}
		} else {
			p.fail("must be an array of match conditions or an object, not %s", describe(v))
		}
		p.pop()
	}
	return n
}

func (p *parser) or(v any, depth int) []*node {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		p.fail(`"$or" must be a non-empty array of objects`)
		return nil
	}
	var group []*node
	for i, alt := range list {
		p.push(i)
		if m, ok := p.object(alt); ok {
			if n := p.node(m, depth+1); n != nil {
				group = append(group, n)
			}
		} else {
			p.fail(`"$or" alternatives must be objects, not %s`, describe(alt))
		}
		p.pop()
	}
	if len(group) != len(list) {
		return nil
	}
	return group
}

func (p *parser) conds(list []any) []cond {
	if len(list) == 0 {
		p.fail("empty condition array matches nothing; give at least one condition")
		return nil
	}
	var out []cond
	ok := true
	for i, v := range list {
		p.push(i)
		p.nconds++
		if p.nconds == MaxConditions+1 {
			p.fail("more than %d match conditions in the pattern", MaxConditions)
		}
		c, good := p.cond(v)
		ok = ok && good
		out = append(out, c)
		p.pop()
	}
	if !ok {
		return nil
	}
	return out
}

// scalar converts an exact-match value; ok is false (and nothing is
// reported) when v is not a scalar.
func (p *parser) scalar(v any) (value, bool) {
	switch x := v.(type) {
	case nil:
		return value{kind: kNull}, true
	case bool:
		return boolValue(x), true
	case string:
		return stringValue(x), true
	}
	if f, isNum := p.number(v); isNum {
		return numberValue(f), true
	}
	return value{}, false
}

// number converts the numeric types YAML and JSON decoders produce. A
// number that is not finite is reported (with the current path) and read as 0.
func (p *parser) number(v any) (float64, bool) {
	var f float64
	switch x := v.(type) {
	case int:
		f = float64(x)
	case int8:
		f = float64(x)
	case int16:
		f = float64(x)
	case int32:
		f = float64(x)
	case int64:
		f = float64(x)
	case uint:
		f = float64(x)
	case uint8:
		f = float64(x)
	case uint16:
		f = float64(x)
	case uint32:
		f = float64(x)
	case uint64:
		f = float64(x)
	case float32:
		f = float64(x)
	case float64:
		f = x
	case json.Number:
		var err error
		f, err = strconv.ParseFloat(string(x), 64)
		if err != nil {
			p.fail("number %s is out of range", x)
			return 0, true
		}
	default:
		return 0, false
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		p.fail("number must be finite")
		return 0, true
	}
	return f, true
}

func (p *parser) cond(v any) (cond, bool) {
	if val, ok := p.scalar(v); ok {
		return cond{kind: cExact, val: val}, true
	}
	m, ok := p.object(v)
	if !ok || len(m) != 1 {
		p.fail("a match condition is a value or an object with exactly one operator, not %s", describe(v))
		return cond{}, false
	}
	var op string
	var arg any
	for op, arg = range m {
	}
	p.push(op)
	defer p.pop()
	nerr := len(p.errs)
	var c cond
	switch op {
	case "prefix", "suffix":
		plain, fold := cPrefix, cPrefixFold
		if op == "suffix" {
			plain, fold = cSuffix, cSuffixFold
		}
		if s, ok := arg.(string); ok {
			c = cond{kind: plain, str: s}
		} else if s, ok := p.foldArg(arg); ok {
			c = cond{kind: fold, str: s}
		} else {
			p.fail(`%s takes a string or {"equals-ignore-case": string}`, op)
		}
	case "equals-ignore-case":
		if s, ok := arg.(string); ok {
			c = cond{kind: cEqualsFold, str: s}
		} else {
			p.fail("equals-ignore-case takes a string")
		}
	case "wildcard":
		c = p.wildcard(arg)
	case "anything-but":
		c = p.anythingBut(arg)
	case "numeric":
		c = p.numeric(arg)
	case "exists":
		if b, ok := arg.(bool); ok {
			c = cond{kind: cExists, exists: b}
		} else {
			p.fail("exists takes true or false")
		}
	case "cidr":
		s, ok := arg.(string)
		pfx, err := netip.ParsePrefix(s)
		if !ok || err != nil {
			p.fail("cidr takes an IPv4 or IPv6 prefix such as \"10.0.0.0/24\"")
		}
		c = cond{kind: cCIDR, cidr: pfx.Masked()}
	default:
		p.fail("unknown operator %q", op)
	}
	return c, len(p.errs) == nerr
}

// foldArg reads {"equals-ignore-case": string}, the operand of the
// case-insensitive prefix and suffix forms.
func (p *parser) foldArg(arg any) (string, bool) {
	m, ok := arg.(map[string]any)
	if !ok {
		if mm, isAny := arg.(map[any]any); isAny {
			m, ok = p.object(mm)
		}
	}
	if !ok || len(m) != 1 {
		return "", false
	}
	s, ok := m["equals-ignore-case"].(string)
	return s, ok
}

func (p *parser) wildcard(arg any) cond {
	s, ok := arg.(string)
	if !ok {
		p.fail("wildcard takes a string")
		return cond{}
	}
	parts, msg := parseWildcard(s)
	if msg != "" {
		p.fail("%s", msg)
		return cond{}
	}
	return cond{kind: cWildcard, str: s, parts: parts}
}

func (p *parser) anythingBut(arg any) cond {
	c := cond{kind: cAnythingBut}
	exact := func(v any) bool {
		switch v.(type) {
		case string:
			c.not = append(c.not, cond{kind: cExact, val: stringValue(v.(string))})
			return true
		case nil, bool:
			return false
		}
		if f, ok := p.number(v); ok {
			c.not = append(c.not, cond{kind: cExact, val: numberValue(f)})
			return true
		}
		return false
	}
	switch x := arg.(type) {
	case []any:
		if len(x) == 0 {
			p.fail("anything-but needs at least one value")
		}
		for i, v := range x {
			if !exact(v) {
				p.push(i)
				p.fail("anything-but lists only strings and numbers")
				p.pop()
			}
		}
		return c
	case map[string]any, map[any]any:
		m, _ := p.object(x)
		if len(m) != 1 {
			p.fail("anything-but takes one of prefix, suffix, equals-ignore-case or wildcard")
			return c
		}
		for op, v := range m {
			p.push(op)
			switch op {
			case "prefix", "suffix":
				kind := cPrefix
				if op == "suffix" {
					kind = cSuffix
				}
				if s, ok := v.(string); ok {
					c.not = append(c.not, cond{kind: kind, str: s})
				} else {
					p.fail("%s takes a string", op)
				}
			case "equals-ignore-case", "wildcard":
				list, isList := v.([]any)
				if !isList {
					list = []any{v}
				}
				if len(list) == 0 {
					p.fail("%s needs at least one string", op)
				}
				for _, item := range list {
					s, ok := item.(string)
					if !ok {
						p.fail("%s takes a string or a list of strings", op)
						break
					}
					if op == "wildcard" {
						w := p.wildcard(s)
						if w.parts != nil {
							c.not = append(c.not, w)
						}
					} else {
						c.not = append(c.not, cond{kind: cEqualsFold, str: s})
					}
				}
			default:
				p.fail("anything-but takes one of prefix, suffix, equals-ignore-case or wildcard, not %q", op)
			}
			p.pop()
		}
		return c
	}
	if !exact(arg) {
		p.fail("anything-but takes a string, a number, a list of them, or an object with prefix, suffix, equals-ignore-case or wildcard")
	}
	return c
}

func (p *parser) numeric(arg any) cond {
	list, ok := arg.([]any)
	if !ok || (len(list) != 2 && len(list) != 4) {
		p.fail(`numeric takes one or two comparisons, e.g. [">", 0, "<=", 5]`)
		return cond{}
	}
	var r numRange
	for i := 0; i < len(list); i += 2 {
		op, ok := list[i].(string)
		p.push(i + 1)
		f, isNum := p.number(list[i+1])
		if !isNum {
			p.fail("numeric compares with a number, not %s", describe(list[i+1]))
		}
		p.pop()
		if !ok {
			p.push(i)
			p.fail(`numeric operator must be one of "=", "<", "<=", ">", ">="`)
			p.pop()
			continue
		}
		switch op {
		case "=":
			if len(list) != 2 {
				p.fail(`"=" cannot be combined with another comparison`)
			}
			r = numRange{lo: f, hi: f, hasLo: true, hasHi: true, loIncl: true, hiIncl: true}
		case ">", ">=":
			if r.hasLo {
				p.fail("numeric has two lower bounds")
			}
			r.lo, r.hasLo, r.loIncl = f, true, op == ">="
		case "<", "<=":
			if r.hasHi {
				p.fail("numeric has two upper bounds")
			}
			r.hi, r.hasHi, r.hiIncl = f, true, op == "<="
		default:
			p.push(i)
			p.fail(`numeric operator must be one of "=", "<", "<=", ">", ">=", not %q`, op)
			p.pop()
		}
	}
	if len(list) == 4 && r.hasLo && r.hasHi && !(r.lo < r.hi) {
		p.fail("numeric range is empty: the lower bound must be below the upper bound")
	}
	return cond{kind: cNumeric, rng: r}
}

func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any, map[any]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
