package pattern

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// Builder collects rules and compiles them into a Matcher. It is not safe
// for concurrent use; it may be reused (Build compiles what was added so far).
type Builder struct {
	ids  []string
	pats []*Pattern
	seen map[string]struct{}
	// linearMax is the most conditions a transition checks one by one
	// rather than through indexes; tests set 0 to exercise the indexes.
	linearMax int
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder { return &Builder{seen: map[string]struct{}{}, linearMax: 4} }

// Add adds a rule. Errors: ErrDuplicateRule if ruleID was already added,
// ErrNilPattern for a nil pattern.
func (b *Builder) Add(ruleID string, p *Pattern) error {
	if p == nil {
		return fmt.Errorf("rule %q: %w", ruleID, ErrNilPattern)
	}
	if _, dup := b.seen[ruleID]; dup {
		return fmt.Errorf("rule %q: %w", ruleID, ErrDuplicateRule)
	}
	b.seen[ruleID] = struct{}{}
	b.ids = append(b.ids, ruleID)
	b.pats = append(b.pats, p)
	return nil
}

// Matcher is a set of rules compiled into one automaton. It is immutable
// and safe for concurrent use by any number of goroutines.
//
// The automaton: every rule's pattern is expanded into AND-only
// alternatives, each a list of steps (path + conditions) ordered most
// selective first, as estimated from the whole rule set. Alternatives
// become paths from a shared start state, so rules that begin with the
// same step share states. A state has one transition per field path,
// holding every condition on that path that leaves the state (a few are
// checked one by one; more go through per-operator indexes, see
// valueMatcher), and a list of absence transitions (exists:false).
// Matching reads the event once (only the paths rules use; the rest of the
// data is validated, not decoded) and walks the automaton from the start
// state: each live state looks up the event's values for its paths and
// follows the transitions they satisfy. The work is proportional to the
// event's fields and the states that stay alive — rules that match or
// partly match — not to the number of rules.
type Matcher struct {
	ids   []string
	paths map[string]int32 // encoded path → path id
	tree  *pathNode        // the same paths as a trie, for the scanner

	// The automaton, in flat arrays laid out depth first (state 0 is the
	// start): walking one rule's chain of states reads consecutive memory
	// instead of chasing pointers to scattered objects, which is what a
	// large rule set's walk spends its time on (cache misses).
	states  []state
	trans   []transition
	linear  []linearCond
	accepts []int32 // rule indexes
	vms     []valueMatcher
	text    string        // the linear conditions' string operands
	extras  []linearExtra // the linear conditions' rarer operands

	core []int32  // path id of each context attribute (see coreName), -1 if unused
	exts []extPID // the extensions rules test

	maxNot    int
	linearMax int
	pool      sync.Pool // *scratch
}

type extPID struct {
	name string
	pid  int32
}

// state is a span of each of the Matcher's arrays and, inline, its first
// transition when that is a single condition. It is 64 bytes, one cache
// line: most states deep in the automaton belong to one rule and have one
// transition with one condition, so a walk down such a chain reads one
// line per state (the walk of a large rule set is mostly cache misses).
type state struct {
	acc, accN int32 // accepts[acc:acc+accN]; the rule itself when accN is 1
	tr, trN   int32 // trans: the transitions after the inline one
	pid       int32 // the inline transition's path, -1 if none
	one       linearCond
}

// transition holds the conditions on one path leaving a state: a few,
// checked one by one (linear[lin:lin+linN]), or else indexed (vms[vm]);
// their targets are the ids of the next states. An absence transition
// (exists:false) has next >= 0: it is followed when the path has no value.
type transition struct {
	pid       int32
	lin, linN int32
	vm        int32 // -1 if not indexed
	next      int32 // absence transitions: the next state; -1 otherwise
}

// bstate is a state under construction.
type bstate struct {
	kids    map[string]*bstate
	order   []*bstep
	accepts []int32
}

type bstep struct {
	step  step
	child *bstate
}

// Build compiles the rules added so far. The Builder may go on adding rules
// for a later Build; the returned Matcher does not change.
func (b *Builder) Build() *Matcher {
	m := &Matcher{ids: slices.Clone(b.ids), paths: map[string]int32{}, tree: newPathNode(), linearMax: b.linearMax}
	root := &bstate{kids: map[string]*bstate{}}
	sel := newSelectivity(b.pats)
	for ri, p := range b.pats {
		for _, alt := range p.alts {
			s := root
			for _, st := range sel.order(alt) {
				next := s.kids[st.key]
				if next == nil {
					next = &bstate{kids: map[string]*bstate{}}
					s.kids[st.key] = next
					s.order = append(s.order, &bstep{step: st, child: next})
				}
				s = next
			}
			if !slices.Contains(s.accepts, int32(ri)) {
				s.accepts = append(s.accepts, int32(ri))
			}
		}
	}
	// Number the states depth first, then lay each one out in that order.
	var order []*bstate
	ids := map[*bstate]int32{}
	var number func(b *bstate)
	number = func(b *bstate) {
		ids[b] = int32(len(order))
		order = append(order, b)
		for _, bs := range b.order {
			number(bs.child)
		}
	}
	number(root)
	m.states = make([]state, len(order))
	var text condText
	for i, b := range order {
		m.freeze(&m.states[i], b, ids, &text)
	}
	m.text, m.extras = string(text.buf), text.extras
	m.core = make([]int32, coreAttrs)
	m.planAttributes()
	m.tree.freeze()
	m.pool.New = func() any { return m.newScratch() }
	return m
}

func newPathNode() *pathNode { return &pathNode{kids: map[string]*pathNode{}, pid: -1} }

// pathID interns a path, adding it to the scanner's trie.
func (m *Matcher) pathID(segs []string) int32 {
	key := encodePath(segs)
	if id, ok := m.paths[key]; ok {
		return id
	}
	id := int32(len(m.paths))
	m.paths[key] = id
	n := m.tree
	for _, s := range segs {
		kid := n.kids[s]
		if kid == nil {
			kid = newPathNode()
			n.kids[s] = kid
		}
		n = kid
	}
	n.pid = id
	return id
}

func (m *Matcher) freeze(s *state, b *bstate, ids map[*bstate]int32, text *condText) {
	// A state accepting one rule holds it: no second cache line to read.
	if s.accN = int32(len(b.accepts)); s.accN == 1 {
		s.acc = b.accepts[0]
	} else {
		s.acc = int32(len(m.accepts))
		m.accepts = append(m.accepts, b.accepts...)
	}
	// Group the outgoing steps by path: one transition per path.
	type group struct {
		pid   int32
		conds []linearCond
	}
	var groups []*group
	var absent []transition
	byPath := map[int32]*group{}
	for _, bs := range b.order {
		pid := m.pathID(bs.step.path)
		child := ids[bs.child]
		if bs.step.absent {
			absent = append(absent, transition{pid: pid, vm: -1, next: child})
			continue
		}
		g := byPath[pid]
		if g == nil {
			g = &group{pid: pid}
			byPath[pid] = g
			groups = append(groups, g)
		}
		for i := range bs.step.conds {
			g.conds = append(g.conds, text.newLinearCond(&bs.step.conds[i], child))
		}
	}
	s.pid = -1
	if len(groups) > 0 && len(groups[0].conds) == 1 && m.linearMax >= 1 {
		s.pid, s.one = groups[0].pid, groups[0].conds[0]
		groups = groups[1:]
	}
	s.tr = int32(len(m.trans))
	for _, g := range groups {
		tr := transition{pid: g.pid, vm: -1, next: -1}
		if len(g.conds) <= m.linearMax {
			tr.lin, tr.linN = int32(len(m.linear)), int32(len(g.conds))
			m.linear = append(m.linear, g.conds...)
		} else {
			var vb vmBuilder
			for j := range g.conds {
				vb.add(text.cond(&g.conds[j]), g.conds[j].target)
			}
			vm := vb.finish()
			tr.vm = int32(len(m.vms))
			m.vms = append(m.vms, vm)
			m.maxNot = max(m.maxNot, len(vm.not))
		}
		m.trans = append(m.trans, tr)
	}
	m.trans = append(m.trans, absent...)
	s.trN = int32(len(m.trans)) - s.tr
}

// Len is the number of rules.
func (m *Matcher) Len() int { return len(m.ids) }

// Match returns the ids of the rules whose pattern matches e, each once, in
// the order they were added to the Builder; nil if none. Data declared as
// JSON that does not parse is treated as absent (see Flatten).
func (m *Matcher) Match(e *cloudevents.Event) []string {
	sc := m.pool.Get().(*scratch)
	defer m.put(sc)
	if e.Context != nil {
		for i, pid := range m.core {
			if pid >= 0 {
				if v := coreValue(e, i); v != "" {
					sc.fields = append(sc.fields, flatField{pid: pid, val: stringValue(v)})
				}
			}
		}
		if len(m.exts) > 0 {
			exts := extensions(e)
			for _, x := range m.exts {
				if v, ok := exts[x.name]; ok {
					if val, ok := extValue(v); ok {
						sc.fields = append(sc.fields, flatField{pid: x.pid, val: val})
					}
				}
			}
		}
	}
	if data := m.tree.kid("data"); data != nil && dataModeOf(e) != dataNone {
		sc.scan = scanner{s: view(e.Data()), hops: sc.scan.hops[:0], keys: sc.scan.keys[:0], arena: sc.scan.arena[:0], out: sc.fields}
		if err := sc.scan.scan(data); err == nil {
			sc.fields = sc.scan.out
		}
	}
	return m.run(sc)
}

// planAttributes records which attributes and extensions the rules test,
// so that Match reads only those, without a lookup per attribute.
func (m *Matcher) planAttributes() {
	isCore := map[string]bool{}
	for i := range m.core {
		m.core[i] = -1
		name := coreName(i)
		isCore[name] = true
		if n := m.tree.kids[name]; n != nil {
			m.core[i] = n.pid
		}
	}
	for name, n := range m.tree.kids {
		if !isCore[name] && name != "data" && n.pid >= 0 {
			m.exts = append(m.exts, extPID{name, n.pid})
		}
	}
	slices.SortFunc(m.exts, func(a, b extPID) int { return strings.Compare(a.name, b.name) })
}

// view returns b as a string without copying it: copying every event's
// data would allocate about as much as the event itself and, with it, make
// the garbage collector re-mark the automaton far more often. The view (and
// every substring of it) lives only until Match returns: put drops the
// scratch's references, and only rule ids leave Match. The caller owns the
// event and does not modify it during the call (that would be a data race
// in any case).
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// MatchFields is Match on an event flattened in advance with Flatten.
func (m *Matcher) MatchFields(f Flattened) []string {
	sc := m.pool.Get().(*scratch)
	defer m.put(sc)
	for _, ff := range f.fields {
		if pid, ok := m.paths[ff.path]; ok {
			ff.pid = pid
			sc.fields = append(sc.fields, ff)
		}
	}
	return m.run(sc)
}

// scratch is one goroutine's working memory for a match, pooled so that
// matching does not allocate in the steady state.
type scratch struct {
	fields  []flatField
	scan    scanner
	head    []int32 // per path id: its last field in fields, -1 if none
	next    []int32 // per field: the previous field with the same path id, -1 if none
	touched []int32 // path ids whose head is set

	seen  map[string]struct{} // (state, binding) pairs visited, for bindings with array hops
	found []int32             // rule indexes reached, with repeats

	targets  []int32
	excl     []int32
	exclGen  uint32
	exclMark []uint32
	cand     []int32
	fold     []byte // case-folded foldSrc
	foldSrc  string
	binds    []hop // backing store of array bindings
}

// folded returns s case-folded, reusing the last result when several
// ignore-case conditions test the same value.
func (sc *scratch) folded(s string) []byte {
	if s != sc.foldSrc {
		sc.fold = appendFold(sc.fold[:0], s)
		sc.foldSrc = s
	}
	return sc.fold
}

func (m *Matcher) newScratch() *scratch {
	sc := &scratch{
		head:     make([]int32, len(m.paths)),
		exclMark: make([]uint32, m.maxNot),
		seen:     map[string]struct{}{},
	}
	for i := range sc.head {
		sc.head[i] = -1
	}
	return sc
}

func (m *Matcher) put(sc *scratch) {
	for _, pid := range sc.touched {
		sc.head[pid] = -1
	}
	sc.touched = sc.touched[:0]
	// Drop every reference into the event's data, including those a failed
	// scan left beyond len(fields).
	clear(sc.fields)
	clear(sc.scan.out)
	clear(sc.scan.keys[:cap(sc.scan.keys)])
	sc.fields = sc.fields[:0]
	sc.scan = scanner{hops: sc.scan.hops[:0], keys: sc.scan.keys[:0], arena: sc.scan.arena[:0]}
	sc.found = sc.found[:0]
	sc.binds = sc.binds[:0]
	sc.foldSrc, sc.fold = "", sc.fold[:0]
	if len(sc.seen) > 0 {
		clear(sc.seen)
	}
	m.pool.Put(sc)
}

func (m *Matcher) run(sc *scratch) []string {
	// Chain the fields of each path id (rather than sorting: moving the
	// fields would cost more than matching them).
	sc.next = sc.next[:0]
	for i := range sc.fields {
		pid := sc.fields[i].pid
		if sc.head[pid] < 0 {
			sc.touched = append(sc.touched, pid)
		}
		sc.next = append(sc.next, sc.head[pid])
		sc.head[pid] = int32(i)
	}
	w := walker{m: m, sc: sc}
	w.visit(0, nil)
	if len(sc.found) == 0 {
		return nil
	}
	slices.Sort(sc.found)
	sc.found = slices.Compact(sc.found)
	out := make([]string, len(sc.found))
	for i, r := range sc.found {
		out[i] = m.ids[r]
	}
	return out
}

type walker struct {
	m  *Matcher
	sc *scratch
}

// visit records state sid's rules and follows every transition the event
// satisfies. bind holds the array elements the path so far has committed
// to (sorted by array); a field is usable only if its own array hops agree.
//
// The automaton is a trie (every state but the start has one parent), so a
// state can only be reached twice through its parent's transition: from two
// values of one path (array elements) or two conditions one value
// satisfies. visit de-duplicates those targets itself instead of marking
// visited states, which would touch one more cold cache line per state.
// Only bindings made of array hops need a memo.
func (w walker) visit(sid int32, bind []hop) {
	m, sc := w.m, w.sc
	s := &m.states[sid]
	if s.accN == 1 {
		sc.found = append(sc.found, s.acc)
	} else if s.accN > 1 {
		sc.found = append(sc.found, m.accepts[s.acc:s.acc+s.accN]...)
	}
	if s.pid >= 0 {
		w.follow(s.pid, nil, &s.one, bind)
	}
	for ti := s.tr; ti < s.tr+s.trN; ti++ {
		tr := &m.trans[ti]
		if tr.next < 0 {
			w.follow(tr.pid, tr, nil, bind)
		} else if sc.head[tr.pid] < 0 {
			w.visit(tr.next, bind)
		}
	}
}

// follow visits the targets that the event's values on path pid satisfy:
// of one, the inline condition, when set, else of tr.
func (w walker) follow(pid int32, tr *transition, one *linearCond, bind []hop) {
	sc := w.sc
	start := len(sc.targets)
	for fi := sc.head[pid]; fi >= 0; fi = sc.next[fi] {
		f := &sc.fields[fi]
		if len(f.trail) == 0 {
			sc.targets = w.match(tr, one, &f.val, sc.targets) // visited below, with bind
			continue
		}
		nb, ok := w.extend(bind, f.trail)
		if !ok {
			continue
		}
		from := len(sc.targets)
		sc.targets = w.match(tr, one, &f.val, sc.targets)
		for j := from; j < len(sc.targets); j++ {
			w.visitBound(sc.targets[j], nb)
		}
		sc.targets = sc.targets[:from]
	}
	end := len(sc.targets)
	if end-start > 1 {
		slices.Sort(sc.targets[start:end])
		end = start + len(slices.Compact(sc.targets[start:end]))
	}
	for j := start; j < end; j++ {
		w.visitBound(sc.targets[j], bind)
	}
	sc.targets = sc.targets[:start]
}

// match appends the targets whose condition v satisfies: one's, when set,
// else tr's.
func (w walker) match(tr *transition, one *linearCond, v *value, out []int32) []int32 {
	m := w.m
	if one != nil {
		if one.match(v, w.sc, m.text, m.extras) {
			out = append(out, one.target)
		}
		return out
	}
	if tr.vm >= 0 {
		return m.vms[tr.vm].match(v, w.sc, out)
	}
	for i := tr.lin; i < tr.lin+tr.linN; i++ {
		if l := &m.linear[i]; l.match(v, w.sc, m.text, m.extras) {
			out = append(out, l.target)
		}
	}
	return out
}

// visitBound visits a state once per binding: with no binding the caller
// has de-duplicated already; with one, several fields may lead to the same
// state and binding.
func (w walker) visitBound(sid int32, bind []hop) {
	if len(bind) > 0 {
		key := bindKey(sid, bind)
		if _, ok := w.sc.seen[key]; ok {
			return
		}
		w.sc.seen[key] = struct{}{}
	}
	w.visit(sid, bind)
}

// extend adds a field's array hops to a binding; ok is false when they
// disagree (the field lies in another element of an array already bound).
func (w walker) extend(bind, trail []hop) ([]hop, bool) {
	if len(trail) == 0 {
		return bind, true
	}
	missing := 0
	for _, h := range trail {
		found := false
		for _, b := range bind {
			if b.arr == h.arr {
				if b.idx != h.idx {
					return nil, false
				}
				found = true
				break
			}
		}
		if !found {
			missing++
		}
	}
	if missing == 0 {
		return bind, true
	}
	sc := w.sc
	start := len(sc.binds)
	sc.binds = append(sc.binds, bind...)
	for _, h := range trail {
		if !slices.ContainsFunc(bind, func(b hop) bool { return b.arr == h.arr }) {
			sc.binds = append(sc.binds, h)
		}
	}
	nb := sc.binds[start:len(sc.binds):len(sc.binds)]
	slices.SortFunc(nb, func(a, b hop) int { return int(a.arr) - int(b.arr) })
	return nb, true
}

func bindKey(id int32, bind []hop) string {
	b := strconv.AppendInt(nil, int64(id), 10)
	for _, h := range bind {
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(h.arr), 10)
		b = append(b, '=')
		b = strconv.AppendInt(b, int64(h.idx), 10)
	}
	return string(b)
}
