package pattern

import (
	"encoding/json"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// kind is the type of a leaf value, in events and in exact-match conditions.
type kind uint8

const (
	kString kind = iota
	kNumber
	kTrue
	kFalse
	kNull
)

// value is one leaf value: a string, a number (always a float64: 300 and
// 300.0 are the same number), true, false or null.
type value struct {
	kind kind
	str  string
	num  float64
}

func stringValue(s string) value { return value{kind: kString, str: s} }

// numberValue normalises -0 to 0 so that hash lookups agree with ==.
func numberValue(f float64) value {
	if f == 0 {
		f = 0
	}
	return value{kind: kNumber, num: f}
}

func boolValue(b bool) value {
	if b {
		return value{kind: kTrue}
	}
	return value{kind: kFalse}
}

// any returns v as encoding/json would decode it: string, float64, bool or nil.
func (v value) any() any {
	switch v.kind {
	case kString:
		return v.str
	case kNumber:
		return v.num
	case kTrue:
		return true
	case kFalse:
		return false
	}
	return nil
}

func (v value) json() string {
	switch v.kind {
	case kString:
		b, _ := json.Marshal(v.str)
		return string(b)
	case kNumber:
		return formatNumber(v.num)
	case kTrue:
		return "true"
	case kFalse:
		return "false"
	}
	return "null"
}

func formatNumber(f float64) string {
	if math.IsInf(f, 0) {
		// Out-of-range event numbers parse to ±Inf; JSON has no spelling for them.
		if f > 0 {
			return "1e999"
		}
		return "-1e999"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// condKind is the operator of one match condition.
type condKind uint8

const (
	cExact       condKind = iota // val
	cPrefix                      // str
	cSuffix                      // str
	cPrefixFold                  // str; prefix, ignoring case
	cSuffixFold                  // str; suffix, ignoring case
	cEqualsFold                  // str
	cWildcard                    // str (source text), parts
	cNumeric                     // rng
	cExists                      // exists
	cCIDR                        // cidr
	cAnythingBut                 // not: matches a present leaf none of not matches
)

// cond is one element of a pattern's condition array.
type cond struct {
	kind   condKind
	val    value        // cExact
	str    string       // string operand of the string operators
	parts  []string     // cWildcard: literal parts between the stars
	rng    numRange     // cNumeric
	exists bool         // cExists
	cidr   netip.Prefix // cCIDR, masked
	not    []cond       // cAnythingBut: exact, prefix, suffix, equals-ignore-case or wildcard
}

// numRange is an interval of numbers; a missing bound is unbounded.
type numRange struct {
	lo, hi         float64
	hasLo, hasHi   bool
	loIncl, hiIncl bool
}

func (r *numRange) contains(f float64) bool {
	if r.hasLo && (f < r.lo || f == r.lo && !r.loIncl) {
		return false
	}
	return !r.hasHi || f < r.hi || f == r.hi && r.hiIncl
}

// rank classes an operator by how much it usually discriminates (exact
// values first, exists:true last). It orders steps canonically; Build's
// selectivity estimates, made from the whole rule set, decide the walk
// order.
func (c *cond) rank() int {
	switch c.kind {
	case cExact, cEqualsFold:
		return 0
	case cPrefix, cSuffix, cPrefixFold, cSuffixFold, cCIDR:
		return 1
	case cWildcard:
		if len(c.parts[0]) > 0 || len(c.parts[len(c.parts)-1]) > 0 {
			return 1
		}
		return 3
	case cNumeric:
		return 2
	case cAnythingBut:
		return 3
	}
	return 4 // exists: true
}

// canon is the condition's canonical JSON, used by Pattern.String and to
// share automaton states between rules with identical steps.
func (c *cond) canon() string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	switch c.kind {
	case cExact:
		return c.val.json()
	case cPrefix:
		return `{"prefix":` + q(c.str) + `}`
	case cSuffix:
		return `{"suffix":` + q(c.str) + `}`
	case cPrefixFold:
		return `{"prefix":{"equals-ignore-case":` + q(c.str) + `}}`
	case cSuffixFold:
		return `{"suffix":{"equals-ignore-case":` + q(c.str) + `}}`
	case cEqualsFold:
		return `{"equals-ignore-case":` + q(c.str) + `}`
	case cWildcard:
		return `{"wildcard":` + q(c.str) + `}`
	case cNumeric:
		r := c.rng
		if r.hasLo && r.hasHi && r.lo == r.hi {
			return `{"numeric":["=",` + formatNumber(r.lo) + `]}`
		}
		var parts []string
		if r.hasLo {
			op := ">"
			if r.loIncl {
				op = ">="
			}
			parts = append(parts, `"`+op+`",`+formatNumber(r.lo))
		}
		if r.hasHi {
			op := "<"
			if r.hiIncl {
				op = "<="
			}
			parts = append(parts, `"`+op+`",`+formatNumber(r.hi))
		}
		return `{"numeric":[` + strings.Join(parts, ",") + `]}`
	case cExists:
		return `{"exists":` + strconv.FormatBool(c.exists) + `}`
	case cCIDR:
		return `{"cidr":` + q(c.cidr.String()) + `}`
	case cAnythingBut:
		// Parse gives every exclusion of one anything-but the same kind.
		inner := make([]string, len(c.not))
		for i := range c.not {
			if c.not[i].kind == cExact {
				inner[i] = c.not[i].val.json()
			} else {
				inner[i] = q(c.not[i].str)
			}
		}
		list := `[` + strings.Join(inner, ",") + `]`
		switch c.not[0].kind {
		case cPrefix:
			return `{"anything-but":{"prefix":` + inner[0] + `}}`
		case cSuffix:
			return `{"anything-but":{"suffix":` + inner[0] + `}}`
		case cEqualsFold:
			return `{"anything-but":{"equals-ignore-case":` + list + `}}`
		case cWildcard:
			return `{"anything-but":{"wildcard":` + list + `}}`
		}
		return `{"anything-but":` + list + `}`
	}
	return "?"
}

// parseWildcard splits a wildcard into its literal parts: "a*b\*c*" gives
// ["a", "b*c", ""]. Escapes are `\*` and `\\`; two stars in a row are
// refused, as EventBridge does, since they mean nothing more than one.
func parseWildcard(s string) ([]string, string) {
	var parts []string
	var cur strings.Builder
	prevStar := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 >= len(s) {
				return nil, "wildcard ends with an unfinished escape"
			}
			i++
			if s[i] != '*' && s[i] != '\\' {
				return nil, `wildcard escapes only "*" and "\"`
			}
			cur.WriteByte(s[i])
			prevStar = false
		case '*':
			if prevStar {
				return nil, "wildcard has consecutive stars"
			}
			parts = append(parts, cur.String())
			cur.Reset()
			prevStar = true
		default:
			cur.WriteByte(s[i])
			prevStar = false
		}
	}
	return append(parts, cur.String()), ""
}

// wildMatch reports whether s matches the wildcard whose literal parts are
// parts (stars between them). Leftmost-first placement of the middle parts
// is optimal for star-only globs, so no backtracking is needed.
func wildMatch(parts []string, s string) bool {
	if len(parts) == 1 {
		return s == parts[0]
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// foldRune maps r to the smallest rune of its simple case-folding orbit, so
// that strings.EqualFold(a, b) holds exactly when the folded forms are equal.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		// ASCII upper case is the smallest member of its orbit (the other
		// members of k's and s's orbits, U+212A and U+017F, are larger).
		if 'a' <= r && r <= 'z' {
			return r - 'a' + 'A'
		}
		return r
	}
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < m {
			m = f
		}
	}
	return m
}

// appendFold appends the case-folded form of s to dst. Invalid UTF-8 bytes
// become U+FFFD, as strings.EqualFold sees them.
func appendFold(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			for _, r := range s[i:] {
				dst = utf8.AppendRune(dst, foldRune(r))
			}
			return dst
		}
		c := s[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

func foldString(s string) string { return string(appendFold(nil, s)) }
