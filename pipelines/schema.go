package pipelines

//go:generate go run ./internal/gendocs -schema ../docs/schema/pipeline.schema.json -config-schema ../docs/schema/sluice.schema.json -reference ../docs/reference.md

import (
	"embed"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/invopop/jsonschema"
)

// SchemaID is the $id of the generated JSON Schema of Pipeline documents.
const SchemaID = "https://sluice.dev/schemas/v1/pipeline.schema.json"

// ConfigSchemaID is the $id of the generated JSON Schema of every document
// kind.
const ConfigSchemaID = "https://sluice.dev/schemas/v1/sluice.schema.json"

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
// Go types, their doc comments and the defaults. docs/schema/pipeline.schema.json
// is this output (go generate ./pipelines).
func Schema() ([]byte, error) {
	all, err := configSchema()
	if err != nil {
		return nil, err
	}
	s := &jsonschema.Schema{
		Version:     all.Version,
		ID:          SchemaID,
		Ref:         "#/$defs/" + KindPipeline,
		Definitions: reachable(all.Definitions, KindPipeline),
		Title:       "Sluice Pipeline",
		Description: "A " + APIVersion + " Pipeline document. Exactly one key of each source, route and filter.",
	}
	return marshalSchema(s)
}

// ConfigSchema returns the JSON Schema of a document of any kind (one of
// them, told apart by kind), for editors checking files that mix kinds.
// docs/schema/sluice.schema.json is this output.
func ConfigSchema() ([]byte, error) {
	s, err := configSchema()
	if err != nil {
		return nil, err
	}
	return marshalSchema(s)
}

func marshalSchema(s *jsonschema.Schema) ([]byte, error) {
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return append(out, '\n'), nil
}

// configSchema generates the definitions of every kind's types, and a root
// that is one of the kinds.
func configSchema() (*jsonschema.Schema, error) {
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
			case byteSizeType:
				return &jsonschema.Schema{OneOf: []*jsonschema.Schema{
					{Type: "integer", Minimum: "0"},
					{Type: "string", Pattern: byteSizeRE.String()},
				}}
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
	s := &jsonschema.Schema{
		Version:     jsonschema.Version,
		ID:          ConfigSchemaID,
		Definitions: jsonschema.Definitions{},
		Title:       "Sluice configuration",
		Description: "A " + APIVersion + " document of any kind, chosen by kind.",
	}
	for _, kind := range slices.Sorted(maps.Keys(kinds())) {
		ks := r.Reflect(kinds()[kind]())
		if ks.Ref != "#/$defs/"+kind {
			return nil, fmt.Errorf("schema: kind %s is Go type %s: name them alike", kind, ks.Ref)
		}
		maps.Copy(s.Definitions, ks.Definitions)
		s.OneOf = append(s.OneOf, &jsonschema.Schema{Ref: ks.Ref})
	}

	// "Exactly one of" constraints, which tags cannot express.
	one := uint64(1)
	for _, name := range []string{"SourceSpec", "RouteSpec", "FilterSpec", "TransformSpec"} {
		def, ok := s.Definitions[name]
		if !ok {
			return nil, fmt.Errorf("schema: no definition %s", name)
		}
		def.MinProperties, def.MaxProperties = &one, &one
	}
	// A target's one key is among others (delivery, transform, ...); a
	// storage may be empty (embedded).
	target := s.Definitions["BusTarget"]
	for _, k := range []string{"function", "sink", "bus"} {
		target.OneOf = append(target.OneOf, &jsonschema.Schema{Required: []string{k}})
	}
	s.Definitions["BusStorage"].MaxProperties = &one
	// Patterns come from the validator's regexps (and cannot be tags: the
	// tag syntax splits at commas).
	for _, p := range []struct {
		def, prop string
		items     bool
		re        *regexp.Regexp
	}{
		{"Metadata", "name", false, dnsLabelRE},
		{"Metadata", "tenant", false, dnsLabelRE},
		{"TenantMetadata", "name", false, dnsLabelRE},
		{"TenantSpec", "pool", false, dnsLabelRE},
		{"BusRule", "name", false, dnsLabelRE},
		{"BusRoute", "name", false, dnsLabelRE},
		{"KafkaSource", "topics", true, kafkaTopicRE},
		{"KafkaSource", "version", false, kafkaVersionRE},
		{"KafkaSink", "topic", false, kafkaTopicRE},
		{"KafkaSink", "version", false, kafkaVersionRE},
		{"BusKafkaStorage", "topic", false, kafkaTopicRE},
		{"BusKafkaStorage", "version", false, kafkaVersionRE},
	} {
		def, ok := s.Definitions[p.def]
		if !ok {
			return nil, fmt.Errorf("schema: no definition %s", p.def)
		}
		prop, ok := def.Properties.Get(p.prop)
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
	return s, nil
}

// defRefRE finds the references between definitions.
var defRefRE = regexp.MustCompile(`"\$ref":"#/\$defs/([^"]+)"`)

// reachable returns the definitions root refers to, directly or not.
func reachable(defs jsonschema.Definitions, root string) jsonschema.Definitions {
	out := jsonschema.Definitions{}
	todo := []string{root}
	for len(todo) > 0 {
		name := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		def, ok := defs[name]
		if _, done := out[name]; done || !ok {
			continue
		}
		out[name] = def
		b, _ := json.Marshal(def) // a Schema always marshals
		for _, m := range defRefRE.FindAllSubmatch(b, -1) {
			todo = append(todo, string(m[1]))
		}
	}
	return out
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

// documentedDefaults returns, per Go type name, the defaults the loader
// gives to optional scalar fields, in field order. They are found by
// applying them to sample documents where every optional part is present
// but empty, so the documentation follows the code. Defaults that depend on
// other fields (a Kafka sink's brokers) are described in doc comments and
// left out here.
func documentedDefaults() map[string][]fieldDefault {
	samples := []document{
		&Pipeline{Spec: PipelineSpec{
			Source:   SourceSpec{Kafka: &KafkaSource{}},
			Function: &FunctionSpec{},
			Results: ResultsSpec{OnSuccess: []RouteSpec{
				{Kafka: &KafkaSink{}}, {Webhook: &WebhookSink{}}, {Log: &LogSink{}},
			}},
		}},
		&Pipeline{Spec: PipelineSpec{Function: &FunctionSpec{Mode: ModeBatch}}}, // BatchSpec
		&Pipeline{Spec: PipelineSpec{ // RocketMQ source and sink
			Source:  SourceSpec{RocketMQ: &RocketMQSource{}},
			Results: ResultsSpec{OnSuccess: []RouteSpec{{RocketMQ: &RocketMQSink{}}}},
		}},
		&Tenant{},
		&Function{},
		&Bus{Spec: BusSpec{
			Storage: BusStorage{Kafka: &BusKafkaStorage{}},
			Archive: &BusArchive{},
		}},
	}
	out := make(map[string][]fieldDefault)
	for _, d := range samples {
		d.applyDefaults()
		collectDefaults(reflect.ValueOf(d).Elem(), out)
	}
	// Named after the bus, the bus's tenant and name.
	out["BusKafkaStorage"] = slices.DeleteFunc(out["BusKafkaStorage"], func(f fieldDefault) bool {
		return f.name == "topic" || f.name == "group"
	})
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
		case f.Type == byteSizeType:
			fields = append(fields, fieldDefault{name, fv.Interface().(ByteSize).String()})
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
