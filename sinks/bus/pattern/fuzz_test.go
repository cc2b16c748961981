package pattern

import (
	"encoding/json"
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// gen turns fuzzer bytes into choices. Once the bytes run out it goes on
// with a PRNG seeded by them: the fuzzer's mutations alone produce
// low-entropy inputs that rarely build the nested arrays the interesting
// cases need, while a seeded stream keeps every input deterministic.
type gen struct {
	b   []byte
	rng *rand.Rand

	// The vocabulary of this input: the first byte chooses the wide one
	// (every operator sees matching and non-matching values) or the narrow
	// one (two keys, two strings, arrays of objects everywhere), where
	// patterns and events collide on nested arrays often enough to exercise
	// array consistency and exists:false.
	keys    []string
	strs    []string
	nums    []float64
	objArrs int // out of 10: how often a value is an array of objects
}

func newGen(data []byte) *gen {
	h := fnv.New64a()
	h.Write(data)
	g := &gen{b: data, rng: rand.New(rand.NewPCG(h.Sum64(), 1)), keys: genKeys, strs: genStrings, nums: genNumbers, objArrs: 2}
	if g.n(2) == 1 {
		g.keys, g.strs, g.nums, g.objArrs = []string{"a", "b"}, []string{"a", "b"}, []float64{0, 1}, 4
	}
	return g
}

func (g *gen) next() int {
	if len(g.b) == 0 {
		return int(g.rng.Uint32() & 0xff)
	}
	c := g.b[0]
	g.b = g.b[1:]
	return int(c)
}

func (g *gen) n(k int) int { return g.next() % k }

func pick[T any](g *gen, xs []T) T { return xs[g.n(len(xs))] }

// A deliberately small vocabulary, so that random patterns and random
// events collide often: every operator sees matching and non-matching
// values, case variants (including the Kelvin sign and long s, which fold
// with ASCII k and s), wildcard metacharacters, IP addresses and numbers
// that are equal in different spellings.
var (
	genKeys    = []string{"a", "b", "c", "d.e", `x\y`}
	genStrings = []string{"", "a", "ab", "abc", "A", "AB", "b", "ba", "bab", "k", "K", "\u212a", "s", "\u017f", "a*b", `a\b`, "*", "10.0.0.1", "10.0.1.7", "192.168.1.1", "::1", "2001:db8::5", "::ffff:10.0.0.9", "ß", "ÄÖ", "äö", "\xff"}
	genNumbers = []float64{0, 1, -1, 1.5, 5, 300, 1e9, -0.5}
)

func (g *gen) scalar() any {
	switch g.n(8) {
	case 0, 1, 2, 3:
		return pick(g, g.strs)
	case 4, 5:
		return pick(g, g.nums)
	case 6:
		return g.n(2) == 0
	}
	return nil
}

// eventValue is a random JSON value for event data.
func (g *gen) eventValue(depth int) any {
	switch k := g.n(10); {
	case depth < 3 && k < 3:
		return g.eventObject(depth + 1)
	case depth < 3 && k < 5:
		arr := []any{}
		for range g.n(4) {
			arr = append(arr, g.eventValue(depth+1))
		}
		return arr
	case depth < 3 && k < 5+g.objArrs: // arrays of objects exercise array consistency
		arr := []any{}
		for range 1 + g.n(3) {
			arr = append(arr, g.eventObject(depth+1))
		}
		return arr
	}
	return g.scalar()
}

func (g *gen) eventObject(depth int) map[string]any {
	m := map[string]any{}
	for range g.n(4) {
		m[pick(g, g.keys)] = g.eventValue(depth)
	}
	return m
}

func (g *gen) event() *cloudevents.Event {
	e := cloudevents.NewEvent()
	e.SetID("id")
	e.SetSource(pick(g, g.strs))
	e.SetType(pick(g, g.strs))
	if g.n(2) == 0 {
		e.SetSubject(pick(g, g.strs))
	}
	switch g.n(4) {
	case 0:
		e.SetExtension("ext", int32(pick(g, g.nums)))
	case 1:
		e.SetExtension("ext", g.n(2) == 0)
	case 2:
		e.SetExtension("ext", pick(g, g.strs))
	}
	if g.n(5) != 0 {
		var data any = g.eventObject(1)
		if g.n(6) == 0 {
			data = g.eventValue(1)
		}
		_ = e.SetData(cloudevents.ApplicationJSON, data)
	}
	return &e
}

// condition is a random match condition, valid or (rarely) not.
func (g *gen) condition() any {
	str := func() string { return pick(g, g.strs) }
	obj := func(k string, v any) any { return map[string]any{k: v} }
	switch g.n(16) {
	case 0, 1, 2:
		return g.scalar()
	case 3:
		return obj("prefix", str())
	case 4:
		return obj("suffix", str())
	case 5:
		return obj(pick(g, []string{"prefix", "suffix"}), obj("equals-ignore-case", str()))
	case 6:
		return obj("equals-ignore-case", str())
	case 7:
		return obj("wildcard", pick(g, []string{"*", "a*", "*b", "a*b", "*a*", `a\*b`, "k*", "*b*b", "b*a*b", `a\\b`}))
	case 8:
		switch g.n(5) {
		case 0:
			return obj("anything-but", str())
		case 1:
			return obj("anything-but", pick(g, g.nums))
		case 2:
			return obj("anything-but", []any{str(), pick(g, g.nums), str()})
		case 3:
			return obj("anything-but", obj(pick(g, []string{"prefix", "suffix", "equals-ignore-case"}), str()))
		}
		return obj("anything-but", obj("wildcard", pick(g, []string{"a*", "*b", "*"})))
	case 9, 10:
		ops := []string{"<", "<=", ">", ">=", "="}
		if g.n(2) == 0 {
			return obj("numeric", []any{pick(g, ops), pick(g, g.nums)})
		}
		return obj("numeric", []any{pick(g, ops[2:4]), pick(g, g.nums), pick(g, ops[:2]), pick(g, g.nums)})
	case 11, 12:
		return obj("exists", g.n(3) != 0)
	case 13:
		return obj("cidr", pick(g, []string{"10.0.0.0/24", "10.0.0.0/8", "192.168.0.0/16", "::1/128", "2001:db8::/32", "0.0.0.0/0"}))
	}
	return obj("exists", false)
}

func (g *gen) patternObject(depth int, top bool) map[string]any {
	m := map[string]any{}
	keys := g.keys
	if top {
		keys = []string{"source", "type", "subject", "ext", "data", "data", "data"}
	}
	for range 1 + g.n(3) {
		k := pick(g, keys)
		if g.n(6) == 0 && depth < 4 {
			alts := []any{}
			for range 1 + g.n(3) {
				alts = append(alts, g.patternObject(depth+1, top))
			}
			m["$or"] = alts
			continue
		}
		if (k == "data" || !top) && depth < 4 && g.n(3) == 0 || top && k == "data" {
			m[k] = g.patternObject(depth+1, false)
			continue
		}
		var conds []any
		for range 1 + g.n(3) {
			conds = append(conds, g.condition())
		}
		m[k] = conds
	}
	return m
}

// FuzzMatcher checks the automaton against the reference matcher: random
// rule sets and random events from the same small vocabulary, and every
// rule's verdict must agree, through Match and through MatchFields, with
// few conditions checked inline (the default) and with every condition
// going through the indexes.
func FuzzMatcher(f *testing.F) {
	for _, s := range []string{"", "\x01\x02\x03", "\x05\x00\x07\x09\x03\x01\x02", strings.Repeat("\x11\x93\x27", 30), strings.Repeat("\xfe\x01\x80\x33\x00", 40)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g := newGen(data)
		var pats []*Pattern
		b := NewBuilder()
		for i := range 1 + g.n(6) {
			p, err := Parse(g.patternObject(1, true))
			if err != nil {
				continue
			}
			if err := b.Add(string(rune('A'+i)), p); err != nil {
				t.Fatal(err)
			}
			pats = append(pats, p)
		}
		m := b.Build()
		b.linearMax = 0 // the same rules through the indexes only
		indexed := b.Build()
		for range 1 + g.n(4) {
			e := g.event()
			got := m.Match(e)
			var want []string
			for i, p := range pats {
				if ReferenceMatch(p, e) {
					want = append(want, m.ids[i])
				}
			}
			if viaIndexes := indexed.Match(e); !slices.Equal(viaIndexes, want) {
				ev, _ := json.Marshal(EventObject(e))
				t.Fatalf("indexed Match = %v, reference = %v\nevent: %s", viaIndexes, want, ev)
			}
			if !slices.Equal(got, want) {
				ev, _ := json.Marshal(EventObject(e))
				var rules []string
				for i, p := range pats {
					rules = append(rules, m.ids[i]+"="+p.String())
				}
				t.Fatalf("Match = %v, reference = %v\nevent: %s\nrules: %s", got, want, ev, strings.Join(rules, "\n       "))
			}
			flat, err := Flatten(e)
			if err != nil {
				t.Fatalf("Flatten: %v", err)
			}
			if viaFields := m.MatchFields(flat); !slices.Equal(viaFields, got) {
				t.Fatalf("MatchFields = %v, Match = %v", viaFields, got)
			}
		}
	})
}

// FuzzParse feeds arbitrary text to Parse: it must never panic, every
// error must be an Errors of *Error, and a parsed pattern must survive a
// round trip through its canonical String form.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"source":["a"]}`,
		`{"data":{"n":[{"numeric":[">",0,"<=",5]}],"s":[{"anything-but":{"prefix":"x"}}]}}`,
		`{"$or":[{"a":[1]},{"b":{"c":[{"exists":false}]}}]}`,
		`{"a":[{"wildcard":"a*\\*b"}],"b":[{"cidr":"10.0.0.0/8"}],"c":[{"prefix":{"equals-ignore-case":"X"}}]}`,
		`{"a":[{"numeric":["=",3.018e2]}],"b":[null,true,"",-0]}`,
		`{"a":[]}`, `[]`, `{"a":[{"wildcard":"**"}]}`, `{"a":{"a":{"a":{}}}}`, `{"a":1e999}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			var es Errors
			var pe *Error
			if !errors.As(err, &es) || len(es) == 0 || !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a non-empty Errors of *Error", err, err)
			}
			return
		}
		s := p.String()
		p2, err := Parse(s)
		if err != nil {
			t.Fatalf("canonical form %s does not parse: %v", s, err)
		}
		if s2 := p2.String(); s2 != s {
			t.Fatalf("canonical form changed on re-parse:\n%s\n%s", s, s2)
		}
	})
}

// FuzzFlatten compares the single-pass event scanner with the reference
// view built by encoding/json, on arbitrary data: both must accept the same
// documents (encoding/json's grammar, minus repeated keys) and yield the
// same leaves; the pruning scan must agree with the full one.
func FuzzFlatten(f *testing.F) {
	for _, s := range []string{
		`{"a":1}`, `{"a":[1,{"b":"x"}],"c":{"d":null}}`, `[1,[2,[3]]]`, `"s"`, `{"a":1,"a":2}`,
		`{"a":"\u00e9\ud800","b":"\xff"}`, `{"a":-0.0,"b":1e400,"c":0.1e-400}`, `{"a" : [ ] , "b" : { } }`, `01`, `{"a":1}x`, ` 1 `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e := cloudevents.NewEvent()
		e.SetID("i")
		e.SetSource("s")
		e.SetType("t")
		e.SetDataContentType(cloudevents.ApplicationJSON)
		e.DataEncoded = data
		flat, err := Flatten(&e)
		_, refErr := decodeJSON(data)
		if len(data) > 0 && (err == nil) != (refErr == nil) {
			t.Fatalf("Flatten error %v, reference error %v", err, refErr)
		}
		if refErr == nil && !json.Valid(data) {
			t.Fatalf("reference accepted invalid JSON")
		}
		if !sameFields(flat.Fields(), referenceFlatten(EventObject(&e))) {
			t.Fatalf("Flatten = %v\nreference = %v", flat.Fields(), referenceFlatten(EventObject(&e)))
		}
		// A matcher whose rules use a few data paths scans only those.
		b := NewBuilder()
		for i, src := range []string{`{"data":{"a":[{"exists":true}]}}`, `{"data":[{"exists":true}]}`, `{"data":{"a":{"b":[{"exists":false}]}}}`} {
			p, err := Parse(src)
			if err != nil {
				t.Fatal(err)
			}
			_ = b.Add(string(rune('0'+i)), p)
		}
		if got, want := b.Build().Match(&e), b.Build().MatchFields(flat); !slices.Equal(got, want) {
			t.Fatalf("pruned scan matched %v, full flatten %v", got, want)
		}
	})
}

// referenceFlatten lists the leaves of an event view with encoded paths.
func referenceFlatten(obj map[string]any) []Field {
	var out []Field
	var walk func(path []string, v any)
	walk = func(path []string, v any) {
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				walk(path, e)
			}
		case map[string]any:
			for k, c := range x {
				walk(append(path[:len(path):len(path)], k), c)
			}
		default:
			out = append(out, Field{Path: encodePath(path), Value: v})
		}
	}
	walk(nil, obj)
	return out
}

// sameFields reports whether two flattenings hold the same (path, value)
// multiset.
func sameFields(a, b []Field) bool {
	key := func(f Field) string {
		var v string
		switch x := f.Value.(type) {
		case float64:
			v = formatNumber(x)
		default:
			j, _ := json.Marshal(x)
			v = string(j)
		}
		return f.Path + "\x00" + v
	}
	ka := make([]string, len(a))
	for i := range a {
		ka[i] = key(a[i])
	}
	kb := make([]string, len(b))
	for i := range b {
		kb[i] = key(b[i])
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}
