package pattern

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// pathNode is the matcher's trie of the paths its rules use: the scanner
// descends it while reading event data, emits only leaves whose path a rule
// uses, and only validates (without decoding) everything else.
type pathNode struct {
	kids map[string]*pathNode // used while building
	pid  int32                // id of this exact path, or -1 if no rule uses it as a leaf
	// Frozen lookup: the kids' names grouped by length, so that finding a
	// key compares it with the one or two names of its length instead of
	// hashing it (every key of the event's objects is looked up).
	names  []string
	nodes  []*pathNode
	byLen  [][]int32 // names[i] for i in byLen[len(key)]
	longer map[string]*pathNode
}

// maxKidLen is the longest name found through byLen; longer ones (rare)
// go through a map.
const maxKidLen = 64

// kid returns the child for key, or nil.
func (n *pathNode) kid(key string) *pathNode {
	if len(key) >= len(n.byLen) {
		return n.longer[key]
	}
	for _, i := range n.byLen[len(key)] {
		if n.names[i] == key {
			return n.nodes[i]
		}
	}
	return nil
}

// freeze builds the frozen lookups of the trie.
func (n *pathNode) freeze() {
	for name, kid := range n.kids {
		kid.freeze()
		if len(name) > maxKidLen {
			if n.longer == nil {
				n.longer = map[string]*pathNode{}
			}
			n.longer[name] = kid
			continue
		}
		for len(n.byLen) <= len(name) {
			n.byLen = append(n.byLen, nil)
		}
		n.byLen[len(name)] = append(n.byLen[len(name)], int32(len(n.names)))
		n.names = append(n.names, name)
		n.nodes = append(n.nodes, kid)
	}
}

// scanner flattens one JSON document in a single pass. It accepts exactly
// what encoding/json accepts (and decodes strings the same way, falling
// back to it for escapes and invalid UTF-8), except that a repeated key in
// an object makes the document invalid, like decodeJSON.
//
// In full mode it emits every leaf with its encoded path (Flatten);
// otherwise it emits leaves whose pathNode has a path id (Match).
type scanner struct {
	s     string
	i     int
	depth int

	full bool
	path []byte // full mode: encoded path of the current value

	hops    []hop // arrays entered on the way to the current value
	trail   []hop // copy of hops at the innermost enclosing object
	nextArr int32
	keys    []string // keys of the objects being read, for duplicate detection

	out   []flatField
	arena []hop // backing store of the emitted trails
}

var errSyntax = errors.New("invalid JSON")

// scan reads the whole document; root is the path node of the document
// itself (nil in full mode).
func (sc *scanner) scan(root *pathNode) error {
	sc.ws()
	if err := sc.value(root, true); err != nil {
		return err
	}
	sc.ws()
	if sc.i != len(sc.s) {
		return fmt.Errorf("%w: data after the top-level value at offset %d", errSyntax, sc.i)
	}
	return nil
}

func (sc *scanner) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", errSyntax, what, sc.i)
}

func (sc *scanner) ws() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

// value reads one value. n is its path node and emit says whether its
// leaves may be emitted (false below a key no rule uses).
func (sc *scanner) value(n *pathNode, emit bool) error {
	if sc.i >= len(sc.s) {
		return sc.fail("unexpected end")
	}
	switch c := sc.s[sc.i]; c {
	case '{':
		return sc.object(n, emit)
	case '[':
		return sc.array(n, emit)
	case '"':
		str, err := sc.str()
		if err != nil {
			return err
		}
		sc.leaf(n, emit, stringValue(str))
		return nil
	case 't':
		return sc.literal("true", n, emit, value{kind: kTrue})
	case 'f':
		return sc.literal("false", n, emit, value{kind: kFalse})
	case 'n':
		return sc.literal("null", n, emit, value{kind: kNull})
	default:
		if c == '-' || c >= '0' && c <= '9' {
			f, err := sc.number(emit && (sc.full || n != nil && n.pid >= 0))
			if err != nil {
				return err
			}
			sc.leaf(n, emit, numberValue(f))
			return nil
		}
		return sc.fail("unexpected character")
	}
}

func (sc *scanner) leaf(n *pathNode, emit bool, v value) {
	if !emit {
		return
	}
	if sc.full {
		sc.out = append(sc.out, flatField{path: string(sc.path), val: v, trail: sc.trail})
	} else if n != nil && n.pid >= 0 {
		sc.out = append(sc.out, flatField{pid: n.pid, val: v, trail: sc.trail})
	}
}

func (sc *scanner) literal(lit string, n *pathNode, emit bool, v value) error {
	if len(sc.s)-sc.i < len(lit) || sc.s[sc.i:sc.i+len(lit)] != lit {
		return sc.fail("invalid literal")
	}
	sc.i += len(lit)
	sc.leaf(n, emit, v)
	return nil
}

func (sc *scanner) enter() error {
	sc.depth++
	if sc.depth > maxJSONDepth {
		return sc.fail("nested too deeply")
	}
	sc.i++
	return nil
}

func (sc *scanner) object(n *pathNode, emit bool) error {
	if err := sc.enter(); err != nil {
		return err
	}
	savedTrail := sc.trail
	if emit && len(sc.hops) > len(sc.trail) {
		start := len(sc.arena)
		sc.arena = append(sc.arena, sc.hops...)
		sc.trail = sc.arena[start:len(sc.arena):len(sc.arena)]
	}
	keysBase := len(sc.keys)
	var seen map[string]struct{} // only for large objects
	pathLen := len(sc.path)
	sc.ws()
	if sc.i < len(sc.s) && sc.s[sc.i] == '}' {
		sc.i++
	} else {
		for {
			if sc.i >= len(sc.s) || sc.s[sc.i] != '"' {
				return sc.fail("expected an object key")
			}
			key, err := sc.str()
			if err != nil {
				return err
			}
			if seen != nil {
				if _, dup := seen[key]; dup {
					return sc.fail("duplicate key")
				}
				seen[key] = struct{}{}
			} else {
				for _, k := range sc.keys[keysBase:] {
					if k == key {
						return sc.fail("duplicate key")
					}
				}
				sc.keys = append(sc.keys, key)
				if len(sc.keys)-keysBase > 32 {
					seen = make(map[string]struct{}, 64)
					for _, k := range sc.keys[keysBase:] {
						seen[k] = struct{}{}
					}
				}
			}
			sc.ws()
			if sc.i >= len(sc.s) || sc.s[sc.i] != ':' {
				return sc.fail("expected ':'")
			}
			sc.i++
			sc.ws()
			var child *pathNode
			childEmit := emit
			if sc.full {
				if emit {
					sc.path = appendSegment(append(sc.path, '.'), key)
				}
			} else {
				if n != nil {
					child = n.kid(key)
				}
				childEmit = emit && child != nil
			}
			if err := sc.value(child, childEmit); err != nil {
				return err
			}
			sc.path = sc.path[:pathLen]
			sc.ws()
			if sc.i < len(sc.s) && sc.s[sc.i] == ',' {
				sc.i++
				sc.ws()
				continue
			}
			if sc.i < len(sc.s) && sc.s[sc.i] == '}' {
				sc.i++
				break
			}
			return sc.fail("expected ',' or '}'")
		}
	}
	sc.keys = sc.keys[:keysBase]
	sc.trail = savedTrail
	sc.depth--
	return nil
}

func (sc *scanner) array(n *pathNode, emit bool) error {
	if err := sc.enter(); err != nil {
		return err
	}
	var id int32
	if emit {
		id = sc.nextArr
		sc.nextArr++
	}
	sc.ws()
	if sc.i < len(sc.s) && sc.s[sc.i] == ']' {
		sc.i++
		sc.depth--
		return nil
	}
	for idx := int32(0); ; idx++ {
		if emit {
			sc.hops = append(sc.hops, hop{id, idx})
		}
		if err := sc.value(n, emit); err != nil {
			return err
		}
		if emit {
			sc.hops = sc.hops[:len(sc.hops)-1]
		}
		sc.ws()
		if sc.i < len(sc.s) && sc.s[sc.i] == ',' {
			sc.i++
			sc.ws()
			continue
		}
		if sc.i < len(sc.s) && sc.s[sc.i] == ']' {
			sc.i++
			break
		}
		return sc.fail("expected ',' or ']'")
	}
	sc.depth--
	return nil
}

// str reads a string token. Plain strings (no escapes, valid UTF-8) are
// sliced from the input without copying; the rest are decoded by
// encoding/json so that escapes, surrogates and invalid bytes come out
// exactly as encoding/json decodes them.
func (sc *scanner) str() (string, error) {
	start := sc.i
	sc.i++
	// Fast path: find the closing quote, then check the body in one tight
	// loop for what needs care (escapes, control characters, non-ASCII).
	if end := strings.IndexByte(sc.s[sc.i:], '"'); end >= 0 {
		if body := sc.s[sc.i : sc.i+end]; plainASCII(body) {
			sc.i += end + 1
			return body, nil
		}
	}
	plain, ascii := true, true
	for {
		if sc.i >= len(sc.s) {
			return "", sc.fail("unterminated string")
		}
		c := sc.s[sc.i]
		switch {
		case c == '"':
			sc.i++
			body := sc.s[start+1 : sc.i-1]
			if plain && (ascii || utf8.ValidString(body)) {
				return body, nil
			}
			var out string
			if err := json.Unmarshal([]byte(sc.s[start:sc.i]), &out); err != nil {
				return "", sc.fail("invalid string")
			}
			return out, nil
		case c == '\\':
			plain = false
			sc.i++
			if sc.i >= len(sc.s) {
				return "", sc.fail("unterminated escape")
			}
			switch sc.s[sc.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				sc.i++
			case 'u':
				if len(sc.s)-sc.i < 5 {
					return "", sc.fail("short \\u escape")
				}
				for _, h := range []byte(sc.s[sc.i+1 : sc.i+5]) {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return "", sc.fail("invalid \\u escape")
					}
				}
				sc.i += 5
			default:
				return "", sc.fail("invalid escape")
			}
		case c < 0x20:
			return "", sc.fail("control character in string")
		default:
			if c >= utf8.RuneSelf {
				ascii = false
			}
			sc.i++
		}
	}
}

// number reads a number token with JSON's grammar, and converts it when
// convert is set (a skipped number only needs checking). Out-of-range
// numbers read as ±Inf (strconv.ParseFloat's answer), as the reference view
// does.
func (sc *scanner) number(convert bool) (float64, error) {
	start := sc.i
	digits := func() int {
		n := 0
		for sc.i < len(sc.s) && sc.s[sc.i] >= '0' && sc.s[sc.i] <= '9' {
			sc.i++
			n++
		}
		return n
	}
	neg := sc.i < len(sc.s) && sc.s[sc.i] == '-'
	if neg {
		sc.i++
	}
	intStart := sc.i
	switch {
	case sc.i < len(sc.s) && sc.s[sc.i] == '0':
		sc.i++
	case digits() == 0:
		return 0, sc.fail("invalid number")
	}
	intEnd := sc.i
	simple := true
	if sc.i < len(sc.s) && sc.s[sc.i] == '.' {
		simple = false
		sc.i++
		if digits() == 0 {
			return 0, sc.fail("invalid number")
		}
	}
	if sc.i < len(sc.s) && (sc.s[sc.i] == 'e' || sc.s[sc.i] == 'E') {
		simple = false
		sc.i++
		if sc.i < len(sc.s) && (sc.s[sc.i] == '+' || sc.s[sc.i] == '-') {
			sc.i++
		}
		if digits() == 0 {
			return 0, sc.fail("invalid number")
		}
	}
	if !convert {
		return 0, nil
	}
	if simple && intEnd-intStart <= 15 {
		// Integers below 10^15 are exact in a float64: no need for ParseFloat.
		var n int64
		for _, d := range []byte(sc.s[intStart:intEnd]) {
			n = n*10 + int64(d-'0')
		}
		if neg {
			n = -n
		}
		return float64(n), nil
	}
	f, _ := strconv.ParseFloat(sc.s[start:sc.i], 64)
	return f, nil
}

// plainASCII reports whether s has no escape, control character or
// non-ASCII byte, checking eight bytes per step: a word has a byte below
// 0x20 when (w - 0x20 in each byte) borrows into a high bit the byte did not
// have, a backslash when w XOR 0x5c..5c has a zero byte (found the same
// way), and a non-ASCII byte when a high bit is set.
func plainASCII(s string) bool {
	const (
		ones = 0x0101010101010101
		high = 0x8080808080808080
	)
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		b := w ^ (ones * '\\')
		if (w|((w-ones*0x20)&^w)|((b-ones)&^b))&high != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
