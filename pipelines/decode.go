package pipelines

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// Limits that keep hostile input (alias bombs, self-referencing anchors)
// from exhausting memory or the stack.
const (
	maxDepth = 64      // nesting of mappings, sequences, anchors and tags
	maxNodes = 100_000 // values decoded per document, counting alias expansions
)

// positions records where each decoded field path is in its file. Paths
// look like "spec.results.onSuccess[0].kafka.topic".
type positions map[string]span

type span struct {
	key   Position // the mapping key naming the field; zero for sequence elements and the root
	value Position
}

// value returns where path's value is, or where its nearest recorded
// ancestor's is (a defaulted field has no position of its own).
func (ps positions) value(path string) Position {
	for {
		if s, ok := ps[path]; ok {
			return s.value
		}
		if path == "" {
			return Position{}
		}
		path = parentPath(path)
	}
}

// key returns where path's key is (its value for keyless nodes), or its
// nearest recorded ancestor's.
func (ps positions) key(path string) Position {
	for {
		if s, ok := ps[path]; ok {
			if s.key.Line != 0 {
				return s.key
			}
			return s.value
		}
		if path == "" {
			return Position{}
		}
		path = parentPath(path)
	}
}

// has reports whether path was written in the file.
func (ps positions) has(path string) bool {
	_, ok := ps[path]
	return ok
}

// parentPath strips the last element of a field path. It always returns a
// shorter string, so loops over it end.
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

func fieldPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// plainKeyRE matches map keys that can be written after a dot in a path;
// others are written quoted in brackets: headers["X.Y"].
var plainKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func keyPath(parent, key string) string {
	if plainKeyRE.MatchString(key) {
		return fieldPath(parent, key)
	}
	return parent + "[" + strconv.Quote(key) + "]"
}

func indexPath(parent string, i int) string { return parent + "[" + strconv.Itoa(i) + "]" }

var (
	durationType = reflect.TypeFor[Duration]()
	secretType   = reflect.TypeFor[Secret]()
	byteSizeType = reflect.TypeFor[ByteSize]()
	anyMapType   = reflect.TypeFor[map[string]any]()
	anySliceType = reflect.TypeFor[[]any]()
)

// decoder decodes one YAML document into a Go value by walking the AST
// itself, so that one pass reports every problem with its position instead
// of stopping at the first. Go types drive it: yaml struct tags name the
// fields; Duration, Secret and ByteSize get their own parsing; an `any`
// takes JSON-like values (map[string]any, []any, string, int64 (uint64
// beyond it), float64, bool, nil) with every node's position recorded. It
// is used by one goroutine.
type decoder struct {
	file       string
	lineOffset int // line of the stream before the document's first line
	secrets    secretResolver
	anchors    map[string]ast.Node
	pos        positions
	errs       []*FieldError
	nodes      int  // values decoded so far, against maxNodes
	tooLarge   bool // the maxNodes error was reported
	tooDeep    bool // the maxDepth error was reported
}

func (d *decoder) errorf(pos Position, path, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{Pos: pos, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// isNil reports whether n holds no node; every node type is a pointer.
func isNil(n ast.Node) bool {
	if n == nil {
		return true
	}
	v := reflect.ValueOf(n)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// position is where n starts: the first key of a block mapping rather than
// its first ':' (which is what goccy's token for it is).
func (d *decoder) position(n ast.Node) Position {
	switch t := n.(type) {
	case *ast.MappingNode:
		if t != nil && !t.IsFlowStyle && len(t.Values) > 0 && t.Values[0] != nil && !isNil(t.Values[0].Key) {
			return d.position(t.Values[0].Key)
		}
	case *ast.MappingValueNode:
		if t != nil && !isNil(t.Key) {
			return d.position(t.Key)
		}
	}
	if isNil(n) {
		return Position{File: d.file}
	}
	tk := n.GetToken()
	if tk == nil || tk.Position == nil {
		return Position{File: d.file}
	}
	return Position{File: d.file, Line: tk.Position.Line + d.lineOffset, Column: tk.Position.Column}
}

// tokenText is the source text of n's token, or "".
func tokenText(n ast.Node) string {
	if isNil(n) {
		return ""
	}
	if tk := n.GetToken(); tk != nil {
		return tk.Value
	}
	return ""
}

// collectAnchors records every anchor of a document up front, so aliases
// resolve wherever the decoder meets them (it visits mapping entries in the
// order of the Go struct's needs, skipping unknown fields).
func collectAnchors(n ast.Node, into map[string]ast.Node, depth int) {
	if depth > maxDepth || isNil(n) {
		return
	}
	switch t := n.(type) {
	case *ast.AnchorNode:
		into[tokenText(t.Name)] = t.Value
		collectAnchors(t.Value, into, depth+1)
	case *ast.TagNode:
		collectAnchors(t.Value, into, depth+1)
	case *ast.MappingKeyNode:
		collectAnchors(t.Value, into, depth+1)
	case *ast.SequenceNode:
		for _, e := range t.Values {
			collectAnchors(e, into, depth+1)
		}
	case ast.MapNode:
		it := t.MapRange()
		for it.Next() {
			kv := it.KeyValue()
			if kv == nil {
				continue
			}
			collectAnchors(kv.Key, into, depth+1)
			collectAnchors(kv.Value, into, depth+1)
		}
	}
}

// isCoreTag reports whether tag is a YAML core schema tag other than
// "!!str": the node's own type already says the same, so it is looked
// through. "!!str" is handled apart as it turns any scalar into a string.
func isCoreTag(tag string) bool {
	switch tag {
	case "!!map", "!!seq", "!!int", "!!bool", "!!float", "!!null":
		return true
	}
	return false
}

// resolve follows anchors, aliases and tags to the node holding a value.
// It returns nil for an absent value, and false after recording an error.
func (d *decoder) resolve(n ast.Node, path string) (ast.Node, bool) {
	for range maxDepth {
		if isNil(n) {
			return nil, true
		}
		switch t := n.(type) {
		case *ast.AnchorNode:
			n = t.Value
		case *ast.AliasNode:
			name := tokenText(t.Value)
			target, ok := d.anchors[name]
			if !ok {
				d.errorf(d.position(t), path, "undefined alias %q", name)
				return nil, false
			}
			n = target
		case *ast.TagNode:
			tag := tokenText(t)
			switch {
			case tag == "!!str":
				return d.forceString(t), true
			case isCoreTag(tag):
				n = t.Value
			default:
				d.errorf(d.position(t), path, "unsupported tag %q", tag)
				return nil, false
			}
		default:
			return n, true
		}
	}
	d.errorf(d.position(n), path, "too many nested anchors, aliases or tags")
	return nil, false
}

// forceString applies "!!str" to a scalar: its source text becomes a string.
// Collections are returned as they are, for the type check to reject.
func (d *decoder) forceString(t *ast.TagNode) ast.Node {
	switch v := t.Value.(type) {
	case *ast.StringNode, *ast.LiteralNode:
		return v
	case *ast.NullNode, nil:
		return &ast.StringNode{BaseNode: &ast.BaseNode{}, Token: t.GetToken(), Value: ""}
	case ast.ScalarNode:
		if tk := v.GetToken(); tk != nil {
			return ast.String(tk)
		}
	}
	return t.Value
}

// describe names a resolved node's type for "expected X, got Y" messages.
func describe(n ast.Node) string {
	switch n.(type) {
	case *ast.StringNode, *ast.LiteralNode:
		return "a string"
	case *ast.IntegerNode:
		return "an integer"
	case *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "a number"
	case *ast.BoolNode:
		return "a boolean"
	case *ast.SequenceNode:
		return "a sequence"
	case ast.MapNode:
		return "a mapping"
	default:
		return n.Type().String()
	}
}

// scalarString returns the text of a string node.
func scalarString(n ast.Node) (string, bool) {
	switch t := n.(type) {
	case *ast.StringNode:
		return t.Value, true
	case *ast.LiteralNode:
		if t.Value == nil {
			return "", true
		}
		return t.Value.Value, true
	}
	return "", false
}

func (d *decoder) typeError(pos Position, path, want string, got ast.Node) {
	hint := ""
	if want == "a string" {
		switch got.(type) {
		case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
			hint = " (quote it)"
		}
	}
	d.errorf(pos, path, "expected %s, got %s%s", want, describe(got), hint)
}

// decode decodes n into v, recording the position of path and every error
// found below it. A null or absent value leaves v as it is.
func (d *decoder) decode(n ast.Node, v reflect.Value, path string, depth int) {
	pos := d.position(n)
	s := d.pos[path]
	s.value = pos
	d.pos[path] = s

	if !d.within(pos, path, depth) {
		return
	}
	n, ok := d.resolve(n, path)
	if !ok || n == nil {
		return
	}
	if _, null := n.(*ast.NullNode); null {
		return
	}
	d.decodeValue(n, v, path, pos, depth)
}

// within counts one more value and reports whether the document is still
// within maxNodes and maxDepth; each limit is reported once.
func (d *decoder) within(pos Position, path string, depth int) bool {
	d.nodes++
	switch {
	case d.nodes > maxNodes:
		if !d.tooLarge {
			d.tooLarge = true
			d.errorf(pos, path, "document too large: more than %d values after expanding aliases", maxNodes)
		}
		return false
	case depth > maxDepth:
		if !d.tooDeep {
			d.tooDeep = true
			d.errorf(pos, path, "nested more than %d levels deep", maxDepth)
		}
		return false
	}
	return true
}

// decodeValue decodes a resolved, non-null node.
func (d *decoder) decodeValue(n ast.Node, v reflect.Value, path string, pos Position, depth int) {
	switch v.Type() {
	case durationType:
		d.decodeDuration(n, v, path, pos)
		return
	case secretType:
		text, ok := scalarString(n)
		if !ok {
			d.typeError(pos, path, "a string", n)
			return
		}
		sec, err := d.secrets.resolve(text)
		if err != nil {
			d.errs = append(d.errs, &FieldError{Pos: pos, Path: path, Msg: err.Error(), Err: err})
			return
		}
		v.Set(reflect.ValueOf(sec))
		return
	case byteSizeType:
		d.decodeByteSize(n, v, path, pos)
		return
	}
	switch v.Kind() {
	case reflect.Interface:
		if v.NumMethod() != 0 {
			d.errorf(pos, path, "internal error: cannot decode into %s", v.Type())
			return
		}
		d.decodeAny(n, v, path, pos, depth)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.decodeValue(n, p.Elem(), path, pos, depth)
		v.Set(p)
	case reflect.Struct:
		d.decodeStruct(n, v, path, pos, depth)
	case reflect.Map:
		entries, ok := d.entries(n, path, pos, depth)
		if !ok {
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(entries))
		for _, e := range entries {
			p := keyPath(path, e.key)
			d.pos[p] = span{key: e.keyPos}
			ev := reflect.New(v.Type().Elem()).Elem()
			d.decode(e.value, ev, p, depth+1)
			m.SetMapIndex(reflect.ValueOf(e.key).Convert(v.Type().Key()), ev)
		}
		v.Set(m)
	case reflect.Slice:
		seq, ok := n.(*ast.SequenceNode)
		if !ok {
			d.typeError(pos, path, "a sequence", n)
			return
		}
		s := reflect.MakeSlice(v.Type(), len(seq.Values), len(seq.Values))
		for i, e := range seq.Values {
			d.decode(e, s.Index(i), indexPath(path, i), depth+1)
		}
		v.Set(s)
	case reflect.String:
		s, ok := scalarString(n)
		if !ok {
			d.typeError(pos, path, "a string", n)
			return
		}
		v.SetString(s)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		in, ok := n.(*ast.IntegerNode)
		if !ok {
			d.typeError(pos, path, "an integer", n)
			return
		}
		var i int64
		switch x := in.Value.(type) {
		case int64:
			i = x
		case uint64:
			if x > math.MaxInt64 {
				d.errorf(pos, path, "integer %s out of range", tokenText(in))
				return
			}
			i = int64(x)
		}
		if v.OverflowInt(i) {
			d.errorf(pos, path, "integer %s out of range", tokenText(in))
			return
		}
		v.SetInt(i)
	case reflect.Float32, reflect.Float64:
		switch x := n.(type) {
		case *ast.FloatNode:
			v.SetFloat(x.Value)
		case *ast.IntegerNode:
			switch i := x.Value.(type) {
			case int64:
				v.SetFloat(float64(i))
			case uint64:
				v.SetFloat(float64(i))
			}
		default:
			d.typeError(pos, path, "a number", n)
		}
	case reflect.Bool:
		b, ok := n.(*ast.BoolNode)
		if !ok {
			d.typeError(pos, path, "a boolean", n)
			return
		}
		v.SetBool(b.Value)
	default:
		// Only reachable if a field of an unsupported Go type is added to a
		// document type; TestLoadFullExample decodes every field.
		d.errorf(pos, path, "internal error: cannot decode into %s", v.Type())
	}
}

// decodeAny decodes a free-form value (an event pattern) into an empty
// interface. Mappings and sequences go through decodeValue, so that
// aliases, merge keys and positions work as for typed fields.
func (d *decoder) decodeAny(n ast.Node, v reflect.Value, path string, pos Position, depth int) {
	var val reflect.Value
	switch t := n.(type) {
	case ast.MapNode:
		val = reflect.New(anyMapType).Elem()
	case *ast.SequenceNode:
		val = reflect.New(anySliceType).Elem()
	case *ast.StringNode, *ast.LiteralNode:
		s, _ := scalarString(n)
		v.Set(reflect.ValueOf(s))
		return
	case *ast.IntegerNode:
		// goccy gives uint64 for non-negative integers: int64 is what
		// callers expect, uint64 only beyond it.
		if u, ok := t.Value.(uint64); ok && u <= math.MaxInt64 {
			v.Set(reflect.ValueOf(int64(u)))
		} else {
			v.Set(reflect.ValueOf(t.Value))
		}
		return
	case *ast.FloatNode:
		v.Set(reflect.ValueOf(t.Value))
		return
	case *ast.BoolNode:
		v.Set(reflect.ValueOf(t.Value))
		return
	case *ast.InfinityNode, *ast.NanNode:
		d.errorf(pos, path, "%s is not a JSON number", tokenText(n))
		return
	default:
		d.typeError(pos, path, "a JSON value (mapping, sequence, string, number, boolean or null)", n)
		return
	}
	d.decodeValue(n, val, path, pos, depth)
	v.Set(val)
}

func (d *decoder) decodeByteSize(n ast.Node, v reflect.Value, path string, pos Position) {
	if in, ok := n.(*ast.IntegerNode); ok {
		i, ok := in.Value.(int64)
		switch {
		case !ok:
			d.errorf(pos, path, "integer %s out of range", tokenText(in))
		case i < 0:
			d.errorf(pos, path, "negative size %d", i)
		default:
			v.SetInt(i)
		}
		return
	}
	s, ok := scalarString(n)
	if !ok {
		d.typeError(pos, path, `a size such as 1048576 or "1MiB"`, n)
		return
	}
	b, err := ParseByteSize(s)
	if err != nil {
		d.errorf(pos, path, "%v", err)
		return
	}
	v.SetInt(int64(b))
}

func (d *decoder) decodeDuration(n ast.Node, v reflect.Value, path string, pos Position) {
	s, ok := scalarString(n)
	if !ok {
		if in, isInt := n.(*ast.IntegerNode); isInt {
			if tokenText(in) == "0" {
				v.SetInt(0)
				return
			}
			d.errorf(pos, path, "invalid duration %s: a unit is required, e.g. \"%ss\"", tokenText(in), tokenText(in))
			return
		}
		d.typeError(pos, path, `a duration such as "200ms"`, n)
		return
	}
	dur, err := time.ParseDuration(s)
	switch {
	case err != nil:
		d.errorf(pos, path, "invalid duration %q", s)
	case dur < 0:
		d.errorf(pos, path, "negative duration %q", s)
	default:
		v.SetInt(int64(dur))
	}
}

// yamlFields maps the YAML names of t's fields to their indexes.
func yamlFields(t reflect.Type) map[string]int {
	fields := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		fields[name] = i
	}
	return fields
}

func (d *decoder) decodeStruct(n ast.Node, v reflect.Value, path string, pos Position, depth int) {
	entries, ok := d.entries(n, path, pos, depth)
	if !ok {
		return
	}
	fields := yamlFields(v.Type())
	for _, e := range entries {
		p := fieldPath(path, e.key)
		i, known := fields[e.key]
		if !known {
			d.errorf(e.keyPos, p, "unknown field %q%s", e.key, suggest(e.key, fields))
			continue
		}
		d.pos[p] = span{key: e.keyPos}
		d.decode(e.value, v.Field(i), p, depth+1)
	}
}

// suggest proposes the known field closest to a mistyped one.
func suggest(key string, fields map[string]int) string {
	best, bestDist := "", 3 // suggest only within an edit distance of 2
	for name := range fields {
		dist := editDistance(strings.ToLower(key), strings.ToLower(name))
		if dist < bestDist || (dist == bestDist && name < best) {
			best, bestDist = name, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// entry is one key/value pair of a mapping.
type entry struct {
	key    string
	keyPos Position
	value  ast.Node
}

// entries lists the pairs of a mapping, expanding merge keys ("<<: *base"):
// keys written in the mapping override merged ones, and earlier merged
// mappings override later ones.
func (d *decoder) entries(n ast.Node, path string, pos Position, depth int) ([]entry, bool) {
	mn, ok := n.(ast.MapNode)
	if !ok {
		d.typeError(pos, path, "a mapping", n)
		return nil, false
	}
	var own, merged []entry
	it := mn.MapRange()
	for it.Next() {
		kv := it.KeyValue()
		if kv == nil || isNil(kv.Key) {
			continue
		}
		if kv.Key.IsMergeKey() {
			merged = append(merged, d.mergeEntries(kv.Value, path, depth+1)...)
			continue
		}
		key, ok := d.key(kv.Key, path)
		if !ok {
			continue
		}
		own = append(own, entry{key: key, keyPos: d.position(kv.Key), value: kv.Value})
	}
	if len(merged) == 0 {
		return own, true
	}
	seen := make(map[string]bool, len(own)+len(merged))
	for _, e := range own {
		seen[e.key] = true
	}
	for _, e := range merged {
		if !seen[e.key] {
			seen[e.key] = true
			own = append(own, e)
		}
	}
	return own, true
}

// mergeEntries returns the pairs a merge key's value brings in: a mapping,
// or a sequence of mappings.
func (d *decoder) mergeEntries(n ast.Node, path string, depth int) []entry {
	pos := d.position(n)
	if !d.within(pos, path, depth) {
		return nil
	}
	n, ok := d.resolve(n, path)
	if !ok || n == nil {
		return nil
	}
	seq, isSeq := n.(*ast.SequenceNode)
	if !isSeq {
		es, _ := d.entries(n, path, pos, depth)
		return es
	}
	var out []entry
	for _, e := range seq.Values {
		epos := d.position(e)
		e, ok := d.resolve(e, path)
		if !ok || e == nil {
			continue
		}
		if _, isMap := e.(ast.MapNode); !isMap {
			d.typeError(epos, path, "a mapping to merge", e)
			continue
		}
		es, _ := d.entries(e, path, epos, depth+1)
		out = append(out, es...)
	}
	return out
}

// key returns the text of a mapping key, which must be a string.
func (d *decoder) key(k ast.MapKeyNode, path string) (string, bool) {
	var n ast.Node = k
	if mk, ok := k.(*ast.MappingKeyNode); ok { // "? key" syntax
		n = mk.Value
	}
	pos := d.position(k)
	n, ok := d.resolve(n, path)
	if !ok {
		return "", false
	}
	if n == nil {
		d.errorf(pos, path, "expected a string key, got null")
		return "", false
	}
	s, ok := scalarString(n)
	if !ok {
		d.errorf(pos, path, "expected a string key, got %s", describe(n))
		return "", false
	}
	return s, true
}
