package pipelines

//go:generate go run ./internal/gendocs -schema ../docs/schema/pipeline.schema.json -reference ../docs/reference.md

import (
	"embed"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"reflect"
	"regexp"
	"strings"

	"github.com/invopop/jsonschema"
)

// SchemaID is the $id of the generated JSON Schema.
const SchemaID = "https://sluice.dev/schemas/v1/pipeline.schema.json"

// durationPattern is the JSON Schema pattern of a Duration: a Go duration
// string without sign.
const durationPattern = `^(0|([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`

// typesGo is the source of the document types: its doc comments are the
// descriptions in the schema and the reference, so they live in one place.
// Types live in types*.go files (types_rabbitmq.go, ...), all embedded here.
//
//go:embed types*.go
var typesGo embed.FS

// Schema returns the JSON Schema of a Pipeline document, generated from the
// Go types, their doc comments and ApplyDefaults. docs/schema/pipeline.schema.json
// is this output (go generate ./pipelines).
func Schema() ([]byte, error) {
	docs, err := typeDocs()
	if err != nil {
		return nil, err
	}
	r := &jsonschema.Reflector{
		FieldNameTag: "yaml",
		Mapper: func(t reflect.Type) *jsonschema.Schema {
			switch t {
			case durationType:
				return &jsonschema.Schema{Type: "string", Pattern: durationPattern}
			case secretType:
				return &jsonschema.Schema{Type: "string"}
			}
			return nil
		},
		LookupComment: func(t reflect.Type, field string) string {
			td := docs[t.Name()]
			if field == "" {
				return td.doc
			}
			return td.fields[field]
		},
	}
	s := r.Reflect(&Pipeline{})
	s.ID = SchemaID
	s.Title = "Sluice Pipeline"
	s.Description = "A " + APIVersion + " Pipeline document. Exactly one key of each source, route and filter."

	// "Exactly one of" constraints, which tags cannot express.
	one := uint64(1)
	for _, name := range []string{"SourceSpec", "RouteSpec", "FilterSpec"} {
		def, ok := s.Definitions[name]
		if !ok {
			return nil, fmt.Errorf("schema: no definition %s", name)
		}
		def.MinProperties, def.MaxProperties = &one, &one
	}
	// Patterns come from the validator's regexps (and cannot be tags: the
	// tag syntax splits at commas).
	for _, p := range []struct {
		def, prop string
		items     bool
		re        *regexp.Regexp
	}{
		{"Metadata", "name", false, dnsLabelRE},
		{"Metadata", "tenant", false, dnsLabelRE},
		{"KafkaSource", "topics", true, kafkaTopicRE},
		{"KafkaSource", "version", false, kafkaVersionRE},
		{"KafkaSink", "topic", false, kafkaTopicRE},
		{"KafkaSink", "version", false, kafkaVersionRE},
	} {
		prop, ok := s.Definitions[p.def].Properties.Get(p.prop)
		if !ok {
			return nil, fmt.Errorf("schema: no property %s.%s", p.def, p.prop)
		}
		if p.items {
			prop = prop.Items
		}
		prop.Pattern = p.re.String()
	}
	for typ, fields := range documentedDefaults() {
		def, ok := s.Definitions[typ]
		if !ok {
			return nil, fmt.Errorf("schema: no definition %s", typ)
		}
		for _, f := range fields {
			prop, ok := def.Properties.Get(f.name)
			if !ok {
				return nil, fmt.Errorf("schema: no property %s.%s", typ, f.name)
			}
			prop.Default = f.value
		}
	}
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return append(out, '\n'), nil
}

// typeDoc holds the doc comments of a type and of its fields (by Go name).
type typeDoc struct {
	doc    string
	fields map[string]string
}

// typeDocs parses the doc comments of typesGo, joined into single lines.
func typeDocs() (map[string]typeDoc, error) {
	names, err := fs.Glob(typesGo, "types*.go")
	if err != nil {
		return nil, err
	}
	out := make(map[string]typeDoc)
	for _, name := range names {
		src, err := typesGo.ReadFile(name)
		if err != nil {
			return nil, err
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ParseComments)
		if err != nil {
			return nil, fmt.Errorf("parsing embedded %s: %w", name, err)
		}
		collectTypeDocs(f, out)
	}
	return out, nil
}

// collectTypeDocs adds the doc comments of f's types to out.
func collectTypeDocs(f *ast.File, out map[string]typeDoc) {
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, spec := range gd.Specs {
			ts := spec.(*ast.TypeSpec)
			doc := ts.Doc.Text()
			if doc == "" {
				doc = gd.Doc.Text()
			}
			td := typeDoc{doc: oneLine(doc), fields: make(map[string]string)}
			if st, ok := ts.Type.(*ast.StructType); ok {
				for _, field := range st.Fields.List {
					text := field.Doc.Text()
					if text == "" {
						text = field.Comment.Text()
					}
					for _, n := range field.Names {
						td.fields[n.Name] = oneLine(text)
					}
				}
			}
			out[ts.Name.Name] = td
		}
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// fieldDefault is the default of one field, by YAML name.
type fieldDefault struct {
	name  string
	value any // string or int, as written in YAML
}

// documentedDefaults returns, per Go type name, the defaults ApplyDefaults
// gives to optional scalar fields, in field order. They are found by
// applying it to sample pipelines where every optional part is present but
// empty, so the documentation follows the code. Defaults that depend on
// other fields (a Kafka sink's brokers) are described in doc comments.
func documentedDefaults() map[string][]fieldDefault {
	samples := []*Pipeline{
		{Spec: PipelineSpec{
			Source:   SourceSpec{Kafka: &KafkaSource{}},
			Function: &FunctionSpec{},
			Results: ResultsSpec{OnSuccess: []RouteSpec{
				{Kafka: &KafkaSink{}}, {Webhook: &WebhookSink{}}, {Log: &LogSink{}},
			}},
		}},
		{Spec: PipelineSpec{Function: &FunctionSpec{Mode: ModeBatch}}}, // BatchSpec
	}
	out := make(map[string][]fieldDefault)
	for _, p := range samples {
		ApplyDefaults(p)
		collectDefaults(reflect.ValueOf(p).Elem(), out)
	}
	return out
}

// collectDefaults records the non-zero optional scalar fields of the first
// value of each struct type met in v.
func collectDefaults(v reflect.Value, out map[string][]fieldDefault) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			collectDefaults(v.Elem(), out)
		}
		return
	case reflect.Slice:
		for i := range v.Len() {
			collectDefaults(v.Index(i), out)
		}
		return
	case reflect.Struct:
	default:
		return
	}
	t := v.Type()
	if t == secretType {
		return
	}
	_, seen := out[t.Name()]
	var fields []fieldDefault
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if seen || fv.IsZero() || !strings.Contains(opts, "omitempty") {
			collectDefaults(fv, out)
			continue
		}
		switch {
		case f.Type == durationType:
			fields = append(fields, fieldDefault{name, fv.Interface().(Duration).String()})
		case f.Type.Kind() == reflect.String:
			fields = append(fields, fieldDefault{name, fv.String()})
		case f.Type.Kind() == reflect.Int:
			fields = append(fields, fieldDefault{name, int(fv.Int())})
		default:
			collectDefaults(fv, out)
		}
	}
	if !seen {
		out[t.Name()] = fields
	}
}
