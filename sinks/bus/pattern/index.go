package pattern

import (
	"bytes"
	"hash/maphash"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// valueMatcher indexes every condition on one path leaving one automaton
// state, and maps a leaf value to the targets (next-state ids; entry
// numbers, in an anything-but exclusion index) whose condition it
// satisfies. Each kind of condition has an index whose lookup cost depends
// on the value, not on how many conditions share it: hash tables for exact
// values, radix tries for
// prefixes and suffixes (over case-folded bytes for the ignore-case forms),
// a segment tree for numeric ranges, one hash map per prefix length for
// CIDR blocks, and complement lists for anything-but. It is immutable;
// vmBuilder makes it.
type valueMatcher struct {
	any    []int32 // exists:true
	strs   *strIndex
	nums   map[float64][]int32
	trues  []int32
	falses []int32
	nulls  []int32
	folds  *strIndex // equals-ignore-case, by folded form

	prefix, suffix         *radixTrie
	prefixFold, suffixFold *radixTrie
	wild                   *wildIndex
	ranges                 *rangeIndex
	cidrs                  []cidrGroup

	// anything-but: not[i] is the target of entry i, which matches every
	// present leaf except those notIndex maps to i.
	not      []int32
	notIndex *valueMatcher
}

// vmBuilder collects conditions for a valueMatcher.
type vmBuilder struct {
	vm                     valueMatcher
	strs, folds            map[string][]int32
	prefix, suffix         *byteTrie
	prefixFold, suffixFold *byteTrie
	wild                   *wildBuilder
	ranges                 []rangeEntry
	not                    *vmBuilder
}

func (b *vmBuilder) add(c *cond, target int32) {
	m := &b.vm
	switch c.kind {
	case cExact:
		switch c.val.kind {
		case kString:
			b.addString(c.val.str, target)
		case kNumber:
			if m.nums == nil {
				m.nums = map[float64][]int32{}
			}
			m.nums[c.val.num] = append(m.nums[c.val.num], target)
		case kTrue:
			m.trues = append(m.trues, target)
		case kFalse:
			m.falses = append(m.falses, target)
		default:
			m.nulls = append(m.nulls, target)
		}
	case cPrefix:
		b.prefix = trieAdd(b.prefix, c.str, false, target)
	case cSuffix:
		b.suffix = trieAdd(b.suffix, c.str, true, target)
	case cPrefixFold:
		b.prefixFold = trieAdd(b.prefixFold, foldString(c.str), false, target)
	case cSuffixFold:
		b.suffixFold = trieAdd(b.suffixFold, foldString(c.str), true, target)
	case cEqualsFold:
		if b.folds == nil {
			b.folds = map[string][]int32{}
		}
		f := foldString(c.str)
		b.folds[f] = append(b.folds[f], target)
	case cWildcard:
		if len(c.parts) == 1 { // no star: an exact string
			b.addString(c.parts[0], target)
			return
		}
		if b.wild == nil {
			b.wild = &wildBuilder{}
		}
		b.wild.add(c.parts, target)
	case cNumeric:
		b.ranges = append(b.ranges, rangeEntry{c.rng, target})
	case cExists:
		m.any = append(m.any, target)
	case cCIDR:
		b.addCIDR(c.cidr, target)
	case cAnythingBut:
		entry := int32(len(m.not))
		m.not = append(m.not, target)
		if b.not == nil {
			b.not = &vmBuilder{}
		}
		for i := range c.not {
			b.not.add(&c.not[i], entry)
		}
	}
}

func (b *vmBuilder) addString(s string, target int32) {
	if b.strs == nil {
		b.strs = map[string][]int32{}
	}
	b.strs[s] = append(b.strs[s], target)
}

func (b *vmBuilder) addCIDR(p netip.Prefix, target int32) {
	m := &b.vm
	for i := range m.cidrs {
		g := &m.cidrs[i]
		if g.bits == p.Bits() && g.v4 == p.Addr().Is4() {
			g.blocks[p] = append(g.blocks[p], target)
			return
		}
	}
	m.cidrs = append(m.cidrs, cidrGroup{bits: p.Bits(), v4: p.Addr().Is4(), blocks: map[netip.Prefix][]int32{p: {target}}})
}

// finish freezes the indexes that are built from every condition at once.
func (b *vmBuilder) finish() valueMatcher {
	m := b.vm
	if b.strs != nil {
		m.strs = newStrIndex(b.strs)
	}
	if b.folds != nil {
		m.folds = newStrIndex(b.folds)
	}
	if b.prefix != nil {
		m.prefix = b.prefix.freeze(false)
	}
	if b.suffix != nil {
		m.suffix = b.suffix.freeze(true)
	}
	if b.prefixFold != nil {
		m.prefixFold = b.prefixFold.freeze(false)
	}
	if b.suffixFold != nil {
		m.suffixFold = b.suffixFold.freeze(true)
	}
	if b.wild != nil {
		m.wild = b.wild.finish()
	}
	if b.ranges != nil {
		m.ranges = newRangeIndex(b.ranges)
	}
	if b.not != nil {
		not := b.not.finish()
		m.notIndex = &not
	}
	return m
}

// match appends to out the targets whose condition v satisfies (possibly
// repeated). sc lends buffers; match is not re-entered while it runs.
func (m *valueMatcher) match(v *value, sc *scratch, out []int32) []int32 {
	out = append(out, m.any...)
	switch v.kind {
	case kString:
		s := v.str
		if m.strs != nil {
			out = m.strs.lookup(s, out)
		}
		if m.prefix != nil {
			out = trieWalk(m.prefix, s, out)
		}
		if m.suffix != nil {
			out = trieWalk(m.suffix, s, out)
		}
		if m.folds != nil || m.prefixFold != nil || m.suffixFold != nil {
			f := sc.folded(s)
			if m.folds != nil {
				out = m.folds.lookupBytes(f, out)
			}
			if m.prefixFold != nil {
				out = trieWalk(m.prefixFold, f, out)
			}
			if m.suffixFold != nil {
				out = trieWalk(m.suffixFold, f, out)
			}
		}
		if m.wild != nil {
			out = m.wild.match(s, sc, out)
		}
		if m.cidrs != nil {
			out = m.matchCIDR(s, out)
		}
	case kNumber:
		if m.nums != nil {
			out = append(out, m.nums[v.num]...)
		}
		if m.ranges != nil {
			out = m.ranges.match(v.num, out)
		}
	case kTrue:
		out = append(out, m.trues...)
	case kFalse:
		out = append(out, m.falses...)
	case kNull:
		out = append(out, m.nulls...)
	}
	if len(m.not) > 0 {
		sc.excl = m.notIndex.match(v, sc, sc.excl[:0])
		if len(sc.excl) == 0 {
			return append(out, m.not...)
		}
		sc.exclGen++
		if sc.exclGen == 0 { // wrapped: forget every old mark
			clear(sc.exclMark)
			sc.exclGen = 1
		}
		for _, e := range sc.excl {
			sc.exclMark[e] = sc.exclGen
		}
		for i, t := range m.not {
			if sc.exclMark[i] != sc.exclGen {
				out = append(out, t)
			}
		}
	}
	return out
}

func (m *valueMatcher) matchCIDR(s string, out []int32) []int32 {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return out // a zoned address is in no prefix (netip.Prefix.Contains)
	}
	a = a.Unmap()
	for i := range m.cidrs {
		g := &m.cidrs[i]
		if g.v4 != a.Is4() {
			continue
		}
		if p, err := a.Prefix(g.bits); err == nil {
			out = append(out, g.blocks[p]...)
		}
	}
	return out
}

// strIndex maps strings to target lists: a frozen open-addressing hash
// table whose entries carry the key's hash, with every key in one byte
// arena and every target list in one array. A lookup that misses reads one
// cache line, one that hits two or three; a Go map reads a control group,
// the key's bytes and the value's slice header, each a likely miss when a
// big rule set's tables are cold.
//
// In front of the table, a one-hash Bloom filter of at least 16 bits per key
// (1/24 of the table's size, so it stays in cache while the table does not)
// answers most lookups that miss — most of a big rule set's root lookups:
// an event's customer, SKU or tenant is rarely one a rule names — without
// touching the table.
type strIndex struct {
	seed    maphash.Seed
	mask    uint64
	slots   []strSlot // len is a power of two; a zero tn marks an empty slot
	keys    []byte
	targets []int32
	filter  []uint64 // bit (h>>32)&fmask is set for every key's hash h
	fmask   uint64
}

// maybe reports whether a key of hash h may be in the index.
func (x *strIndex) maybe(h uint64) bool {
	b := (h >> 32) & x.fmask
	return x.filter[b>>6]&(1<<(b&63)) != 0
}

type strSlot struct {
	hash       uint64
	koff, klen uint32
	toff, tn   int32 // targets[toff:toff+tn]; the target itself when tn is 1
}

func newStrIndex(m map[string][]int32) *strIndex {
	x := &strIndex{seed: maphash.MakeSeed()}
	n := 1
	for n < 2*len(m) {
		n *= 2
	}
	x.slots = make([]strSlot, n)
	x.mask = uint64(n - 1)
	// n slots are at least 2 per key: 8n bits, at least 16 per key.
	x.filter = make([]uint64, max(n/8, 1))
	x.fmask = uint64(len(x.filter)*64 - 1)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a deterministic layout
	for _, k := range keys {
		h := maphash.String(x.seed, k)
		b := (h >> 32) & x.fmask
		x.filter[b>>6] |= 1 << (b & 63)
		i := h & x.mask
		for x.slots[i].tn != 0 {
			i = (i + 1) & x.mask
		}
		x.slots[i] = strSlot{hash: h, koff: uint32(len(x.keys)), klen: uint32(len(k)), toff: int32(len(x.targets)), tn: int32(len(m[k]))}
		x.keys = append(x.keys, k...)
		// A key with one target holds it: a hit reads one line less.
		if len(m[k]) == 1 {
			x.slots[i].toff = m[k][0]
		} else {
			x.targets = append(x.targets, m[k]...)
		}
	}
	return x
}

// lookup appends the targets of s.
func (x *strIndex) lookup(s string, out []int32) []int32 {
	h := maphash.String(x.seed, s)
	if !x.maybe(h) {
		return out
	}
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		e := &x.slots[i]
		if e.tn == 0 {
			return out
		}
		if e.hash == h && string(x.keys[e.koff:e.koff+e.klen]) == s {
			return x.appendTargets(e, out)
		}
	}
}

func (x *strIndex) appendTargets(e *strSlot, out []int32) []int32 {
	if e.tn == 1 {
		return append(out, e.toff)
	}
	return append(out, x.targets[e.toff:e.toff+e.tn]...)
}

// lookupBytes is lookup for a key held in a buffer.
func (x *strIndex) lookupBytes(s []byte, out []int32) []int32 {
	h := maphash.Bytes(x.seed, s)
	if !x.maybe(h) {
		return out
	}
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		e := &x.slots[i]
		if e.tn == 0 {
			return out
		}
		if e.hash == h && string(x.keys[e.koff:e.koff+e.klen]) == string(s) {
			return x.appendTargets(e, out)
		}
	}
}

// cidrGroup holds the CIDR blocks of one length and family: a value is
// looked up once per group, masked to that length.
type cidrGroup struct {
	bits   int
	v4     bool
	blocks map[netip.Prefix][]int32
}

// byteTrie is a trie over bytes under construction: every node lists the
// targets whose key ends there. freeze turns it into a radixTrie.
type byteTrie struct {
	nodes []trieNode
}

type trieNode struct {
	keys    []byte
	kids    []int32
	targets []int32
}

// trieAdd adds key (reversed, for suffixes) to t, creating t if nil.
func trieAdd(t *byteTrie, key string, reverse bool, target int32) *byteTrie {
	if t == nil {
		t = &byteTrie{nodes: []trieNode{{}}}
	}
	n := int32(0)
	for i := 0; i < len(key); i++ {
		b := key[i]
		if reverse {
			b = key[len(key)-1-i]
		}
		j := bytes.IndexByte(t.nodes[n].keys, b)
		if j < 0 {
			t.nodes = append(t.nodes, trieNode{})
			child := int32(len(t.nodes) - 1)
			t.nodes[n].keys = append(t.nodes[n].keys, b)
			t.nodes[n].kids = append(t.nodes[n].kids, child)
			n = child
			continue
		}
		n = t.nodes[n].kids[j]
	}
	t.nodes[n].targets = append(t.nodes[n].targets, target)
	return t
}

// radixTrie is the frozen, compact form of a byteTrie: chains of nodes
// without targets or branches are merged into one node whose label is the
// chain's bytes, and every node's edges, children and targets live in
// shared arrays laid out depth first. A walk then touches a few adjacent
// cache lines instead of three scattered ones per byte.
type radixTrie struct {
	reverse bool
	nodes   []radixNode
	labels  []byte  // every node's label, in value order
	edges   []byte  // first byte (last, when reverse) of each child's label
	kids    []int32 // child node of each edge
	targets []int32
}

type radixNode struct {
	labelOff, labelN int32 // bytes consumed entering the node
	edgeOff, edgeN   int32
	targetOff, tarN  int32
}

func (t *byteTrie) freeze(reverse bool) *radixTrie {
	r := &radixTrie{reverse: reverse}
	var add func(n int32, label []byte) int32
	add = func(n int32, label []byte) int32 {
		// Merge the chain below n while it has one child and no targets.
		for len(t.nodes[n].kids) == 1 && len(t.nodes[n].targets) == 0 && len(label) > 0 {
			label = append(label, t.nodes[n].keys[0])
			n = t.nodes[n].kids[0]
		}
		src := &t.nodes[n]
		if reverse {
			label = reversed(label)
		}
		id := int32(len(r.nodes))
		r.nodes = append(r.nodes, radixNode{labelOff: int32(len(r.labels)), labelN: int32(len(label)), targetOff: int32(len(r.targets)), tarN: int32(len(src.targets))})
		r.labels = append(r.labels, label...)
		r.targets = append(r.targets, src.targets...)
		off := int32(len(r.edges))
		r.edges = append(r.edges, src.keys...)
		r.kids = append(r.kids, make([]int32, len(src.kids))...)
		r.nodes[id].edgeOff, r.nodes[id].edgeN = off, int32(len(src.keys))
		for i, kid := range src.kids {
			r.kids[int(off)+i] = add(kid, []byte{src.keys[i]})
		}
		return id
	}
	add(0, nil)
	return r
}

func reversed(b []byte) []byte {
	out := make([]byte, len(b))
	for i := range b {
		out[len(b)-1-i] = b[i]
	}
	return out
}

// walk appends the targets of every key that is a prefix (suffix, for a
// reverse trie) of s.
func trieWalk[S string | []byte](t *radixTrie, s S, out []int32) []int32 {
	n := &t.nodes[0]
	rest := len(s) // bytes of s not consumed yet
	for {
		out = append(out, t.targets[n.targetOff:n.targetOff+n.tarN]...)
		if rest == 0 || n.edgeN == 0 {
			return out
		}
		var b byte
		if t.reverse {
			b = s[rest-1]
		} else {
			b = s[len(s)-rest]
		}
		child := int32(-1)
		for j, e := range t.edges[n.edgeOff : n.edgeOff+n.edgeN] {
			if e == b {
				child = t.kids[int(n.edgeOff)+j]
				break
			}
		}
		if child < 0 {
			return out
		}
		c := &t.nodes[child]
		l := int(c.labelN)
		if l > rest {
			return out
		}
		label := t.labels[c.labelOff : c.labelOff+c.labelN]
		var at int // where the label must sit in s
		if t.reverse {
			at = rest - l
		} else {
			at = len(s) - rest
		}
		for k := 0; k < l; k++ {
			if s[at+k] != label[k] {
				return out
			}
		}
		rest -= l
		n = c
	}
}

// wildIndex finds wildcard candidates by their leading literal (a prefix
// trie) or, failing that, their trailing literal (a suffix trie), and checks
// only those. Wildcards with neither ("*x*") are checked one by one: like
// EventBridge's, their cost grows with their number on the same field.
type wildIndex struct {
	parts    [][]string
	targets  []int32
	byPrefix *radixTrie
	bySuffix *radixTrie
	rest     []int32
}

type wildBuilder struct {
	idx                wildIndex
	byPrefix, bySuffix *byteTrie
}

func (w *wildBuilder) add(parts []string, target int32) {
	e := int32(len(w.idx.parts))
	w.idx.parts = append(w.idx.parts, parts)
	w.idx.targets = append(w.idx.targets, target)
	switch first, last := parts[0], parts[len(parts)-1]; {
	case first != "":
		w.byPrefix = trieAdd(w.byPrefix, first, false, e)
	case last != "":
		w.bySuffix = trieAdd(w.bySuffix, last, true, e)
	default:
		w.idx.rest = append(w.idx.rest, e)
	}
}

func (w *wildBuilder) finish() *wildIndex {
	idx := w.idx
	if w.byPrefix != nil {
		idx.byPrefix = w.byPrefix.freeze(false)
	}
	if w.bySuffix != nil {
		idx.bySuffix = w.bySuffix.freeze(true)
	}
	return &idx
}

func (w *wildIndex) match(s string, sc *scratch, out []int32) []int32 {
	cand := sc.cand[:0]
	if w.byPrefix != nil {
		cand = trieWalk(w.byPrefix, s, cand)
	}
	if w.bySuffix != nil {
		cand = trieWalk(w.bySuffix, s, cand)
	}
	cand = append(cand, w.rest...)
	for _, e := range cand {
		if wildMatch(w.parts[e], s) {
			out = append(out, w.targets[e])
		}
	}
	sc.cand = cand
	return out
}

// rangeIndex is a segment tree over the "slots" the numeric conditions'
// endpoints cut the number line into: with sorted distinct endpoints
// p0 < p1 < ..., slot 2i+1 is the point pi and slot 2i the open gap below
// it. Each range is stored in O(log n) tree nodes; a lookup collects the
// nodes on one leaf-to-root path, so its cost is O(log n + matches).
type rangeIndex struct {
	points []float64
	size   int       // leaves: a power of two ≥ the number of slots
	nodes  [][]int32 // 1-based heap layout, 2*size entries
}

type rangeEntry struct {
	r      numRange
	target int32
}

func newRangeIndex(entries []rangeEntry) *rangeIndex {
	x := &rangeIndex{}
	for _, e := range entries {
		if e.r.hasLo {
			x.points = append(x.points, e.r.lo)
		}
		if e.r.hasHi {
			x.points = append(x.points, e.r.hi)
		}
	}
	slices.Sort(x.points)
	x.points = slices.Compact(x.points)
	slots := 2*len(x.points) + 1
	x.size = 1
	for x.size < slots {
		x.size *= 2
	}
	x.nodes = make([][]int32, 2*x.size)
	for _, e := range entries {
		l, r := 0, slots-1
		if e.r.hasLo {
			i := sort.SearchFloat64s(x.points, e.r.lo)
			l = 2*i + 2 // the gap above lo
			if e.r.loIncl {
				l = 2*i + 1 // lo itself
			}
		}
		if e.r.hasHi {
			j := sort.SearchFloat64s(x.points, e.r.hi)
			r = 2 * j // the gap below hi
			if e.r.hiIncl {
				r = 2*j + 1
			}
		}
		for l, r := l+x.size, r+x.size+1; l < r; l, r = l>>1, r>>1 {
			if l&1 == 1 {
				x.nodes[l] = append(x.nodes[l], e.target)
				l++
			}
			if r&1 == 1 {
				r--
				x.nodes[r] = append(x.nodes[r], e.target)
			}
		}
	}
	return x
}

func (x *rangeIndex) match(f float64, out []int32) []int32 {
	i := sort.SearchFloat64s(x.points, f)
	slot := 2 * i
	if i < len(x.points) && x.points[i] == f {
		slot++
	}
	for n := slot + x.size; n >= 1; n >>= 1 {
		out = append(out, x.nodes[n]...)
	}
	return out
}

// linearCond is one condition of a transition with only a few of them,
// checked directly: below a handful of conditions a short loop over
// conditions stored inline beats hash maps and tries, whose lookups touch
// several cold cache lines. It is 40 bytes and holds no pointer (its string
// operand lives in the matcher's text, the rarer operators' operands in
// its extras), so that a state record with one inline condition fits one
// cache line and the garbage collector never scans the automaton's arrays.
type linearCond struct {
	num        float64 // cExact: the number; cNumeric: the lower bound
	hi         float64 // cNumeric: the upper bound
	target     int32
	soff, slen int32 // text[soff:soff+slen]: cExact's string; prefix and suffix operands; the ignore-case operand, folded
	extra      int32 // index in the matcher's extras, -1 if none
	kind       condKind
	vkind      kind  // cExact: the value's kind
	flags      uint8 // cNumeric: which bounds exist and are inclusive
}

// linearExtra holds what the rarer operators need.
type linearExtra struct {
	c   cond         // the condition itself (wildcard parts, CIDR block, range flags)
	not []linearCond // anything-but's exclusions
}

// condText interns the string operands of linear conditions while a
// Matcher is built; text is the matcher's text once frozen.
type condText struct {
	buf    []byte
	at     map[string]int32
	extras []linearExtra
}

func (t *condText) intern(s string) (off, n int32) {
	if o, ok := t.at[s]; ok {
		return o, int32(len(s))
	}
	if t.at == nil {
		t.at = map[string]int32{}
	}
	o := int32(len(t.buf))
	t.buf = append(t.buf, s...)
	t.at[s] = o
	return o, int32(len(s))
}

func (t *condText) newLinearCond(c *cond, target int32) linearCond {
	l := linearCond{kind: c.kind, target: target, extra: -1}
	switch c.kind {
	case cExact:
		l.vkind, l.num = c.val.kind, c.val.num
		l.soff, l.slen = t.intern(c.val.str)
	case cPrefix, cSuffix:
		l.soff, l.slen = t.intern(c.str)
	case cEqualsFold, cPrefixFold, cSuffixFold:
		l.soff, l.slen = t.intern(foldString(c.str))
	case cNumeric:
		l.num, l.hi = c.rng.lo, c.rng.hi
		for i, b := range []bool{c.rng.hasLo, c.rng.hasHi, c.rng.loIncl, c.rng.hiIncl} {
			if b {
				l.flags |= 1 << i
			}
		}
	default:
		x := linearExtra{c: *c}
		if c.kind == cAnythingBut {
			for i := range c.not {
				x.not = append(x.not, t.newLinearCond(&c.not[i], 0))
			}
		}
		l.extra = int32(len(t.extras))
		t.extras = append(t.extras, x)
	}
	return l
}

// cond recovers the condition, for building an index instead.
func (t *condText) cond(l *linearCond) *cond {
	if l.extra >= 0 {
		return &t.extras[l.extra].c
	}
	c := &cond{kind: l.kind}
	str := string(t.buf[l.soff : l.soff+l.slen])
	switch l.kind {
	case cExact:
		c.val = value{kind: l.vkind, str: str, num: l.num}
	case cNumeric:
		c.rng = l.rng()
	default: // the string operators; the ignore-case ones keep their folded operand
		c.str = str
	}
	return c
}

func (l *linearCond) rng() numRange {
	return numRange{lo: l.num, hi: l.hi, hasLo: l.flags&1 != 0, hasHi: l.flags&2 != 0, loIncl: l.flags&4 != 0, hiIncl: l.flags&8 != 0}
}

// match reports whether v satisfies l; text and extras are the matcher's.
func (l *linearCond) match(v *value, sc *scratch, text string, extras []linearExtra) bool {
	switch l.kind {
	case cExact:
		return v.kind == l.vkind && v.num == l.num && len(v.str) == int(l.slen) && v.str == text[l.soff:l.soff+l.slen]
	case cExists:
		return true // exists:false never becomes a condition on values
	case cNumeric:
		if v.kind != kNumber {
			return false
		}
		r := l.rng()
		return r.contains(v.num)
	case cAnythingBut:
		not := extras[l.extra].not
		for i := range not {
			if not[i].match(v, sc, text, extras) {
				return false
			}
		}
		return true
	}
	if v.kind != kString {
		return false
	}
	s := v.str
	switch l.kind {
	case cPrefix:
		return strings.HasPrefix(s, text[l.soff:l.soff+l.slen])
	case cSuffix:
		return strings.HasSuffix(s, text[l.soff:l.soff+l.slen])
	case cWildcard:
		return wildMatch(extras[l.extra].c.parts, s)
	case cCIDR:
		a, err := netip.ParseAddr(s)
		return err == nil && extras[l.extra].c.cidr.Contains(a.Unmap())
	}
	f := sc.folded(s)
	op := text[l.soff : l.soff+l.slen]
	switch l.kind {
	case cEqualsFold:
		return string(f) == op
	case cPrefixFold:
		return len(f) >= len(op) && string(f[:len(op)]) == op
	default: // cSuffixFold
		return len(f) >= len(op) && string(f[len(f)-len(op):]) == op
	}
}
