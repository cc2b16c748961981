package pipelines

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// LoadPaths loads the pipelines of YAML files and directories (their *.yaml
// and *.yml files, not recursively) with the process environment and file
// system. It returns every problem of every file at once as a *LoadError.
// It is Loader{}.Config(paths...).Pipelines.
func LoadPaths(paths ...string) ([]*Pipeline, error) {
	cfg, err := Loader{}.Config(paths...)
	if err != nil {
		return nil, err
	}
	return cfg.Pipelines, nil
}

// Load loads the pipelines of one YAML stream; name is used in positions
// and relative ${file:} paths are resolved against its directory. It is
// Loader{}.Parse(name, data).Pipelines.
func Load(name string, data []byte) ([]*Pipeline, error) {
	cfg, err := Loader{}.Parse(name, data)
	if err != nil {
		return nil, err
	}
	return cfg.Pipelines, nil
}

// Loader loads configuration documents of every registered kind (see
// kinds): it parses, applies defaults, validates, resolves secrets and
// checks that no two documents of a kind share a name. The zero value uses
// the process environment and file system. A Loader holds no state; its
// methods may run concurrently.
type Loader struct {
	// LookupEnv resolves ${env:NAME} secrets; nil means os.LookupEnv.
	LookupEnv func(name string) (string, bool)
	// ReadFile reads ${file:PATH} secrets; nil means os.ReadFile.
	ReadFile func(path string) ([]byte, error)
	// CheckPattern validates a Bus's event patterns (rules and archive);
	// nil leaves them unchecked beyond being non-empty mappings. It is
	// given the pattern as decoded: map[string]any holding []any, string,
	// int64 (uint64 beyond it), float64, bool and nil. It returns nil or
	// the problems: each *PatternError found by unwrapping (errors.Join,
	// %w) is reported at the line of its node, any other error at the
	// pattern. It is a hook so that this package need not import the
	// pattern engine (sinks/bus/pattern); it may be called concurrently.
	CheckPattern func(raw any) error
}

// Config loads files and directories. A path given twice (or a file also
// found in a given directory) is loaded once. On failure the error is a
// *LoadError listing every problem, sorted by file, line and column.
func (l Loader) Config(paths ...string) (*Config, error) {
	st := loadState{checkPattern: l.CheckPattern}
	loaded := make(map[string]bool)
	for _, p := range paths {
		files, err := yamlFiles(p)
		if err != nil {
			st.errs = append(st.errs, fileError(p, err))
			continue
		}
		for _, f := range files {
			if loaded[filepath.Clean(f)] {
				continue
			}
			loaded[filepath.Clean(f)] = true
			data, err := os.ReadFile(f)
			if err != nil {
				st.errs = append(st.errs, fileError(f, err))
				continue
			}
			l.parse(f, data, &st)
		}
	}
	return st.finish()
}

// Parse loads one YAML stream of documents separated by "---".
func (l Loader) Parse(name string, data []byte) (*Config, error) {
	st := loadState{checkPattern: l.CheckPattern}
	l.parse(name, data, &st)
	return st.finish()
}

// yamlFiles expands a path: a file is itself, a directory is its *.yaml and
// *.yml files in name order (hidden files skipped).
func yamlFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if e.IsDir() || strings.HasPrefix(name, ".") || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		files = append(files, filepath.Join(path, name))
	}
	if len(files) == 0 {
		return nil, errors.New("no *.yaml or *.yml files in directory")
	}
	return files, nil
}

// fileError reports an unreadable file without repeating its name.
func fileError(name string, err error) *FieldError {
	msg := err.Error()
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		msg = pe.Err.Error()
	}
	return &FieldError{Pos: Position{File: name}, Msg: msg, Err: err}
}

// document is one decoded top-level document of a registered kind.
// Implementations are pointers to the Go types of the kinds.
type document interface {
	setPos(Position)
	// resolveFiles makes relative file paths relative to dir, the
	// directory of the YAML file.
	resolveFiles(dir string)
	applyDefaults()
	validate(v *validator)
	// id identifies the document among those of its kind; documents with
	// the same id are duplicates. "" means unnamed (already reported).
	id() string
	addTo(cfg *Config)
	// tenant is the tenant owning the document (after defaults); "" for a
	// Tenant.
	tenant() string
	// busRefs lists the buses the document routes to, which must exist in
	// its tenant (checkReferences).
	busRefs() []busRef
}

// kinds is the registry of document kinds, by `kind:` value. Adding a kind
// means a Go type implementing document, a slice in Config and an entry
// here; the loader does the rest.
func kinds() map[string]func() document {
	return map[string]func() document{
		KindPipeline: func() document { return new(Pipeline) },
		KindTenant:   func() document { return new(Tenant) },
		KindFunction: func() document { return new(Function) },
		KindBus:      func() document { return new(Bus) },
	}
}

// documentID is "tenant/name", tenant "default" when not given.
func documentID(m Metadata) string {
	tenant := m.Tenant
	if tenant == "" {
		tenant = DefaultTenant
	}
	return tenant + "/" + m.Name
}

func (p *Pipeline) setPos(pos Position) { p.Pos = pos }
func (p *Pipeline) applyDefaults()      { ApplyDefaults(p) }
func (p *Pipeline) addTo(cfg *Config)   { cfg.Pipelines = append(cfg.Pipelines, p) }
func (p *Pipeline) tenant() string      { return p.Metadata.Tenant }

func (p *Pipeline) busRefs() []busRef {
	return resultsBusRefs(nil, "spec.results", &p.Spec.Results)
}

func (p *Pipeline) id() string {
	if p.Metadata.Name == "" {
		return ""
	}
	return p.ID()
}

func (p *Pipeline) resolveFiles(dir string) {
	tls := []*TLSSpec{}
	if k := p.Spec.Source.Kafka; k != nil {
		tls = append(tls, k.TLS)
	}
	if r := p.Spec.Source.RabbitMQ; r != nil {
		tls = append(tls, r.TLS)
	}
	tls = append(tls, routesTLS(p.Spec.Results.OnSuccess, p.Spec.Results.OnFailure)...)
	resolveTLSFiles(dir, tls...)
}

// routesTLS returns the TLS settings of routes (some nil).
func routesTLS(lists ...[]RouteSpec) []*TLSSpec {
	var tls []*TLSSpec
	for _, routes := range lists {
		for _, r := range routes {
			if r.Kafka != nil {
				tls = append(tls, r.Kafka.TLS)
			}
			if r.RabbitMQ != nil {
				tls = append(tls, r.RabbitMQ.TLS)
			}
		}
	}
	return tls
}

// resolveTLSFiles makes the relative file paths of tls (nil skipped)
// relative to dir.
func resolveTLSFiles(dir string, tls ...*TLSSpec) {
	for _, t := range tls {
		if t == nil {
			continue
		}
		for _, f := range []*string{&t.CAFile, &t.CertFile, &t.KeyFile} {
			if *f != "" && !filepath.IsAbs(*f) {
				*f = filepath.Join(dir, *f)
			}
		}
	}
}

// loadState accumulates the documents and errors of one load.
type loadState struct {
	checkPattern func(raw any) error
	docs         []loadedDoc
	errs         []*FieldError
}

type loadedDoc struct {
	kind string
	doc  document
	pos  positions
	bad  map[string]bool // paths with errors, for checkReferences to skip
}

// parse decodes every document of one file into st.
func (l Loader) parse(name string, data []byte, st *loadState) {
	lookupEnv, readFile := l.LookupEnv, l.ReadFile
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	if readFile == nil {
		readFile = os.ReadFile
	}
	secrets := secretResolver{dir: filepath.Dir(name), lookupEnv: lookupEnv, readFile: readFile}
	for _, c := range splitDocuments(data) {
		f, err := parser.ParseBytes(c.text, 0)
		if err != nil {
			st.errs = append(st.errs, syntaxError(name, c.line-1, err))
			continue
		}
		for _, doc := range f.Docs {
			st.add(name, c.line-1, secrets, doc)
		}
	}
}

// add decodes, defaults and validates one parsed document.
func (st *loadState) add(name string, lineOffset int, secrets secretResolver, doc *ast.DocumentNode) {
	if doc == nil || isNil(doc.Body) {
		return // empty document, e.g. after a trailing "---"
	}
	d := &decoder{file: name, lineOffset: lineOffset, secrets: secrets, anchors: make(map[string]ast.Node), pos: make(positions)}
	// A document over maxNodes is partly decoded: its validation errors
	// would be noise.
	if ld, ok := d.document(doc.Body); ok && !d.tooLarge {
		ld.doc.resolveFiles(secrets.dir)
		ld.doc.applyDefaults()
		v := newValidator(d.pos, d.errs)
		v.checkPattern = st.checkPattern
		ld.doc.validate(v)
		for _, e := range v.errs {
			v.bad[e.Path] = true
		}
		ld.bad = v.bad
		d.errs = append(d.errs, v.errs...)
		st.docs = append(st.docs, ld)
	}
	st.errs = append(st.errs, d.errs...)
}

// syntaxError converts a parser error, which stops at the first problem of
// a document.
func syntaxError(name string, lineOffset int, err error) *FieldError {
	var ye yaml.Error
	if errors.As(err, &ye) {
		pos := Position{File: name}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			pos.Line, pos.Column = tk.Position.Line+lineOffset, tk.Position.Column
		}
		return &FieldError{Pos: pos, Msg: ye.GetMessage(), Err: err}
	}
	return &FieldError{Pos: Position{File: name}, Msg: err.Error(), Err: err}
}

// document decodes one document: its header picks the kind, then the body
// is decoded into the kind's Go type. It reports false when the kind is
// unknown or the document is empty.
func (d *decoder) document(body ast.Node) (loadedDoc, bool) {
	collectAnchors(body, d.anchors, 0)
	rootPos := d.position(body)
	d.pos[""] = span{value: rootPos}
	kind, ok := d.header(body, rootPos)
	if !ok {
		return loadedDoc{}, false
	}
	doc := kinds()[kind]()
	d.decode(body, reflect.ValueOf(doc).Elem(), "", 0)
	doc.setPos(rootPos)
	return loadedDoc{kind: kind, doc: doc, pos: d.pos}, true
}

// header checks apiVersion and returns kind, read before decoding as kind
// chooses the Go type. Problems the full decode would also find are left to
// it, so they are reported once.
func (d *decoder) header(body ast.Node, rootPos Position) (string, bool) {
	peek := &decoder{file: d.file, anchors: d.anchors, pos: make(positions)}
	root, ok := peek.resolve(body, "")
	if !ok || root == nil {
		d.errs = append(d.errs, peek.errs...)
		return "", false
	}
	if _, null := root.(*ast.NullNode); null {
		return "", false // a document holding only "null" or "~"
	}
	entries, ok := peek.entries(root, "", rootPos, 0)
	if !ok {
		d.errs = append(d.errs, peek.errs...)
		return "", false
	}
	var apiVersion, kind *entry
	for i, e := range entries {
		switch e.key {
		case "apiVersion":
			apiVersion = &entries[i]
		case "kind":
			kind = &entries[i]
		}
	}
	if apiVersion == nil {
		d.errorf(rootPos, "apiVersion", "missing required field")
	} else if s, ok := peek.stringValue(apiVersion.value); ok && s != APIVersion {
		d.errorf(d.position(apiVersion.value), "apiVersion", "unsupported apiVersion %q: want %q", s, APIVersion)
	}
	if kind == nil {
		d.errorf(rootPos, "kind", "missing required field")
		return "", false
	}
	s, ok := peek.stringValue(kind.value)
	if !ok {
		d.errorf(d.position(kind.value), "kind", "expected a string")
		return "", false
	}
	if _, known := kinds()[s]; !known {
		d.errorf(d.position(kind.value), "kind", "unknown kind %q: want %s", s, orList(slices.Sorted(maps.Keys(kinds()))))
		return "", false
	}
	return s, true
}

// stringValue returns the string n holds, if it is one.
func (d *decoder) stringValue(n ast.Node) (string, bool) {
	n, ok := d.resolve(n, "")
	if !ok || n == nil {
		return "", false
	}
	return scalarString(n)
}

// finish checks for duplicates and references across every file and
// builds the Config.
func (st *loadState) finish() (*Config, error) {
	seen := make(map[string]Position) // kind and id → where first defined
	for _, ld := range st.docs {
		id := ld.doc.id()
		if id == "" {
			continue // no name: already reported
		}
		key := ld.kind + "\x00" + id
		pos := ld.pos.value("metadata.name")
		if first, dup := seen[key]; dup {
			st.errs = append(st.errs, &FieldError{Pos: pos, Path: "metadata.name",
				Msg: fmt.Sprintf("duplicate %s %q: first defined at %s", ld.kind, id, first)})
			continue
		}
		seen[key] = pos
	}
	st.errs = append(st.errs, checkReferences(st.docs)...)
	if err := errorOrNil(st.errs); err != nil {
		return nil, err
	}
	cfg := &Config{}
	for _, ld := range st.docs {
		ld.doc.addTo(cfg)
	}
	return cfg, nil
}
